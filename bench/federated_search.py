"""Benchmark of EO-MQS over 4 loopback STAC sites with injected latency (20, 45, 70, 100 ms).

Prints, all measured in this run:
- first-page search latency of EO-MQS (median, p95) vs the slowest site queried alone
  (ratio, target <= 1.05) and vs querying the four sites one after another (ratio); EO-MQS and
  the slowest site are measured alternately in each round (which goes first alternates too) and
  the median and p90 of the per-round ratios are printed as well;
- throughput of EO-MQS in searches per second with concurrent clients;
- time to page through 10,000 items spread over the sites, and its ratio to the sum of the
  sites' own paging times (each site paged alone with the same page size).

The sites run in one subprocess, EO-MQS in another (``python -m cscale_extensions.services.eomqs``), the
clients here. Everything listens on 127.0.0.1 only; every loop is bounded.

    .venv/bin/python bench/federated_search.py [--rounds 40] [--items 10000] [--page 500]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "eomqs"))
DELAYS = (0.020, 0.045, 0.070, 0.100)


def serve_sites(ports: list[int], items_total: int) -> None:
    """Child process: the four latency-injected sites, until stdin closes."""
    from sitekit import TestSite, ThreadServer, make_item

    rng = random.Random(11)
    per = items_total // len(ports)
    servers = []
    for k, (port, delay) in enumerate(zip(ports, DELAYS, strict=True)):
        items = [make_item(f"coll{k % 2}", k * per + n, rng) for n in range(per)]
        site = TestSite(
            items, collections=["coll0", "coll1"], delay=delay, paging="GET", count=False
        )
        servers.append(ThreadServer(site.app, port).start())
    print("ready", flush=True)
    sys.stdin.read()
    for s in servers:
        s.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def page_all(session: requests.Session, url: str, limit: int) -> int:
    """Page through a search (POST) to its end; return the items seen."""
    r = session.post(url + "search", json={"limit": limit}, timeout=120)
    n = 0
    for _ in range(100_000):
        doc = r.json()
        n += len(doc["features"])
        nxt = [ln for ln in doc["links"] if ln["rel"] == "next"]
        if not nxt:
            return n
        ln = nxt[0]
        if ln.get("method") == "POST":
            r = session.post(ln["href"], json=ln["body"], timeout=120)
        else:
            r = session.get(ln["href"], timeout=120)
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--page", type=int, default=500)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--serve-sites", nargs="*", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_sites:
        serve_sites(args.serve_sites, args.items)
        return 0

    from cscale_extensions.net import free_port, http_ready, wait_for

    ports = [free_port() for _ in DELAYS]
    sites = subprocess.Popen(
        [sys.executable, __file__, "--items", str(args.items), "--serve-sites", *map(str, ports)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    tmp = Path(tempfile.mkdtemp(prefix="eomqs-bench-"))
    eport = free_port()
    cfg = {
        "federation": {
            "embedded_sites": False,
            "sites": [
                {"name": f"site{k}", "url": f"http://127.0.0.1:{p}/", "timeout": 30}
                for k, p in enumerate(ports)
            ],
        },
        "eomqs": {"token_secret": "bench", "log_level": "WARNING", "max_limit": 10000},
    }
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
    eomqs = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cscale_extensions.services.eomqs",
            "--config",
            str(tmp / "config.yaml"),
            "--port",
            str(eport),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "JUPYTERHUB_SERVICE_PREFIX": "/"},
    )
    try:
        assert sites.stdout is not None and sites.stdout.readline().strip() == "ready"
        url = f"http://127.0.0.1:{eport}/"
        if not wait_for(lambda: http_ready(url), 60):
            raise SystemExit("EO-MQS did not start")
        s = requests.Session()
        site_urls = [f"http://127.0.0.1:{p}/" for p in ports]
        body = {"limit": 10, "sortby": [{"field": "properties.datetime", "direction": "desc"}]}
        for _ in range(3):  # warm up: capabilities, connections
            s.post(url + "search", json=body, timeout=60)
            for u in site_urls:
                s.post(u + "search", json=body, timeout=60)

        fed, slowest, sequential = [], [], []
        load0 = os.getloadavg()[0]
        cpu0 = cpu_seconds(eomqs.pid)
        for k in range(args.rounds):
            # a different (equivalent) query each round: no page cache hit anywhere
            body = {**body, "datetime": f"2020-01-01T00:{k // 60:02d}:{k % 60:02d}Z/.."}

            def run_fed(body=body):
                s.post(url + "search", json=body, timeout=60).raise_for_status()

            def run_slowest(body=body):
                s.post(site_urls[-1] + "search", json=body, timeout=60).raise_for_status()

            # interleaved, alternating which goes first: load changes hit both alike
            if k % 2:
                slowest.append(timed(run_slowest))
                fed.append(timed(run_fed))
            else:
                fed.append(timed(run_fed))
                slowest.append(timed(run_slowest))
            sequential.append(
                timed(
                    lambda body=body: [
                        s.post(u + "search", json=body, timeout=60).raise_for_status()
                        for u in site_urls
                    ]
                )
            )

        cpu_per_search = (cpu_seconds(eomqs.pid) - cpu0) / args.rounds
        ratios = [f / w for f, w in zip(fed, slowest, strict=True)]

        def med(v):
            return statistics.median(v) * 1000

        print(
            f"sites: 4 on loopback, injected latency {', '.join(f'{d * 1000:.0f}' for d in DELAYS)} ms; "
            f"{args.items} items; first page limit 10; {args.rounds} rounds"
        )
        print(
            f"EO-MQS search             median {med(fed):7.1f} ms   p95 {pct(fed, 0.95) * 1000:7.1f} ms"
        )
        print(
            f"slowest site alone        median {med(slowest):7.1f} ms   p95 {pct(slowest, 0.95) * 1000:7.1f} ms"
        )
        print(
            f"4 sites one after another median {med(sequential):7.1f} ms   p95 {pct(sequential, 0.95) * 1000:7.1f} ms"
        )
        print(
            f"ratio EO-MQS / slowest site:   median {med(fed) / med(slowest):.3f}   p95 {pct(fed, 0.95) / pct(slowest, 0.95):.3f}"
        )
        print(
            f"per-round ratio EO-MQS / slowest site (same round): median {statistics.median(ratios):.3f}"
            f"   p90 {pct(ratios, 0.90):.3f}   (target median <= 1.05)"
        )
        print(
            f"EO-MQS CPU time per search: {cpu_per_search * 1000:.1f} ms "
            f"(load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores)"
        )
        print(f"ratio EO-MQS / sequential:     median {med(fed) / med(sequential):.3f}")

        n_req = args.clients * 20
        local = threading.local()

        def one(_):
            sess = getattr(local, "s", None) or requests.Session()
            local.s = sess
            q = {
                **body,
                "datetime": f"2019-01-01T{_ // 3600:02d}:{_ // 60 % 60:02d}:{_ % 60:02d}Z/..",
            }
            sess.post(url + "search", json=q, timeout=60).raise_for_status()

        with ThreadPoolExecutor(args.clients) as pool:
            t = timed(lambda: list(pool.map(one, range(n_req))))
        print(
            f"throughput: {n_req / t:.1f} searches/s ({args.clients} concurrent clients, {n_req} searches)"
        )

        t_fed = 0.0
        got = 0

        def run_fed():
            nonlocal got
            got = page_all(s, url, args.page)

        t_fed = timed(run_fed)
        site_times = []
        site_items = 0
        for u in site_urls:

            def run_site(u=u):
                nonlocal site_items
                site_items += page_all(s, u, args.page)

            site_times.append(timed(run_site))
        print(
            f"paging {got} items (page {args.page}) through EO-MQS: {t_fed:.2f} s; "
            f"the sites paged alone: {' + '.join(f'{x:.2f}' for x in site_times)} = {sum(site_times):.2f} s "
            f"({site_items} items); ratio {t_fed / sum(site_times):.3f}"
        )
        if got != site_items:
            print(f"WARNING: EO-MQS returned {got} items, the sites {site_items}")
        return 0
    finally:
        eomqs.terminate()
        eomqs.wait(15)
        if sites.stdin:
            sites.stdin.close()
        sites.wait(15)


if __name__ == "__main__":
    sys.exit(main())
