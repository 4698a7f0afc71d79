"""Stopping and starting the federation again: clean stop, same data, new asset URL."""

from __future__ import annotations

import os
import pwd
import shutil
import uuid
from pathlib import Path

import psutil
import pytest
import requests

from cscale_extensions.localstack.sites.pgstac_site import PgCluster
from cscale_extensions.localstack.supervisor import Supervisor, stack_processes
from cscale_extensions.net import free_port
from cscale_extensions.processes import alive

from .conftest import needs_postgres, start_federation, world_readable_tmpdir

pytestmark = [needs_postgres, pytest.mark.slow]


def _eodc_state(fed) -> tuple[int, str]:
    url = fed.site("eodc")["url"]
    body = {"collections": ["landsat-5-tm-sr", "landsat-7-etm-sr"], "limit": 200}
    feats = requests.post(f"{url}search", json=body, timeout=20).json()["features"]
    return len(feats), feats[0]["assets"]["red"]["href"]


def test_restart_reuses_the_cluster_and_reloads_idempotently(data_dir: Path) -> None:
    target = world_readable_tmpdir("cscale-sites-restart-")
    try:
        shutil.copytree(
            data_dir / "eodata", target / "eodata"
        )  # prepared data: prepare() is skipped
        first = start_federation(target)
        try:
            count1, href1 = _eodc_state(first)
            (postmaster,) = [pid for pid in stack_processes(first.stack_id) if _is_postgres(pid)]
            pg_pids = [postmaster, *(c.pid for c in psutil.Process(postmaster).children())]
            assert len(pg_pids) > 1  # postmaster and its helpers
        finally:
            first.supervisor.stop()
        assert not stack_processes(first.stack_id)
        assert not any(alive(p) and _is_postgres(p) for p in pg_pids)
        assert not (target / "sites" / "pg" / "postmaster.pid").exists()  # clean shutdown

        if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to postgres
            assert (target / "sites" / "pg").stat().st_uid == pwd.getpwnam("postgres").pw_uid

        # a run that died and left its PostgreSQL running on this cluster
        crashed = Supervisor(target / "logs", f"sites-crashed-{uuid.uuid4().hex[:8]}")
        orphan = crashed.start(PgCluster(target / "sites", free_port()).postgres_spec())
        try:
            second = start_federation(target)  # stops the leftover postmaster, then starts its own
            try:
                count2, href2 = _eodc_state(second)
                assert orphan.wait(5) is not None
            finally:
                second.supervisor.stop()
        finally:
            crashed.stop()
        assert count2 == count1 > 0  # upsert: no duplicates, nothing lost
        assert href2 != href1  # hrefs follow this run's asset server
        assert href2.rsplit("/cogs/", 1)[1] == href1.rsplit("/cogs/", 1)[1]
    finally:
        shutil.rmtree(target, ignore_errors=True)


def _is_postgres(pid: int) -> bool:
    try:
        return psutil.Process(pid).name().startswith("postgres")
    except psutil.Error:
        return False
