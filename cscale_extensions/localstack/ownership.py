"""Owner, group and mode of the paths no user may ever get: a platform-wide invariant.

Root processes of the platform must never hand a user a path outside that user's own (a bug
of that kind made every Dask cluster start chown ``/`` to its user). :func:`snapshot` records
owner, group and mode of ``/``, ``/etc`` and the data directory's private parts;
:func:`changes` says what differs later. :class:`cscale_testing.LocalStack` records
them when a stack starts and compares when it stops; the test fixtures fail on a change.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

Entry = tuple[int, int, str] | None  # uid, gid, "drwx…"-style mode; None: missing

SYSTEM_PATHS = (Path("/"), Path("/etc"))
PRIVATE_PARTS = ("secrets", "oidc", "hub")


def platform_paths(data_dir: Path | None = None) -> list[Path]:
    """``/``, ``/etc`` and, given the platform's data dir, it and its private directories."""
    paths = list(SYSTEM_PATHS)
    if data_dir is not None:
        paths.append(Path(data_dir))
        paths.extend(Path(data_dir, p) for p in PRIVATE_PARTS)
    return paths


def _entry(path: Path) -> Entry:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_uid, st.st_gid, stat.filemode(st.st_mode)


def snapshot(paths: Iterable[Path]) -> dict[str, Entry]:
    return {str(p): _entry(Path(p)) for p in paths}


def changes(before: dict[str, Entry], after: dict[str, Entry] | None = None) -> list[str]:
    """One line per path whose owner, group or mode differs (a path that appeared or went
    away is not a change of ownership: not reported)."""
    after = after if after is not None else snapshot(Path(p) for p in before)
    out = []
    for path, was in before.items():
        now = after.get(path)
        if was is not None and now is not None and was != now:
            out.append(f"{path}: uid:gid {was[0]}:{was[1]} mode {was[2]} -> "
                       f"uid:gid {now[0]}:{now[1]} mode {now[2]}")
    return out
