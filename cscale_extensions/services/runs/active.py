"""Markers of the headless runs executing in a user's server, for the idle culler.

An executor is a detached process (its own session, its own kernel), invisible to Jupyter
Server's kernel manager. While it runs it keeps an empty marker file
``<home>/runs/.active/<run id>.<pid>``; :func:`running` lists the markers whose process still
lives, so the server's activity extension can count a running run as activity even when
the runs service is not polling (restarting, frozen, unreachable).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

ACTIVE_DIR = Path("runs") / ".active"


def _alive(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and b"cscale_extensions.services.runs" in cmd


@contextlib.contextmanager
def marked(root: Path, run_id: str) -> Iterator[Path | None]:
    """Keep this process's marker for ``run_id`` while the block runs (None if not writable)."""
    path = root / ACTIVE_DIR / f"{run_id}.{os.getpid()}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError:
        path = None  # e.g. a full disk: the run goes on, only the culler cannot see it
    try:
        yield path
    finally:
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()


def running(root: Path) -> list[str]:
    """Ids of the runs whose executor is alive in this home; removes stale markers."""
    found = []
    try:
        entries = list(os.scandir(root / ACTIVE_DIR))
    except OSError:
        return found
    for entry in entries:
        run_id, _, pid = entry.name.rpartition(".")
        if not (run_id and pid.isdigit()):
            continue
        if _alive(int(pid)):
            found.append(run_id)
        else:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
    return found
