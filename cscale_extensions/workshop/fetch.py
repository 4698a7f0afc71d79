"""Init-container entry point: fetch a workshop's materials from the hub into the home.

``python -m cscale_extensions.workshop.fetch URL TARGET`` runs before a workshop participant's
server on Kubernetes (added by :func:`cscale_extensions.workshop.hub.set_materials_init_container`),
as the participant, with their home mounted and their server's hub token in
``JUPYTERHUB_API_TOKEN``. It downloads the materials (a gzipped tar) from ``URL`` and unpacks
them at ``TARGET`` unless that already exists: the participant's work is never overwritten.

It never fails the pod: a participant is better off with a running server and a message in
the init container's log than with no server. Whatever went wrong is printed (with the hub's
own message), and the next start of the server tries again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from cscale_extensions.workshop.materials import unpack_for_user
from cscale_extensions.workshop.model import WorkshopError

PREFIX = "workshop-materials:"


def _hub_message(exc: urllib.error.HTTPError) -> str:
    """The ``message`` of a JupyterHub JSON error, else the start of the body."""
    try:
        body = exc.read(4096).decode("utf-8", "replace")
    except OSError:
        return exc.reason or ""
    try:
        return str(json.loads(body).get("message") or exc.reason)
    except (ValueError, AttributeError):
        return body.strip()[:200] or str(exc.reason)


def fetch(url: str, target: Path, token: str, attempts: int = 3, timeout: float = 60) -> str:
    """Fetch and unpack; returns the line to print (what happened)."""
    if os.path.lexists(target):
        return f"{PREFIX} {target} exists: kept as it is"
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    last = ""
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                copied = unpack_for_user(response, target)
            if not copied:
                return f"{PREFIX} {target} appeared meanwhile: kept as it is"
            files = sum(len(f) for _, _, f in os.walk(target))
            return f"{PREFIX} {files} files copied into {target}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {_hub_message(exc)}"
            if exc.code < 500:  # the hub said no: asking again will not change that
                break
        except WorkshopError as exc:
            last = str(exc)
            break
        except (urllib.error.URLError, OSError, EOFError) as exc:
            last = f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}"
        if attempt < attempts:
            time.sleep(min(2**attempt, 10))
    return (
        f"{PREFIX} not copied ({last}); the server starts without them and the next start "
        "tries again"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the hub's materials address of the workshop")
    parser.add_argument("target", type=Path, help="the participant's copy (in the home)")
    parser.add_argument("--attempts", type=int, default=3, help="tries when the hub is unreachable")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per try")
    args = parser.parse_args(argv)
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    print(fetch(args.url, args.target, token, args.attempts, args.timeout), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
