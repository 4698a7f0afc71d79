"""Copy the workflow template notebooks into a user's home without ever clobbering their edits.

A manifest (``.cscale-sync.json`` in the target directory) records the hash of each file as we
last wrote it. At every sync a file is

- created when missing (also when the user deleted it: deleting restores the newest version),
- updated when the user's copy still equals what we last wrote and the template changed,
- left alone when the user changed it (their edit always wins; the newer template is then
  written beside it as ``<name>.new<suffix>`` so nothing is lost either way).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST = ".cscale-sync.json"
SKIP_DIRS = {".ipynb_checkpoints", "__pycache__", ".git"}


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sources(src: Path):
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            path = Path(root, name)
            yield path, path.relative_to(src).as_posix()


def sync(src: Path, dest: Path, uid: int | None = None, gid: int | None = None) -> SyncReport:
    """Bring ``dest`` up to date with ``src`` (see module doc); chown what is written."""
    src, dest = Path(src), Path(dest)
    report = SyncReport()
    if not src.is_dir():
        return report

    def own(path: Path) -> None:
        if uid is not None:
            os.chown(path, uid, gid if gid is not None else -1, follow_symlinks=False)

    def mkdirs(path: Path) -> None:
        missing = []
        while not path.exists():
            missing.append(path)
            path = path.parent
        for d in reversed(missing):
            d.mkdir(mode=0o755)
            own(d)

    def write(source: Path, target: Path) -> None:
        tmp = target.with_name(f".{target.name}.cscale-tmp")
        shutil.copyfile(source, tmp)
        os.chmod(tmp, 0o644)
        own(tmp)
        os.replace(tmp, target)

    mkdirs(dest)
    manifest_path = dest / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = {}

    for source, rel in _sources(src):
        target = dest / rel
        new = _digest(source)
        mkdirs(target.parent)
        if not target.exists():
            write(source, target)
            report.created.append(rel)
        else:
            current = _digest(target)
            if current == new:
                report.unchanged.append(rel)
            elif current == manifest.get(rel):
                write(source, target)
                report.updated.append(rel)
            else:
                report.kept.append(rel)
                if manifest.get(rel) != new:
                    beside = target.with_name(f"{target.stem}.new{target.suffix}")
                    write(source, beside)
        # for a kept file this records the template last offered beside it
        manifest[rel] = new

    tmp = manifest_path.with_name(MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    own(tmp)
    os.replace(tmp, manifest_path)
    return report
