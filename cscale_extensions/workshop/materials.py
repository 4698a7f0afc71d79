"""Workshop materials: one read-only copy for everyone, one writable copy per participant.

The source is a local directory or a local git repository (a work tree or a bare repo; its
checked-out/HEAD commit is copied, without ``.git``). Remote git URLs are refused: fetch
them first (``git clone URL dir``) and pass the directory.

Local servers get their copy straight from the hub's disk (:func:`copy_for_user`). Pods on
Kubernetes cannot see it: the hub hands the materials out as a gzipped tar (:func:`pack`) that an
init container unpacks into the home (:func:`unpack_for_user`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import IO

from cscale_extensions.workshop.model import WorkshopError

IGNORE = shutil.ignore_patterns(".git", "__pycache__", ".ipynb_checkpoints")


def _is_git(path: Path) -> bool:
    return (path / ".git").exists() or ((path / "HEAD").is_file() and (path / "objects").is_dir())


def install(source: str, target: Path) -> str:
    """Copy ``source`` to ``target`` (replacing it) with modes 0755/0644; returns a description."""
    if "://" in source or source.startswith("git@"):
        raise WorkshopError(
            f"{source}: only local paths or local git repositories are supported; "
            "clone it first (git clone URL DIR) and pass DIR"
        )
    src = Path(source).expanduser().resolve()
    if not src.is_dir():
        raise WorkshopError(f"materials {source}: not a directory")
    tmp = Path(tempfile.mkdtemp(prefix=".materials-", dir=target.parent))
    try:
        staged = tmp / "m"
        if _is_git(src):
            r = subprocess.run(
                ["git", "clone", "--quiet", "--depth", "1", f"file://{src}", str(staged)],
                capture_output=True,
                text=True,
                check=False,
            )
            if r.returncode:
                raise WorkshopError(f"cannot clone {src}: {r.stderr.strip()}")
            rev = subprocess.run(
                ["git", "-C", str(staged), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            shutil.rmtree(staged / ".git")
            what = f"git {src} @ {rev}"
        else:
            shutil.copytree(src, staged, ignore=IGNORE, symlinks=False)
            what = str(src)
        make_read_only(staged)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staged, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return what


def make_read_only(root: Path) -> None:
    """Directories 0755, files 0644 (0755 when executable), owned by the caller."""
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            p = Path(dirpath, f)
            if p.is_symlink():
                continue
            os.chmod(p, 0o755 if os.access(p, os.X_OK) else 0o644)


def copy_for_user(
    materials: Path, target: Path, uid: int | None = None, gid: int | None = None
) -> bool:
    """Give a participant their writable copy at ``target`` (in their home) unless it already
    exists: their work is never overwritten. Returns True when it was copied.

    The copy is prepared in a root-only staging directory next to the home (same file
    system), where ownership and modes are set, and then renamed into place: nothing is
    chowned or chmodded inside a directory the participant can change meanwhile."""
    if os.path.lexists(target) or not materials.is_dir():
        return False
    home = target.parent
    staging = home.parent / f".workshop-staging-{home.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    try:
        staged = staging / target.name
        shutil.copytree(materials, staged, symlinks=False)
        make_read_only(staged)  # 0755/0644 for the owner below: writable by them only
        if uid is not None:
            group = gid if gid is not None else -1
            for dirpath, _dirnames, filenames in os.walk(staged):
                os.chown(dirpath, uid, group, follow_symlinks=False)
                for f in filenames:
                    os.chown(Path(dirpath, f), uid, group, follow_symlinks=False)
        try:
            os.rename(staged, target)
        except OSError:  # created meanwhile (by the participant): theirs wins
            return False
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def pack(materials: Path, out: IO[bytes]) -> int:
    """Write ``materials`` as a gzipped tar to ``out`` (names relative to it, no owners, no
    links, no ``.git``); returns the number of files."""
    files = 0
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for dirpath, dirnames, filenames in os.walk(materials):
            dirnames[:] = sorted(d for d in dirnames if d not in (".git", "__pycache__"))
            for name in sorted(filenames):
                path = Path(dirpath, name)
                if path.is_symlink() or not path.is_file():
                    continue
                info = tar.gettarinfo(str(path), arcname=str(path.relative_to(materials)))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with path.open("rb") as f:
                    tar.addfile(info, f)
                files += 1
    return files


def _member_path(root: Path, member: tarfile.TarInfo) -> Path:
    """Where a member of a materials archive goes under ``root``; only plain files and
    directories with relative names that stay inside ``root`` are accepted."""
    name = PurePosixPath(member.name)
    parts = [p for p in name.parts if p != "."]
    if name.is_absolute() or ".." in parts or not (member.isfile() or member.isdir()):
        raise WorkshopError(f"materials archive: {member.name!r} is not a file inside the copy")
    if member.isfile() and not parts:
        raise WorkshopError(f"materials archive: {member.name!r} has no file name")
    return root.joinpath(*parts)


def unpack_for_user(archive: IO[bytes], target: Path) -> bool:
    """Unpack a :func:`pack` stream as the participant's copy at ``target`` unless it already
    exists (their work is never overwritten). Returns True when it was unpacked.

    Runs as the participant (the init container's user). Only plain files and directories
    inside ``target`` are written (no links, devices, absolute names or ``..``: a bad member
    is a WorkshopError and nothing is left behind); modes are 0644/0755. The copy is staged
    next to ``target`` and renamed into place only when complete."""
    if os.path.lexists(target):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.incoming-", dir=target.parent))
    try:
        staged = staging / target.name
        staged.mkdir(mode=0o755)
        with tarfile.open(fileobj=archive, mode="r|gz") as tar:
            for member in tar:
                dest = _member_path(staged, member)
                if member.isdir():
                    dest.mkdir(mode=0o755, parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                source = tar.extractfile(member)
                try:
                    with open(dest, "xb") as out:
                        shutil.copyfileobj(source, out)
                except FileExistsError:
                    raise WorkshopError(f"materials archive: {member.name!r} twice") from None
                os.chmod(dest, 0o755 if member.mode & 0o111 else 0o644)
        try:
            os.rename(staged, target)
        except OSError:  # created meanwhile (by the participant): theirs wins
            return False
    except (tarfile.TarError, EOFError) as exc:
        raise WorkshopError(f"materials archive: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True
