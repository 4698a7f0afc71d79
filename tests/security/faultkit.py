"""Fault injection for the security tests: a PostgreSQL that can be stopped and started again,
and a small filesystem that really fills up (a tmpfs mounted for the test)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cscale_extensions.net import free_port, port_open, wait_for

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class Postgres:
    """A throw-away PostgreSQL 15 cluster on a free port; :meth:`stop` and :meth:`start` keep
    its data directory and port, as a database server restarted by its operator would."""

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            pytest.skip("PostgreSQL 15 is not installed (scripts/apt-packages.txt)")
        self.root = os.getuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="fault-pg-", dir="/tmp"))
        self.prefix = ["runuser", "-u", "postgres", "--"] if self.root else []
        if self.root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        subprocess.run(
            [
                *self.prefix,
                str(PG_BIN / "initdb"),
                "-D",
                str(self.dir / "data"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
        )
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                str(PG_BIN / "postgres"),
                "-D",
                str(self.dir / "data"),
                "-p",
                str(self.port),
                "-k",
                str(self.dir),
                "-h",
                "127.0.0.1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert wait_for(lambda: port_open("127.0.0.1", self.port), 60, 0.2), (
            "postgres did not start"
        )
        time.sleep(0.3)

    def stop(self) -> None:
        """Fast shutdown: open connections are cut, the port closes."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            self.proc.wait(30)
        self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


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
