"""Copy the workflow template notebooks into a user's home without ever clobbering their edits.

A manifest (``.cscale-sync.json`` in the target directory) records the hash of each file as we
last wrote it. At every sync a file is

- created when missing (also when the user deleted it: deleting restores the newest version),
- updated when the user's copy still equals what we last wrote and the template changed,
- left alone when the user changed it (their edit always wins; the newer template is then
  written beside it as ``<name>.new<suffix>`` so nothing is lost either way).

The target belongs to the user, who may plant anything in it. A sync therefore runs *as the
user* (the hub starts ``python -I -m cscale_extensions.notebooksync SRC DEST`` with the user's
uid and groups, see :mod:`cscale_extensions.hub.spawner`; on Kubernetes an init container does
the same), and it never follows a symbolic link inside the target either: every file and
directory is opened relative to a directory descriptor with ``O_NOFOLLOW``, temporary files are
created exclusively, and a link (or a FIFO, device …) where a notebook or the manifest should
be is left alone and listed in :attr:`SyncReport.refused`. A target that is itself a link is
refused as a whole (:class:`SyncRefused`).

It is a top-level module with standard-library imports only, on purpose: every server start
runs it in a fresh Python, and as ``cscale_extensions.hub.notebook_sync`` it imported the hub
package first (authenticator, settings schema): ~4 CPU-seconds per start, as much as the
server's own start.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

MANIFEST = ".cscale-sync.json"
SKIP_DIRS = {".ipynb_checkpoints", "__pycache__", ".git"}
MAX_MANIFEST = 4 * 2**20  # a manifest larger than this is not ours: ignored

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class SyncRefused(OSError):
    """The target directory cannot be synchronised safely (e.g. it is a symbolic link)."""


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    #: paths inside the target that are links or not regular files/directories: not touched
    refused: list[str] = field(default_factory=list)


class _NotRegular(OSError):
    """A path in the target is a link, FIFO, device … where a file or directory belongs."""


def _raise(exc: OSError) -> None:
    raise exc


def _sources(src: Path) -> Iterator[tuple[Path, str]]:
    """The template files (an unreadable template directory is an error, not "no files")."""
    for root, dirs, files in os.walk(src, onerror=_raise):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            path = Path(root, name)
            yield path, path.relative_to(src).as_posix()


def _read_at(dir_fd: int, name: str, limit: int | None = None) -> bytes | None:
    """The content of the regular file ``name`` in ``dir_fd`` (None when missing); a link or
    any other kind of file is :class:`_NotRegular`."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if _is_link_at(dir_fd, name):
            raise _NotRegular(f"{name} is a symbolic link") from exc
        raise
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _NotRegular(f"{name} is not a regular file")
        return f.read() if limit is None else f.read(limit + 1)


def _is_link_at(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _write_at(dir_fd: int, name: str, data: bytes) -> None:
    """Replace ``name`` in ``dir_fd`` by ``data`` (mode 0644) through an exclusively created
    temporary file: never writes through a link someone put at either name."""
    tmp = f".{name}.cscale-tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dir_fd)  # a leftover (or a planted link): the entry goes, not its target
    fd = os.open(tmp, _CREATE_FLAGS, 0o644, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), 0o644)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def _open_dir_at(dir_fd: int, name: str) -> int:
    """Open (creating it 0755 if missing) the directory ``name`` in ``dir_fd``, not following
    a link."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=dir_fd)
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise _NotRegular(f"{name} is a symbolic link or not a directory") from exc


def _open_target(dest: Path) -> int:
    """A descriptor of ``dest`` (created with its parents if missing); refused if it is a link."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    parent = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _open_dir_at(parent, dest.name)
    except _NotRegular:
        raise SyncRefused(
            f"{dest} is a symbolic link or not a directory; the workflow notebooks are not "
            "copied until it is a plain directory (or absent)"
        ) from None
    finally:
        os.close(parent)


class _Dirs:
    """Directory descriptors below the target, opened (and created) on demand, no links."""

    def __init__(self, root_fd: int):
        self.fds: dict[str, int] = {"": root_fd}

    def get(self, rel_dir: str) -> int:
        if rel_dir in self.fds:
            return self.fds[rel_dir]
        parent, _, name = rel_dir.rpartition("/")
        fd = _open_dir_at(self.get(parent), name)
        self.fds[rel_dir] = fd
        return fd

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)


def _load_manifest(dir_fd: int, report: SyncReport) -> dict[str, str]:
    try:
        raw = _read_at(dir_fd, MANIFEST, MAX_MANIFEST)
        doc = json.loads(raw) if raw is not None and len(raw) <= MAX_MANIFEST else {}
    except _NotRegular:
        report.refused.append(MANIFEST)
        return {}
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {k: v for k, v in doc.items() if isinstance(k, str) and isinstance(v, str)}


def sync(src: Path, dest: Path) -> SyncReport:
    """Bring ``dest`` up to date with ``src`` (see module doc) with the caller's rights."""
    src, dest = Path(src), Path(dest)
    report = SyncReport()
    if not src.is_dir():
        return report
    dirs = _Dirs(_open_target(dest))
    try:
        root = dirs.get("")
        manifest = _load_manifest(root, report)
        for source, rel in _sources(src):
            data = source.read_bytes()
            new = hashlib.sha256(data).hexdigest()
            rel_dir, _, name = rel.rpartition("/")
            try:
                d = dirs.get(rel_dir)
                current = _read_at(d, name)
                if current is None:
                    _write_at(d, name, data)
                    report.created.append(rel)
                elif (digest := hashlib.sha256(current).hexdigest()) == new:
                    report.unchanged.append(rel)
                elif digest == manifest.get(rel):
                    _write_at(d, name, data)
                    report.updated.append(rel)
                else:
                    report.kept.append(rel)
                    if manifest.get(rel) != new:
                        plain = PurePosixPath(name)
                        _write_at(d, f"{plain.stem}.new{plain.suffix}", data)
            except _NotRegular:
                report.refused.append(rel)
                continue
            # for a kept file this records the template last offered beside it
            manifest[rel] = new
        # replaces a link planted at the manifest's name, never writes through it
        _write_at(root, MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    finally:
        dirs.close()
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m cscale_extensions.notebooksync SRC DEST``: sync, print the report as JSON
    (``{"error": ...}`` and exit status 1 when the sync could not be done)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="directory of the template notebooks")
    parser.add_argument("dest", type=Path, help="target directory inside the home")
    args = parser.parse_args(argv)
    try:
        report = sync(args.src, args.dest)
    except OSError as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    print(json.dumps(asdict(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
