"""Fixtures: the sample data prepared once, and the embedded federation started once."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cscale_extensions import config as settings
from cscale_extensions.localstack.eodata import prepare
from cscale_extensions.localstack.sites import embedded_federation
from cscale_extensions.localstack.supervisor import Supervisor, stack_processes

needs_postgres = pytest.mark.skipif(
    not Path("/usr/lib/postgresql/15/bin/postgres").exists(),
    reason="PostgreSQL 15 is not installed (scripts/apt-packages.txt)",
)


def world_readable_tmpdir(prefix: str) -> Path:
    """A temp dir other accounts (postgres, user servers) can reach: not under /root or pytest's 0700 base."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o755)
    return path


@dataclass
class Federation:
    data_dir: Path
    sites: list[dict]
    supervisor: Supervisor
    stack_id: str

    def site(self, name: str) -> dict:
        return next(s for s in self.sites if s["name"] == name)


def start_federation(data_dir: Path, cfg: dict | None = None) -> Federation:
    cfg = cfg or settings.load(None)
    specs, sites = embedded_federation(cfg, data_dir)
    stack_id = f"sites-test-{uuid.uuid4().hex[:8]}"
    sup = Supervisor(data_dir / "logs", stack_id)
    try:
        sup.start_all(specs)
    except BaseException:
        sup.stop()
        raise
    return Federation(data_dir, sites, sup, stack_id)


@pytest.fixture(scope="session")
def data_dir() -> Iterator[Path]:
    """A data dir with the sample data prepared (once per session)."""
    path = world_readable_tmpdir("cscale-sites-test-")
    try:
        prepare(path)
        yield path
    finally:
        if not os.environ.get("CSCALE_KEEP_TEST_DATA"):
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def eodata(data_dir: Path) -> Path:
    return data_dir / "eodata"


@pytest.fixture(scope="session")
def federation(data_dir: Path) -> Iterator[Federation]:
    """The embedded sites (pgstac + rustac + asset server) running on loopback; stopped at the end."""
    if not Path("/usr/lib/postgresql/15/bin/postgres").exists():
        pytest.skip("PostgreSQL 15 is not installed (scripts/apt-packages.txt)")
    fed = start_federation(data_dir)
    try:
        yield fed
    finally:
        fed.supervisor.stop()
        left = stack_processes(fed.stack_id)
        assert not left, f"processes of the federation left running: {left}"
