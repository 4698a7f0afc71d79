"""Archive a participant's home for ``workshop end``, with the participant's own rights.

``workshop end`` runs as root, and a home is the participant's: while root walks it, any
process of theirs still running (a detached job, a Dask worker) could swap a directory for a
link to ``/root`` and have root read it into the archive. So root never reads a home: it opens
the archive (in the root-only ``exports/``) and runs ``python -I -m
cscale_extensions.workshop.export HOME [--exclude PATH]…`` as the home's owner, which writes
the gzipped tar to its stdout and a JSON summary to stderr. Links are archived as links, never
followed; what the participant cannot read themselves is left out and counted.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import IO


def write_archive(home: Path, out: IO[bytes], exclude: list[str]) -> tuple[int, int]:
    """Stream ``home`` as a gzipped tar (names start with the home's name) to ``out``;
    returns (files archived, entries left out because they could not be read)."""
    skip = [str(home / e) for e in exclude]
    files = skipped = 0

    def excluded(path: str) -> bool:
        return any(path == s or path.startswith(s + "/") for s in skip)

    def unreadable(_exc: OSError) -> None:
        nonlocal skipped
        skipped += 1

    with tarfile.open(fileobj=out, mode="w|gz") as tar:
        for dirpath, dirnames, filenames in os.walk(home, onerror=unreadable):
            dirnames[:] = sorted(d for d in dirnames if not excluded(os.path.join(dirpath, d)))
            entries = [dirpath] + [os.path.join(dirpath, f) for f in sorted(filenames)]
            for path in entries:
                if path != dirpath and excluded(path):
                    continue
                arcname = os.path.join(home.name, os.path.relpath(path, home))
                try:
                    info = tar.gettarinfo(path, arcname=os.path.normpath(arcname))
                    if info.isreg():
                        with open(path, "rb", opener=_nofollow) as f:
                            tar.addfile(info, f)
                        files += 1
                    else:
                        tar.addfile(info)  # directories, links (as links), FIFOs …
                except OSError:
                    skipped += 1
    return files, skipped


def _nofollow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK)


class ExportError(OSError):
    """The export of a home failed; the message says why."""


def export_as_owner(home: Path, out_fd: int, exclude: list[str], timeout: float = 3600) -> int:
    """Write the archive of ``home`` to ``out_fd``, produced by a subprocess running as the
    home's owner when that is not the caller; returns the number of files archived."""
    st = os.lstat(home)
    if not stat.S_ISDIR(st.st_mode):
        raise ExportError(f"{home} is not a directory (a link?); not archived")
    cmd = [sys.executable, "-I", "-m", "cscale_extensions.workshop.export", str(home)]
    for e in exclude:
        cmd += ["--exclude", e]
    kwargs: dict = {}
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(home)}
    if st.st_uid != os.geteuid():
        try:
            entry = pwd.getpwuid(st.st_uid)
            groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
        except KeyError:
            groups = []
        kwargs = {"user": st.st_uid, "group": st.st_gid, "extra_groups": groups}
    try:
        r = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, stdout=out_fd, stderr=subprocess.PIPE, cwd="/",
            env=env, timeout=timeout, check=False, **kwargs,
        )
    except subprocess.TimeoutExpired:
        raise ExportError(f"archiving {home} took more than {timeout:g}s") from None
    lines = r.stderr.decode(errors="replace").strip().splitlines()
    try:
        summary = json.loads(lines[-1])
        if r.returncode == 0:
            return int(summary["files"])
        raise ExportError(str(summary.get("error", summary)))
    except (ValueError, IndexError, KeyError, TypeError, AttributeError):
        raise ExportError(f"archiving {home}: exit status {r.returncode}: "
                          + " | ".join(lines[-3:])) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("home", type=Path)
    parser.add_argument("--exclude", action="append", default=[])
    args = parser.parse_args(argv)
    try:
        files, skipped = write_archive(args.home, sys.stdout.buffer, args.exclude)
    except OSError as exc:
        print(json.dumps({"error": str(exc)}), file=sys.stderr)
        return 1
    print(json.dumps({"files": files, "unreadable": skipped}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
