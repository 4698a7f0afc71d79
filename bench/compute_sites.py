"""Benchmark of the compute sites: Dask cluster start and scale to 2 workers, cloud vs hpc.

Starts the whole platform (`cscale-hub up` through cscale_testing.LocalStack, with its
embedded single-node Slurm), then, as the demo member through the gateway's public address,
alternately on each site (``--repeat`` times):

- start: ``new_cluster(site=…)`` until the scheduler is running (the call returns);
- scale to 2: ``cluster.scale(2)`` until both workers are connected;
- stop: ``shutdown()`` until the cluster is gone (for hpc: nothing of it left in ``squeue``).

Prints the median of each per site side by side, with the ratio hpc / cloud, in one run.
The hpc numbers include Slurm's scheduling (a job per scheduler and worker, submitted as the
user through sudo) on top of what the cloud site does (local processes).

Usage: .venv/bin/python bench/compute_sites.py [--repeat 3] [--sites cloud,hpc]
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import statistics
import time

import dask_gateway
from cscale_testing import LocalStack

from cscale_extensions.compute import sites as compute_sites
from cscale_extensions.compute.slurm import SlurmSite
from cscale_extensions.net import wait_for

USER = "demo-member"


def measure(gw: dask_gateway.Gateway, site: str, slurm: SlurmSite | None) -> dict[str, float]:
    # a measurement that hangs shows where (the platform is still stopped by the finally)
    faulthandler.dump_traceback_later(600, exit=False)
    t0 = time.perf_counter()
    cluster = gw.new_cluster(site=site)
    started = time.perf_counter() - t0
    try:
        client = cluster.get_client()
        t0 = time.perf_counter()
        cluster.scale(2)
        client.wait_for_workers(2, timeout=300)
        scaled = time.perf_counter() - t0
        client.close()
    finally:
        name = cluster.name
        t0 = time.perf_counter()
        cluster.shutdown()
        # closed here, not by the garbage collector: a GatewayCluster's __del__ running on the
        # client's event loop thread (during the next get_client) deadlocks the client
        cluster.close()
        if slurm is not None:
            wait_for(lambda: not [j for j in slurm.jobs() if name in j.name], 120, 0.2)
        stopped = time.perf_counter() - t0
        faulthandler.cancel_dump_traceback_later()
    gc.collect()
    print(f"  {site}: start {started:.2f} s, scale to 2 {scaled:.2f} s, stop {stopped:.2f} s",
          flush=True)
    return {"start": started, "scale to 2": scaled, "stop": stopped}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sites", default="cloud,hpc")
    args = ap.parse_args()
    names = [s for s in args.sites.split(",") if s]

    t0 = time.perf_counter()
    stack = LocalStack(config={}).start()
    print(f"platform up in {time.perf_counter() - t0:.1f} s", flush=True)
    try:
        cfg = stack.cfg
        every = compute_sites(cfg)
        token = stack.api_token(USER)
        stack.start_server(token, USER)  # as a notebook user: the first start makes the home
        gw = dask_gateway.Gateway(
            stack.service_url("dask-gateway"),
            proxy_address=f"gateway://127.0.0.1:{cfg['dask_gateway']['scheduler_port']}",
            auth=dask_gateway.JupyterHubAuth(api_token=token),
        )
        results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
        # warm-up (imports, first sudo, first Slurm scheduling pass), not counted
        for name in names:
            slurm = SlurmSite.from_settings(every[name]["slurm"]) if every[name]["kind"] == "slurm" else None
            measure(gw, name, slurm)
        for _ in range(args.repeat):
            for name in names:
                slurm = SlurmSite.from_settings(every[name]["slurm"]) if every[name]["kind"] == "slurm" else None
                results[name].append(measure(gw, name, slurm))
        gw.close()
    finally:
        stack.finish()

    keys = ["start", "scale to 2", "stop"]
    med = {n: {k: statistics.median(r[k] for r in results[n]) for k in keys} for n in names}
    base = names[0]
    head = f"{'median seconds':<16}" + "".join(f"{n:>10}" for n in names)
    head += "".join(f"{n + '/' + base:>14}" for n in names[1:])
    print(f"\n{args.repeat} clusters per site, 2 workers each (1 core, 2 GiB)")
    print(head)
    for k in keys:
        line = f"{k:<16}" + "".join(f"{med[n][k]:>10.2f}" for n in names)
        line += "".join(f"{med[n][k] / med[base][k]:>14.2f}" for n in names[1:])
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
