"""EO-MQS at catalogue scale: a private pgstac site of N items, through EO-MQS and directly.

For every N of ``--items`` (e.g. 10000 100000), in one run:

- builds a private pgstac site (its own PostgreSQL 15 cluster under ``--work``, stac-fastapi-
  pgstac, pypgstac) holding N synthetic items derived from the sample items (each a copy of a
  sample item with its own id and datetime, spread over 2015-2025); load time printed;
- first-page latency (limit 10, newest first; median of ``--rounds``, EO-MQS and the site
  alternately, every round a different but equivalent bbox so no cache answers it);
- deep-paging throughput (items/s paging ``--deep`` items with limit 100, 3 x as many with
  limit 1000; whole runs in pairs, a warm-up pair discarded, then ``--pairs`` pairs, which
  side goes first alternating; the ratio is the median of the pairs' ratios);
- pystac-client ``item_collection()`` of ``--max-items`` items (limit 500);
- EO-MQS's RSS before and after all of it (psutil; EO-MQS is its own process);
- a soak: ``--soak`` items paged through each of two fresh EO-MQS processes, one with
  glibc's own malloc mmap threshold and one with it fixed at 128 KiB
  (``eomqs.malloc_mmap_threshold_kib``), a page each in turn; RSS before and after, items/s;

and the unsortable case: a rustac site of ``--rustac`` items (no ``item-search#sort``),
first page through EO-MQS (checked against the true newest 10) vs the site's own first page,
and vs the site's own answer to one datetime window (what EO-MQS must ask at least once).

``ratio`` is always EO-MQS's number divided by the site's (latency and pystac-client
seconds: lower is better; throughput: higher is better).
Everything listens on 127.0.0.1; the cluster runs as ``postgres`` when we are root.

    .venv/bin/python bench/eomqs_scale.py --items 10000 100000 [--rustac 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "eomqs"))

from cscale_extensions.localstack.eodata import prepare  # noqa: E402
from cscale_extensions.localstack.sites.pgstac_site import DATABASE, PgCluster  # noqa: E402
from cscale_extensions.net import free_port, http_ready, wait_for  # noqa: E402

START = datetime(2015, 6, 23, tzinfo=UTC)
SPAN_S = int((datetime(2025, 12, 31, tzinfo=UTC) - START).total_seconds())
COLLECTION = "scale-synthetic"
DESC = [{"field": "properties.datetime", "direction": "desc"}]


# -- data ---------------------------------------------------------------------------------
def sample_items(data_dir: Path) -> list[dict[str, Any]]:
    """The sample items (prepared once under ``data_dir``), as dicts with absolute hrefs."""
    import pystac

    eodata = prepare(data_dir)
    cat = pystac.Catalog.from_file(str(eodata / "stac" / "catalog.json"))
    out = []
    for item in cat.get_items(recursive=True):
        item.make_asset_hrefs_absolute()
        d = item.to_dict(include_self_link=False, transform_hrefs=False)
        d["links"] = []
        out.append(d)
    return out


def synthetic(templates: list[dict[str, Any]], n: int, seed: int = 1) -> list[dict[str, Any]]:
    """``n`` items, each a sample item with its own id and a datetime in 2015-2025."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        t = templates[k % len(templates)]
        when = START + timedelta(seconds=rng.randrange(SPAN_S))
        props = {**t["properties"], "datetime": when.strftime("%Y-%m-%dT%H:%M:%SZ")}
        out.append({**t, "id": f"{t['id']}-{k:07d}", "collection": COLLECTION, "properties": props})
    return out


def collection_doc(items: list[dict[str, Any]]) -> dict[str, Any]:
    times = sorted(i["properties"]["datetime"] for i in items)
    return {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": COLLECTION,
        "description": f"{len(items)} synthetic items derived from the C-SCALE Hub sample items",
        "license": "other",
        "extent": {
            "spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]},
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
        "links": [],
    }


def newest(items: list[dict[str, Any]], k: int) -> list[str]:
    srt = sorted(items, key=lambda i: i["id"])
    srt.sort(key=lambda i: i["properties"]["datetime"], reverse=True)
    return [i["id"] for i in srt[:k]]


# -- processes ----------------------------------------------------------------------------
class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: list[str], log: Path, **kw: Any) -> subprocess.Popen:
        fh = open(log, "wb")  # noqa: SIM115
        p = subprocess.Popen(
            argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw
        )
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(2)  # SIGINT: a fast shutdown for postgres, uvicorn
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)


