"""``workshop end`` / ``workshop tick``: stop the cohort's servers, export each participant's
home to ``exports/<user>.tar.gz`` (read as the participant, see
:mod:`cscale_extensions.workshop.export`), disable their accounts (embedded provider)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from cscale_extensions.localstack.oidc import accounts
from cscale_extensions.workshop.export import export_as_owner
from cscale_extensions.workshop.hubapi import HubAPI
from cscale_extensions.workshop.model import Workshop, now, save


def export_home(home: Path, archive: Path, exclude: list[str]) -> int:
    """Write ``home`` as ``archive`` (tar.gz, 0600) without ``exclude``; return the file count.

    Root only creates the archive (in the root-only exports directory); the home is read by
    a process running as its owner (:mod:`cscale_extensions.workshop.export`)."""
    tmp = archive.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            count = export_as_owner(home, fd, exclude)
        finally:
            os.close(fd)
        os.replace(tmp, archive)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count


def end_workshop(
    cfg: dict[str, Any],
    directory: Path,
    ws: Workshop,
    *,
    api: HubAPI | None,
    homes: Path,
    accounts_file: Path | None,
    log=print,
) -> dict[str, dict[str, Any]]:
    """End ``ws`` now; returns per user what happened. Safe to run again (it redoes the exports
    and disables what is left) when a step failed."""
    report: dict[str, dict[str, Any]] = {u: {} for u in ws.users}
    if api is not None:
        running = []
        for u in ws.users:
            model = api.user(u)
            if model and model.get("servers", {}).get(""):
                api.stop(u)
                running.append(u)
        left = api.wait_stopped(running, timeout=float(cfg["spawner"]["start_timeout"]))
        for u in ws.users:
            report[u]["server"] = (
                "still running" if u in left else ("stopped" if u in running else "none")
            )
    exports = directory / "exports"
    exports.mkdir(mode=0o700, exist_ok=True)
    for u in ws.users:
        home = homes / u
        if home.is_dir():
            try:
                n = export_home(home, exports / f"{u}.tar.gz", cfg["workshop"]["export_exclude"])
                report[u]["export"] = f"exports/{u}.tar.gz ({n} files)"
            except OSError as exc:
                report[u]["export"] = f"FAILED: {exc}"
        else:
            report[u]["export"] = "no home (never started a server)"
        if accounts_file is not None and ws.provider == "embedded":
            try:
                accounts.disable_account(accounts_file, u)
                report[u]["account"] = "disabled"
            except accounts.AccountError as exc:
                report[u]["account"] = f"FAILED: {exc}"
    ws.end_report = report
    if not any(
        "FAILED" in str(v) or v == "still running" for r in report.values() for v in r.values()
    ):
        ws.ended = now().isoformat(timespec="seconds")
    save(directory, ws)
    for u, r in report.items():
        log(f"  {u}: " + ", ".join(f"{k} {v}" for k, v in r.items()))
    return report
