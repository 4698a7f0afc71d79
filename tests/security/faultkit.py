"""Fault injection for the security tests: a small filesystem that really fills up (a tmpfs
mounted for the test). A PostgreSQL that can be stopped and started again is the harness's
:class:`cscale_testing.postgres.Postgres`."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (e.g. "2m") on ``path`` for the block; skip if not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up (needs root): {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path, leave: int) -> Path:
    """Write a filler file so that exactly ``leave`` bytes (a multiple of the page size) stay
    free on the filesystem of ``path``."""
    filler = path / "filler.bin"
    size = free_bytes(path) - leave
    assert size > 0, f"only {free_bytes(path)} bytes free, cannot leave {leave}"
    with open(filler, "wb") as f:
        f.write(b"\0" * size)
    assert free_bytes(path) == leave, (free_bytes(path), leave)
    return filler
