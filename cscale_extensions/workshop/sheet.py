"""The participants' login sheet: a CSV and a printable HTML page (one slip per account)."""

from __future__ import annotations

import csv
import io
import os
from html import escape
from pathlib import Path

from cscale_extensions.workshop.model import Workshop


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", newline="") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


def write(
    directory: Path, ws: Workshop, passwords: dict[str, str], hub_url: str
) -> tuple[Path, Path]:
    """Write ``accounts.csv`` and ``accounts.html`` (both 0600: they hold passwords)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["username", "password", "hub_url", "workshop", "start", "end"])
    for user in ws.users:
        w.writerow([user, passwords.get(user, ""), hub_url, ws.name, ws.start or "", ws.end or ""])
    csv_path = directory / "accounts.csv"
    _write_private(csv_path, buf.getvalue())

    when = " – ".join(t for t in (ws.start, ws.end) if t)
    slips = "\n".join(
        f'<div class="slip"><h2>{escape(ws.name)}</h2>'
        f"<p>Open <b>{escape(hub_url)}</b> and sign in with</p>"
        f"<table><tr><th>Username</th><td><code>{escape(u)}</code></td></tr>"
        f"<tr><th>Password</th><td><code>{escape(passwords.get(u, ''))}</code></td></tr></table>"
        f'<p class="small">{escape(when)}. Your copy of the materials is in the folder '
        f"<code>{escape(ws.name)}</code> of your home; the account is closed at the end.</p></div>"
        for u in ws.users
    )
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(ws.name)} — accounts</title>
<style>
body {{ font-family: sans-serif; margin: 1cm; }}
.slip {{ border: 1px dashed #888; padding: .4cm .6cm; margin-bottom: .5cm; page-break-inside: avoid; }}
h2 {{ margin: 0 0 .2cm 0; font-size: 14pt; }}
th {{ text-align: left; padding-right: 1em; }}
code {{ font-size: 13pt; }}
.small {{ font-size: 9pt; color: #444; }}
</style></head><body>
{slips}
</body></html>
"""
    html_path = directory / "accounts.html"
    _write_private(html_path, html)
    return csv_path, html_path
