"""Dask clusters on the ``hpc`` site of the whole platform (`cscale-hub up`): a real Slurm.

One gateway serves both sites; ``new_cluster(site="hpc")`` runs the scheduler and each worker
as Slurm jobs submitted as the member. Checked over the real stack: the cluster computes and
every Dask process runs as the member's uid, on 127.0.0.1, with scratch space in its staging
directory, under the cloud site's rlimits; shutdown and the idle timeout leave the queue
empty and keep the logs; a VO not allowed on ``hpc`` gets a clear error; a gateway killed with SIGKILL and restarted by the hub
cancels the jobs no live cluster owns and keeps the live ones; the platform stops with no
job saved and no Slurm daemon left. Before compute sites none of this existed (``site`` was an
unknown cluster option, there was no Slurm).
"""

from __future__ import annotations

import os
import pwd
import resource
import signal
import time
import uuid
from pathlib import Path

import aiohttp
import psutil
import pytest
from dask_gateway.client import GatewayServerError
from distributed import fire_and_forget

from cscale_extensions.net import wait_for

from .conftest import IDLE_TIMEOUT, OTHER_VO

pytestmark = pytest.mark.slow
MEMBER = "demo-member"


def _jobs_of(slurm, cluster_name: str):
    return [j for j in slurm.jobs() if cluster_name in j.name]


def _staging(stack, cluster_name: str) -> Path:
    """Where the cluster's jobs keep their files: in the member's home of this stack."""
    return stack.state_dir / "homes" / MEMBER / ".dask-gateway" / cluster_name


def _listed(gw, cluster_name: str) -> bool:
    """The gateway answers and lists the cluster as running."""
    try:
        return any(c.name == cluster_name and c.status.name == "RUNNING"
                   for c in gw.list_clusters())
    except (ValueError, GatewayServerError, aiohttp.ClientError, OSError):
        return False


def _gateway_pid(stack) -> int | None:
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if any(a.endswith("dask-gateway-server") for a in cmd[:2]):
            try:
                if p.environ().get("CSCALE_STACK_ID") == stack.stack_id:
                    return p.pid
            except psutil.Error:
                continue
    return None


def test_member_cluster_on_hpc_computes_as_the_member(hpc_stack, gateway_for, slurm):
    import dask.array as da

    gw = gateway_for(MEMBER)
    sites = gw.cluster_options()._fields["site"]
    assert list(sites.options) == ["cloud", "hpc"]
    uid = pwd.getpwnam(MEMBER).pw_uid
    cluster = gw.new_cluster(site="hpc")
    name = cluster.name
    try:
        cluster.scale(2)
        client = cluster.get_client()
        client.wait_for_workers(2, timeout=240)
        assert da.ones((2000, 2000), chunks=500).sum().compute() == 4_000_000
        assert set(client.run(os.getuid).values()) == {uid}
        assert client.run_on_scheduler(os.getuid) == uid
        # the cloud site's per-process limits: worker memory (2 GiB) + dask_headroom (512M)
        data = 2 * 2**30 + 512 * 2**20
        limits = client.run(lambda: resource.getrlimit(resource.RLIMIT_DATA))
        assert set(limits.values()) == {(data, data)}
        scratch = str(_staging(hpc_stack, name) / "tmp")
        assert set(client.run(lambda: os.environ["TMPDIR"]).values()) == {scratch}
        info = client.scheduler_info()
        assert info["address"].startswith("tls://127.0.0.1:")
        assert all(w.startswith("tls://127.0.0.1:") for w in info["workers"])
        jobs = _jobs_of(slurm, name)
        assert len(jobs) == 3 and {j.user for j in jobs} == {MEMBER}
        assert {j.state for j in jobs} == {"R"}
        client.close()
    finally:
        cluster.shutdown()
    assert wait_for(lambda: not _jobs_of(slurm, name), 60, 0.5), _jobs_of(slurm, name)
    staging = _staging(hpc_stack, name)
    logs = sorted(p.name for p in staging.iterdir())
    assert "dask-scheduler.log" in logs and sum(n.startswith("dask-worker-") for n in logs) == 2
    assert "dask.pem" not in logs and "tmp" not in logs  # key and scratch gone, logs kept
    assert staging.stat().st_uid == uid