def pgstac_site(work: Path, items: list[dict[str, Any]], procs: Procs) -> tuple[str, float]:
    """A private pgstac site holding ``items``; (its URL, load seconds)."""
    import psycopg
    from pypgstac.db import PgstacDB
    from pypgstac.load import Loader, Methods
    from pypgstac.migrate import Migrate

    cluster = PgCluster(work, free_port())
    cluster.initdb()
    spec = cluster.postgres_spec()
    procs.start(spec.argv, work / "postgres.log", cwd="/")
    cluster.wait_accepting()
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    t0 = time.monotonic()
    with PgstacDB(dsn=cluster.dsn()) as db:
        Migrate(db).run_migration()
        loader = Loader(db=db)
        loader.load_collections(iter([collection_doc(items)]), insert_mode=Methods.upsert)
        loader.load_items(iter(items), insert_mode=Methods.insert)
    load_s = time.monotonic() - t0
    port = free_port()
    env = {**os.environ, **cluster.env(), "DB_MIN_CONN_SIZE": "1", "DB_MAX_CONN_SIZE": "4"}
    argv = [
        sys.executable, "-m", "uvicorn", "--factory", "stac_fastapi.pgstac.app:create_app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    site_dir = work / "api"
    site_dir.mkdir()
    procs.start(argv, work / "api.log", env=env, cwd=str(site_dir))
    url = f"http://127.0.0.1:{port}/"
    if not wait_for(lambda: http_ready(url + "_mgmt/ping", 2), 120):
        raise RuntimeError(
            f"stac-fastapi-pgstac did not start: {(work / 'api.log').read_text()[-800:]}"
        )
    return url, load_s


def rustac_site(work: Path, items: list[dict[str, Any]], procs: Procs) -> str:
    from cscale_extensions.localstack.sites.rustac_site import rustac_binary

    work.mkdir(parents=True, exist_ok=True)
    (work / "collection.json").write_text(json.dumps(collection_doc(items)))
    (work / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    port = free_port()
    argv = [rustac_binary(), "serve", "--addr", f"127.0.0.1:{port}"]
    procs.start(
        [*argv, str(work / "collection.json"), str(work / "items.json")], work / "rustac.log"
    )
    url = f"http://127.0.0.1:{port}/"
    if not wait_for(lambda: http_ready(url, 2), 120):
        raise RuntimeError("rustac did not start")
    return url


def eomqs(
    work: Path, sites: list[dict[str, Any]], procs: Procs, name: str = "eomqs", **settings: Any
) -> tuple[str, psutil.Process]:
    """EO-MQS as its own process over ``sites`` (``settings``: eomqs.* beyond the defaults);
    (its URL, its process). A port taken between picking and binding (other jobs run here) is
    picked again."""
    cfg = {
        "platform": {"data_dir": str(work / f"{name}-data")},
        "federation": {"embedded_sites": False, "sites": sites},
        "eomqs": {"token_secret": "bench", "log_level": "WARNING", **settings},
    }
    (work / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    for _ in range(5):
        port = free_port()
        argv = [sys.executable, "-m", "cscale_extensions.services.eomqs", "--config",
                str(work / f"{name}.yaml"), "--port", str(port)]  # fmt: skip
        p = procs.start(argv, work / f"{name}.log")
        url = f"http://127.0.0.1:{port}/"
        wait_for(lambda p=p, url=url: p.poll() is not None or http_ready(url, 2), 60)
        if p.poll() is None and http_ready(url, 2):
            time.sleep(1.0)  # its health watcher has read the sites' collections
            return url, psutil.Process(p.pid)
    raise RuntimeError(f"EO-MQS did not start: {(work / f'{name}.log').read_text()[-800:]}")


# -- measurements -------------------------------------------------------------------------
def rss_mib(proc: psutil.Process) -> float:
    return proc.memory_info().rss / 2**20


def first_page_ms(s: requests.Session, url: str, rnd: int) -> float:
    body = {"limit": 10, "sortby": DESC, "bbox": [-180 + rnd * 1e-6, -90, 180, 90]}
    t0 = time.perf_counter()
    r = s.post(url + "search", json=body, timeout=120)
    r.raise_for_status()
    r.json()
    return (time.perf_counter() - t0) * 1000


def pages(s: requests.Session, url: str, limit: int, rnd: int) -> Iterator[int]:
    """Page one search (POST, next links) to its end, yielding each page's item count; ``rnd``
    makes the search distinct (an equivalent bbox), so no cache of an earlier run helps."""
    body = {"limit": limit, "sortby": DESC, "bbox": [-180 + (100 + rnd) * 1e-6, -90, 180, 90]}
    r = s.post(url + "search", json=body, timeout=300)
    while True:
        r.raise_for_status()
        doc = r.json()
        yield len(doc["features"])
        nxt = [ln for ln in doc.get("links", []) if ln.get("rel") == "next"]
        if not nxt or not doc["features"]:
            return
        ln = nxt[0]
        if ln.get("method", "GET").upper() == "POST":
            r = s.post(ln["href"], json=ln.get("body") or {}, timeout=300)
        else:
            r = s.get(ln["href"], timeout=300)


def page_items_per_s(
    s: requests.Session, url: str, limit: int, want: int, rnd: int
) -> tuple[float, int]:
    """Items per second paging one search to ``want`` items or its end."""
    t0 = time.perf_counter()
    got = 0
    for n in pages(s, url, limit, rnd):
        got += n
        if got >= want:
            break
    return got / (time.perf_counter() - t0), got


def deep_paging(
    s: requests.Session, fed: str, site: str, limit: int, want: int, pairs: int
) -> tuple[float, float, float, int]:
    """Items/s paging ``want`` items through EO-MQS and through the site, as whole runs in
    pairs: a warm-up pair first (discarded: the site's PostgreSQL gets much faster per page as
    it warms), then ``pairs`` pairs, which side goes first alternating (the machine's load
    drifts), a pause between runs (EO-MQS's read-ahead of an abandoned run must not overlap
    the site's run). (EO-MQS's median, the site's median, the median of the pairs' ratios,
    items per run)."""
    rates: dict[str, list[float]] = {fed: [], site: []}
    ratios: list[float] = []
    got = set()
    for k in range(pairs + 1):
        pair = {}
        for url in (fed, site) if k % 2 else (site, fed):
            rate, n = page_items_per_s(s, url, limit, want, 2 * k + (url == site))
            pair[url] = rate
            got.add(n)
            time.sleep(1.0)
        if k:
            rates[fed].append(pair[fed])
            rates[site].append(pair[site])
            ratios.append(pair[fed] / pair[site])
    assert len(got) == 1, got
    med = statistics.median
    return med(rates[fed]), med(rates[site]), med(ratios), got.pop()


def soak(
    s: requests.Session, procs: dict[str, psutil.Process], urls: dict[str, str], want: int
) -> dict[str, tuple[float, float, float]]:
    """Page ``want`` items (limit 1000, one search after another) through each of several
    EO-MQS processes over the same site, a page from each in turn (so they see the same load):
    {name: (RSS MiB before, RSS MiB after, items/s)}."""
    before = {name: rss_mib(proc) for name, proc in procs.items()}
    served = dict.fromkeys(urls, 0)
    busy = dict.fromkeys(urls, 0.0)
    rnd = 1000
    runs = {name: pages(s, url, 1000, rnd) for name, url in urls.items()}
    while any(n < want for n in served.values()):
        for name, url in urls.items():
            if served[name] >= want:
                continue
            t0 = time.perf_counter()
            n = next(runs[name], None)
            if n is None:  # this search is paged out: the next one
                rnd += 1
                runs[name] = pages(s, url, 1000, rnd)
                n = next(runs[name])
            busy[name] += time.perf_counter() - t0
            served[name] += n
    return {name: (before[name], rss_mib(procs[name]), served[name] / busy[name]) for name in urls}


def pystac_s(url: str, max_items: int) -> tuple[float, int]:
    from pystac_client import Client

    t0 = time.perf_counter()
    client = Client.open(url)
    n = len(
        client.search(
            max_items=max_items, limit=500, sortby="-properties.datetime"
        ).item_collection()
    )
    return time.perf_counter() - t0, n


def line(name: str, fed: float, site: float, unit: str, ratio: float | None = None) -> str:
    if ratio is None:
        ratio = fed / site if site else float("nan")
    return f"| {name:<34} | {fed:>10.1f} | {site:>10.1f} | {ratio:>6.2f} | {unit} |"


HEADER = (
    "| measure                            |     EO-MQS |       site |  ratio | unit |\n"
    "|------------------------------------|-----------:|-----------:|-------:|------|"
)


def bench_pgstac(n: int, templates: list, work: Path, args: argparse.Namespace) -> None:
    procs = Procs()
    try:
        items = synthetic(templates, n)
        site, load_s = pgstac_site(work / "pg", items, procs)
        fed, proc = eomqs(work, [{"name": "scale", "url": site, "timeout": 120}], procs)
        s = requests.Session()
        # correctness of the first page and of a deep page, against the data
        doc = s.post(fed + "search", json={"limit": 10, "sortby": DESC}, timeout=120).json()
        assert [f["id"] for f in doc["features"]] == newest(items, 10), "first page is wrong"
        rss0 = rss_mib(proc)
        fp_f, fp_s = [], []
        for rnd in range(args.rounds):
            pair = [(fp_f, fed), (fp_s, site)]
            for out, url in pair if rnd % 2 == 0 else pair[::-1]:
                out.append(first_page_ms(s, url, rnd))
        rows = [
            line(
                "first page, limit 10 (median ms)",
                statistics.median(fp_f),
                statistics.median(fp_s),
                "ms",
            )
        ]
        for limit in (100, 1000):
            want = min(n, args.deep if limit == 100 else 3 * args.deep)
            tf, ts, ratio, got = deep_paging(s, fed, site, limit, want, args.pairs)
            rows.append(line(f"deep paging, limit {limit} ({got} items)", tf, ts, "items/s", ratio))
        took: dict[str, list[float]] = {fed: [], site: []}
        counts = set()
        for k in range(2):  # twice each, alternately (which goes first too): the medians
            for url in (fed, site) if k == 0 else (site, fed):
                sec, nf = pystac_s(url, args.max_items)
                took[url].append(sec)
                counts.add(nf)
        assert len(counts) == 1, counts
        pf, ps = statistics.median(took[fed]), statistics.median(took[site])
        rows.append(line(f"pystac-client item_collection ({nf})", pf, ps, "s"))
        ordering = doc["federation:sites"]["scale"].get("ordering")
        rss1 = rss_mib(proc)
        print(f"\n### pgstac site, {n} items (loaded in {load_s:.1f} s with pypgstac)\n")
        print(HEADER)
        print("\n".join(rows))
        print(f"\nEO-MQS RSS: {rss0:.0f} MiB before, {rss1:.0f} MiB after ({rss1 - rss0:+.0f} MiB); "
              f"the site's order stated by EO-MQS: {ordering}")  # fmt: skip
        sys.stdout.flush()
        if args.soak:
            soak_rows(site, work, procs, s, min(args.soak, n))
    finally:
        procs.stop()


def soak_rows(site: str, work: Path, procs: Procs, s: requests.Session, want: int) -> None:
    """Two fresh EO-MQS processes over the site, glibc's own malloc mmap threshold vs a fixed
    128 KiB (eomqs.malloc_mmap_threshold_kib), each paging ``want`` items, a page each in turn."""
    sides = {"glibc's own threshold": 0, "fixed 128 KiB": 128}
    urls, ps = {}, {}
    for k, (name, kib) in enumerate(sides.items()):
        urls[name], ps[name] = eomqs(
            work, [{"name": "scale", "url": site, "timeout": 120}], procs, f"soak{k}",
            malloc_mmap_threshold_kib=kib,
        )  # fmt: skip
        s.post(urls[name] + "search", json={"limit": 10, "sortby": DESC}, timeout=120).json()
    t0 = time.monotonic()
    out = soak(s, ps, urls, want)
    print(f"\n#### soak: {want} items paged (limit 1000) through each of two fresh EO-MQS "
          f"processes, a page each in turn ({time.monotonic() - t0:.0f} s)\n")  # fmt: skip
    print("| malloc mmap threshold | RSS before (MiB) | RSS after (MiB) | growth | items/s |")
    print("|-----------------------|-----------------:|----------------:|-------:|--------:|")
    for name, (r0, r1, rate) in out.items():
        print(f"| {name:<21} | {r0:>16.0f} | {r1:>15.0f} | {r1 - r0:>+6.0f} | {rate:>7.0f} |")
    a, b = out.values()
    print(f"\nitems/s, fixed / glibc's own: {b[2] / a[2]:.2f}")
    sys.stdout.flush()


def bench_rustac(n: int, templates: list, work: Path, args: argparse.Namespace) -> None:
    procs = Procs()
    try:
        items = synthetic(templates, n, seed=2)
        site = rustac_site(work / "rustac", items, procs)
        fed, proc = eomqs(work, [{"name": "unsortable", "url": site, "timeout": 120}], procs)
        s = requests.Session()
        t0 = time.perf_counter()
        doc = s.post(fed + "search", json={"limit": 10}, timeout=120).json()
        cold = (time.perf_counter() - t0) * 1000
        ok = [f["id"] for f in doc["features"]] == newest(items, 10)
        ordering = doc["federation:sites"]["unsortable"].get("ordering")
        f_ms, s_ms, w_ms = [], [], []
        last = max(i["properties"]["datetime"] for i in items)
        for rnd in range(args.rounds):
            f_ms.append(first_page_ms(s, fed, rnd))
            s_ms.append(first_page_ms(s, site, rnd))
            t0 = time.perf_counter()
            s.post(
                site + "search", json={"limit": 10, "datetime": f"2025-12-01T00:00:00Z/{last}"}
            ).json()
            w_ms.append((time.perf_counter() - t0) * 1000)
        print(f"\n### rustac site (cannot sort), {n} items\n")
        print(HEADER)
        print(line("first page, limit 10, first search", cold, statistics.median(s_ms), "ms"))
        print(
            line(
                "first page, limit 10 (median ms)",
                statistics.median(f_ms),
                statistics.median(s_ms),
                "ms",
            )
        )
        print(
            line(
                "  vs the site's datetime search",
                statistics.median(f_ms),
                statistics.median(w_ms),
                "ms",
            )
        )
        print(f"\nfirst page exact (the true newest 10): {ok}; ordering stated: {ordering}; "
              f"federation:unsorted: {doc.get('federation:unsorted')}")  # fmt: skip
    finally:
        procs.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, nargs="+", default=[10000])
    p.add_argument(
        "--rustac", type=int, default=20000, help="items of the unsortable site (0: none)"
    )
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument(
        "--deep", type=int, default=1000, help="items paged with limit 100 (x3 with 1000)"
    )
    p.add_argument(
        "--pairs", type=int, default=3, help="deep-paging pairs measured (after a warm-up pair)"
    )
    p.add_argument(
        "--soak", type=int, default=100000,
        help="items paged through each of two fresh EO-MQS processes for RSS (0: no soak)",
    )  # fmt: skip
    p.add_argument("--max-items", type=int, default=2000)
    p.add_argument(
        "--data-dir", default="/tmp/cscale-bench-eodata", help="where the sample data are prepared"
    )
    args = p.parse_args()
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o755)
    templates = sample_items(data_dir)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True,
                           text=True).stdout.strip()  # fmt: skip
    print(f"EO-MQS scale benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit}"
          f"{' + uncommitted changes' if dirty else ''}, {os.cpu_count()} cores, "
          f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())} at start")  # fmt: skip
    for n in args.items:
        work = Path(tempfile.mkdtemp(prefix="cscale-bench-scale-", dir="/tmp"))
        os.chmod(work, 0o755)
        try:
            bench_pgstac(n, templates, work, args)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if args.rustac:
        work = Path(tempfile.mkdtemp(prefix="cscale-bench-rustac-", dir="/tmp"))
        try:
            bench_rustac(args.rustac, templates, work, args)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nload average {' '.join(f'{v:.1f}' for v in os.getloadavg())} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
