"""Benchmark of the runs service: a sweep of 20 runs of a small notebook.

Starts a throw-away JupyterHub with the runs service (cscale_testing.testhub), warms
the user's runs server with one run, then measures, in the same process and run:

- single: wall time of one run through the service (submit -> succeeded), server warm;
- warm kernel: the same cells executed in an already running kernel (the floor);
- sweep: 20 runs submitted as one sweep, executed up to max_concurrent_per_user at a time;
- sequential papermill: the same 20 executions with papermill in this process, one by one
  (papermill already imported, so its import is not counted against it), and the papermill
  command line in a shell-style loop (one process per run; mean of --cli-runs runs).

Prints throughput as a ratio to cores x the single-run rate, the per-run overhead against the
warm kernel, and the speed-up of the sweep over sequential papermill.

Usage: .venv/bin/python bench/headless_runs.py [--runs 20] [--concurrency N]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from cscale_testing.testhub import MiniHub, Runs, notebook

CELLS = (
    "import math\ntotal = sum(math.sqrt(i) for i in range(n))",
    "print('total', round(total, 3))",
)


def timed_run(api: Runs, nb: dict, n: int) -> float:
    t0 = time.perf_counter()
    run = api.ok("POST", "runs", json={"notebook": nb, "parameters": {"n": n}})
    done = api.wait(run["id"], timeout=600)
    assert done["state"] == "succeeded", done
    return time.perf_counter() - t0


def warm_kernel_seconds(n: int, repeat: int = 5) -> float:
    """Median time to execute the notebook's cells in an already running kernel."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    try:
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            for code in (f"n = {n}", *CELLS):
                reply = kc.execute_interactive(code, timeout=60, output_hook=lambda msg: None)
                assert reply["content"]["status"] == "ok"
            times.append(time.perf_counter() - t0)
        return sorted(times)[len(times) // 2]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def sequential_papermill(nb: dict, n: int, runs: int, work: Path) -> float:
    import papermill

    src = work / "input.ipynb"
    src.write_text(json.dumps(nb))
    t0 = time.perf_counter()
    for i in range(runs):
        papermill.execute_notebook(
            str(src),
            str(work / f"out{i}.ipynb"),
            parameters={"n": n + i},
            progress_bar=False,
            kernel_name="python3",
        )
    return time.perf_counter() - t0


def sequential_papermill_cli(nb: dict, n: int, runs: int, work: Path) -> float:
    """``papermill IN OUT -p n N`` as a shell loop would run it: one process per run."""
    import subprocess
    import sys

    src = work / "input.ipynb"
    src.write_text(json.dumps(nb))
    exe = str(Path(sys.executable).with_name("papermill"))
    t0 = time.perf_counter()
    for i in range(runs):
        subprocess.run(
            [
                exe,
                str(src),
                str(work / f"cli{i}.ipynb"),
                "-p",
                "n",
                str(n + i),
                "--no-progress-bar",
                "-k",
                "python3",
            ],
            check=True,
            capture_output=True,
        )
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=20)
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="max_concurrent_per_user (default: the setting's default, 4)",
    )
    p.add_argument(
        "--cli-runs",
        type=int,
        default=5,
        help="runs of the papermill command line baseline (its rate is extrapolated)",
    )
    p.add_argument("--n", type=int, default=20000, help="size of the notebook's loop")
    args = p.parse_args()
    cores = os.cpu_count() or 1
    nb = notebook(*CELLS, params="n = 10")
    with tempfile.TemporaryDirectory(prefix="bench-runs-", dir="/tmp") as tmp:
        work = Path(tmp)
        hub = MiniHub(work / "hub")
        (work / "hub").mkdir()
        hub.settings = {"poll_interval": 0.5, "heartbeat_timeout": 30}
        if args.concurrency:
            hub.settings["max_concurrent_per_user"] = args.concurrency
        try:
            hub.start()
            api = Runs(hub.runs_url, hub.token("alice"))
            t_first = timed_run(api, nb, args.n)  # includes starting alice's runs server
            singles = sorted(timed_run(api, nb, args.n) for _ in range(3))
            t_single = singles[1]
            t0 = time.perf_counter()
            sweep = api.ok(
                "POST",
                "sweeps",
                json={"notebook": nb, "grid": {"n": [args.n + i for i in range(args.runs)]}},
            )
            for run in sweep["runs"]:
                assert api.wait(run["id"], timeout=1200)["state"] == "succeeded"
            t_sweep = time.perf_counter() - t0
            limit = args.concurrency or 4
        finally:
            hub.stop()
        t_warm = warm_kernel_seconds(args.n)
        t_seq = sequential_papermill(nb, args.n, args.runs, work)
        t_cli = sequential_papermill_cli(nb, args.n, args.cli_runs, work) / args.cli_runs

    rate_single = 1 / t_single
    throughput = args.runs / t_sweep
    print(f"machine: {cores} cores; per-user concurrency {limit}; {args.runs} runs")
    print(f"first run (starts the user's runs server): {t_first:.2f} s")
    print(f"single run through the service (median of 3, server warm): {t_single:.2f} s")
    print(f"same cells in a warm kernel: {t_warm * 1000:.1f} ms")
    print(
        f"per-run overhead vs warm kernel: {t_single - t_warm:.2f} s "
        f"({t_single / t_warm:.0f}x the warm-kernel time)"
    )
    print(f"sweep of {args.runs}: {t_sweep:.2f} s = {throughput:.2f} runs/s")
    print(f"throughput / (cores x single-run rate) = {throughput / (cores * rate_single):.2f}")
    print(
        f"sequential papermill in-process ({args.runs} runs): {t_seq:.2f} s "
        f"= {args.runs / t_seq:.2f} runs/s"
    )
    print(f"speed-up of the sweep over sequential in-process papermill: {t_seq / t_sweep:.2f}x")
    print(
        f"papermill command line, one process per run: {t_cli:.2f} s/run "
        f"(mean of {args.cli_runs}); {args.runs} of them sequentially ~ {t_cli * args.runs:.1f} s"
    )
    print(
        f"speed-up of the sweep over a sequential papermill CLI loop: "
        f"{t_cli * args.runs / t_sweep:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
