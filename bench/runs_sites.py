"""Benchmark: a sweep of 20 headless runs on the ``hpc`` site (one Slurm job array) vs ``cloud``.

Starts the whole platform (`cscale-hub up` through cscale_testing.LocalStack, with its
embedded single-node Slurm), warms demo-member's ``runs`` server with one run per site, then in
the same process and run measures, per site:

- single: one run, submit -> succeeded (median of 3);
- sweep: 20 runs submitted as one sweep, submit -> all succeeded. On ``cloud`` they execute
  up to ``runs.max_concurrent_per_user`` at a time in the user's server; on ``hpc`` they are
  the 20 tasks of one ``sbatch --array``, as many at a time as the node's CPUs
  (``compute.sites.hpc.slurm.node.cpus``) allow;

and prints the ratios hpc / cloud (> 1: hpc slower). Both sites share this machine's cores, so
the ratio measures the platform's overhead per site (Slurm submission, scheduling, polling),
not a faster cluster.

Usage: .venv/bin/python bench/runs_sites.py [--runs 20] [--n 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import nbformat
import requests
from cscale_testing import LocalStack

TERMINAL = ("succeeded", "failed", "cancelled", "timeout", "lost")
CELLS = (
    "import math\ntotal = sum(math.sqrt(i) for i in range(n))",
    "print('total', round(total, 3))",
)


def notebook() -> dict:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("n = 10")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(c) for c in CELLS)]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return json.loads(nbformat.writes(nb))


class Api:
    def __init__(self, stack: LocalStack, user: str):
        self.url = stack.url + "services/runs/"
        self.http = stack.api(stack.api_token(user, ["access:services!service=runs"]))

    def post(self, path: str, body: dict) -> dict:
        r = self.http.post(self.url + path, json=body, timeout=120)
        assert r.status_code == 201, r.text
        return r.json()

    def wait_all(self, ids: list[str], timeout: float = 1800) -> list[dict]:
        deadline = time.monotonic() + timeout
        pending, done = list(ids), {}
        while pending:
            assert time.monotonic() < deadline, f"runs not ended: {pending}"
            for run_id in list(pending):
                run = self.http.get(self.url + f"runs/{run_id}", timeout=60).json()
                if run["state"] in TERMINAL:
                    done[run_id] = run
                    pending.remove(run_id)
            time.sleep(0.2)
        runs = [done[i] for i in ids]
        bad = [r for r in runs if r["state"] != "succeeded"]
        assert not bad, bad
        return runs


def single(api: Api, nb: dict, site: str, n: int) -> float:
    t0 = time.perf_counter()
    run = api.post("runs", {"notebook": nb, "parameters": {"n": n}, "site": site})
    api.wait_all([run["id"]])
    return time.perf_counter() - t0


def sweep(api: Api, nb: dict, site: str, n: int, runs: int) -> tuple[float, list[dict]]:
    t0 = time.perf_counter()
    out = api.post(
        "sweeps", {"notebook": nb, "site": site, "grid": {"n": [n + i for i in range(runs)]}}
    )
    done = api.wait_all([r["id"] for r in out["runs"]])
    return time.perf_counter() - t0, done


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--n", type=int, default=20000, help="size of the notebook's loop")
    p.add_argument("--user", default="demo-member")
    args = p.parse_args()
    nb = notebook()
    stack = LocalStack(config={"runs": {"poll_interval": 0.5}}).start()
    try:
        cfg = stack.cfg
        api = Api(stack, args.user)
        figures: dict[str, dict[str, float]] = {}
        for site in ("cloud", "hpc"):
            first = single(api, nb, site, args.n)  # the cloud one starts the runs server
            singles = [single(api, nb, site, args.n) for _ in range(3)]
            t_sweep, done = sweep(api, nb, site, args.n, args.runs)
            figures[site] = {
                "first": first,
                "single": statistics.median(singles),
                "sweep": t_sweep,
                "jobs": len({(r["site_job"] or "").split("_")[0] for r in done}),
            }
        c, h = figures["cloud"], figures["hpc"]
        concurrency = cfg["runs"]["max_concurrent_per_user"]
        cpus = cfg["compute"]["sites"]["hpc"]["slurm"]["node"]["cpus"]
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
        print(f"cloud: up to {concurrency} runs at a time; hpc: one array, node of {cpus} CPUs")
        print(f"{'':<26}{'cloud':>10}{'hpc':>10}{'hpc/cloud':>11}")
        for key, label in (("first", "first run"), ("single", "single run (median of 3)")):
            print(f"{label:<26}{c[key]:>9.2f}s{h[key]:>9.2f}s{h[key] / c[key]:>10.2f}x")
        print(
            f"{f'sweep of {args.runs}':<26}{c['sweep']:>9.2f}s{h['sweep']:>9.2f}s"
            f"{h['sweep'] / c['sweep']:>10.2f}x"
        )
        print(
            f"{'sweep throughput':<26}{args.runs / c['sweep']:>8.2f}/s{args.runs / h['sweep']:>8.2f}/s"
        )
        print(f"Slurm jobs of the hpc sweep: {h['jobs']} (one job array)")
    finally:
        stack.finish()
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except requests.RequestException as exc:
        raise SystemExit(f"benchmark failed: {exc}") from exc