def test_a_vo_not_allowed_on_hpc_gets_a_clear_error(hpc_stack, gateway_for, outsider, slurm):
    gw = gateway_for(outsider)
    sites = gw.cluster_options()._fields["site"]
    assert list(sites.options) == ["cloud"]
    before = slurm.jobs()
    with pytest.raises(Exception) as err:
        gw.new_cluster(site="hpc")
    msg = str(err.value)
    assert "'hpc' is open to members of vo.cscale.eu only" in msg, msg
    assert OTHER_VO in msg and "Sites you may use: cloud" in msg
    assert "Traceback" not in msg
    assert slurm.jobs() == before


def test_idle_cluster_ends_and_leaves_the_queue_empty(hpc_stack, gateway_for, slurm):
    gw = gateway_for(MEMBER)
    cluster = gw.new_cluster(site="hpc", shutdown_on_close=False)
    name = cluster.name
    cluster.scale(1)
    client = cluster.get_client()
    client.wait_for_workers(1, timeout=240)
    client.close()
    cluster.close()
    assert len(_jobs_of(slurm, name)) == 2
    # nothing to do: the scheduler ends the cluster after the idle timeout
    assert wait_for(lambda: not _jobs_of(slurm, name), IDLE_TIMEOUT + 120, 1), \
        _jobs_of(slurm, name)
    assert name not in {c.name for c in gw.list_clusters()}


def test_gateway_killed_then_restarted_cancels_jobs_no_cluster_owns(hpc_stack, gateway_for,
                                                                    slurm):
    """The orphan is a job named like the gateway's own for a cluster its database does not
    know: what a gateway killed between ``sbatch`` and recording the job id leaves."""
    gw = gateway_for(MEMBER)
    cluster = gw.new_cluster(site="hpc", shutdown_on_close=False)
    name = cluster.name
    try:
        cluster.scale(2)
        client = cluster.get_client()
        client.wait_for_workers(2, timeout=240)
        # one worker stays busy (a task that needs no client): the module's short idle timeout
        # must not end the cluster while the gateway is down and restarting
        busy, free = sorted(client.scheduler_info()["workers"])
        fire_and_forget(client.submit(time.sleep, 600, pure=False, workers=[busy]))
        assert wait_for(lambda: any(client.processing().values()), 60, 0.5)
        client.close()
        live = {j.id for j in _jobs_of(slurm, name)}
        scheduler_job = next(j for j in slurm.jobs() if j.name.endswith("." + name))
        prefix = scheduler_job.name[: -len(name)]
        orphan = slurm.submit(MEMBER, "#!/bin/sh\nsleep 600\n",
                              [f"--job-name={prefix}{uuid.uuid4().hex}", "--time=10",
                               "--output=/dev/null"])
        assert orphan in {j.id for j in slurm.jobs()}
        pid = _gateway_pid(hpc_stack)
        assert pid
        os.kill(pid, signal.SIGKILL)
        # the hub starts its managed service again; the new gateway reconciles at start
        assert wait_for(lambda: (_gateway_pid(hpc_stack) or pid) != pid, 120, 0.5)
        assert wait_for(lambda: orphan not in {j.id for j in slurm.jobs()}, 120, 1)
        assert live <= {j.id for j in slurm.jobs()}  # the live cluster's jobs are kept
        # until the new gateway's proxy has its routes, the gateway's URL answers 404 (dask-gateway)
        assert wait_for(lambda: _listed(gw, name), 120, 1)
        again = gw.connect(name)
        with again.get_client() as client:
            assert client.submit(sum, [1, 2, 3], workers=[free]).result(timeout=120) == 6
        again.close()
    finally:
        gw.stop_cluster(name)
    assert wait_for(lambda: not _jobs_of(slurm, name), 60, 0.5)


def test_platform_stop_leaves_no_job_and_no_slurm_daemon(hpc_stack, gateway_for, slurm):
    """Last: stops the module's stack with a cluster running."""
    from cscale_extensions.localstack.slurm import Layout, running

    gw = gateway_for(MEMBER)
    cluster = gw.new_cluster(site="hpc", shutdown_on_close=False)
    cluster.scale(1)
    cluster.get_client().wait_for_workers(1, timeout=240)
    assert _jobs_of(slurm, cluster.name)
    root = Path(slurm.conf).parents[1]
    daemons = [p.pid for p in psutil.process_iter(["cmdline"])
               if any(str(root) in a for a in (p.info["cmdline"] or []))]
    assert len(daemons) >= 3  # munged, slurmctld, slurmd
    leftovers = hpc_stack.stop()
    assert not leftovers
    assert not [p for p in daemons if psutil.pid_exists(p)
                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not (Layout(root).status).exists()
    # the controller's saved state holds no job: a Slurm started on it has an empty queue
    with running(root) as again:
        assert again.site().jobs() == []
