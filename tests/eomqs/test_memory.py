"""EO-MQS's memory does not grow with the pages it serves (issue #23: 140 -> 2,289 MiB after
179k items, an OOM kill after a week of normal use).

A soak: EO-MQS as its own process (its RSS measured with psutil) over a real sorting STAC site
(sitekit.TestSite under uvicorn) and a real rustac site that cannot sort (EO-MQS sorts its items
itself, in the same page cache), paged through completely several times with different page
sizes and sort orders (one cycle), then the same cycle again: > 100k items served in all. What
must hold: the second cycle ends less than ``FLAT_MIB`` above the highest RSS of the first
(memory does not depend on how many pages were served; the highest, not the last sample, so a
collection that happens to run at the cycle's end does not lower the baseline), and the RSS never exceeds its start by more than
the page cache budget plus ``WORKING_MIB`` (pages being parsed and rendered, the sorted list
of the rustac site being built). Before the fix, the cache (512 entries) alone held hundreds of
MiB of these pages.

The unit tests check the cache's byte accounting itself, which the soak only sees through RSS.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests
import yaml
from sitekit import TestSite, make_collection, make_item, rustac_site, serve

from cscale_extensions.net import free_port, http_ready, wait_for
from cscale_extensions.services.eomqs.page_cache import ENTRY_OVERHEAD, Entry, PageCache

REPO = Path(__file__).resolve().parents[2]
CACHE_MIB = 32
FLAT_MIB = 16  # RSS growth allowed over the second cycle
WORKING_MIB = 96  # RSS above the start allowed besides the cache (pages in flight, sorting)
SORTING_ITEMS = 30_000
RUSTAC_ITEMS = 6_000


def _bulky(item: dict, n: int) -> dict:
    """A sample-sized item (~1.5 kB of JSON: a few assets, as the sample items have)."""
    item["properties"]["eo:cloud_cover"] = n % 100
    item["assets"] = {
        band: {
            "href": f"https://example.org/data/{item['id']}/{band}.tif",
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
            "title": f"band {band}",
        }
        for band in ("red", "green", "blue", "nir08", "swir16")
    }
    return item


def _rss_mib(proc: psutil.Process) -> float:
    return proc.memory_info().rss / 2**20


def _page_all(url: str, body: dict, proc: psutil.Process, samples: list[tuple[int, float]]):
    """Page a POST search to its end, sampling EO-MQS's RSS after every page; items served."""
    s = requests.Session()
    r = s.post(url + "search", json=body, timeout=120)
    served = samples[-1][0] if samples else 0
    seen = 0
    while True:
        assert r.status_code == 200, r.text[:300]
        doc = r.json()
        n = len(doc["features"])
        seen += n
        served += n
        samples.append((served, _rss_mib(proc)))
        nxt = [ln for ln in doc["links"] if ln["rel"] == "next"]
        if not nxt:
            return seen
        r = s.post(nxt[0]["href"], json=nxt[0]["body"], timeout=120)


@pytest.mark.slow
def test_rss_stays_flat_while_paging_100k_items_through_real_sites(tmp_path):
    """Attack: page a large federation again and again (the way a week of notebook use does).
    Must hold: EO-MQS's RSS stops growing once its page cache is full (growth after warm-up
    < FLAT_MIB) and stays within the cache budget plus a working set."""
    rng = random.Random(23)
    sorting = TestSite(
        [_bulky(make_item("big", n, rng), n) for n in range(SORTING_ITEMS)],
        collections=("big",),
        count=False,
    )
    ritems = [_bulky(make_item("small", n, rng), n) for n in range(RUSTAC_ITEMS)]
    with (
        serve(sorting.app) as big,
        rustac_site(tmp_path / "rustac", [make_collection("small")], ritems) as small,
    ):
        port = free_port()
        cfg = tmp_path / "config.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "platform": {"data_dir": str(tmp_path / "data")},
                    "federation": {
                        "embedded_sites": False,
                        "sites": [
                            {"name": "big", "url": big.url, "timeout": 60},
                            {"name": "small", "url": small, "timeout": 60},
                        ],
                    },
                    "eomqs": {
                        "token_secret": "soak",
                        "log_level": "WARNING",
                        "page_cache_mib": CACHE_MIB,
                    },
                }
            )
        )
        log = open(tmp_path / "eomqs.log", "wb")  # noqa: SIM115
        child = subprocess.Popen(
            [sys.executable, "-m", "cscale_extensions.services.eomqs", "--config", str(cfg)]
            + ["--port", str(port)],
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}/"
        try:
            assert wait_for(lambda: http_ready(url, 1), 60), (tmp_path / "eomqs.log").read_text()
            proc = psutil.Process(child.pid)
            requests.get(url + "collections", timeout=60).raise_for_status()
            start = _rss_mib(proc)
            samples: list[tuple[int, float]] = []
            total = SORTING_ITEMS + RUSTAC_ITEMS
            t0 = time.monotonic()
            runs = [
                {"limit": 1000},
                {"limit": 100, "sortby": [{"field": "id", "direction": "asc"}]},
                {"limit": 1000, "sortby": [{"field": "properties.datetime", "direction": "asc"}]},
            ]
            for body in runs:
                assert _page_all(url, body, proc, samples) == total
            after_first = samples[-1]
            first_cycle_high = max(rss for _, rss in samples)
            for body in runs:
                assert _page_all(url, body, proc, samples) == total
            took = time.monotonic() - t0
        finally:
            child.terminate()
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)
            log.close()
    served, end = samples[-1]
    warm = after_first[1]
    peak = max(rss for _, rss in samples)
    curve = ", ".join(
        f"{n // 1000}k: {rss:.0f}" for n, rss in samples[:: max(1, len(samples) // 12)]
    )
    report = (
        f"{served} items in {took:.0f} s; RSS (MiB) start {start:.0f}, after the first cycle "
        f"({after_first[0]} items) {warm:.0f} (its highest {first_cycle_high:.0f}), peak {peak:.0f}, end {end:.0f}; {curve}"
    )
    print(report)
    assert served >= 100_000, report
    assert end - first_cycle_high < FLAT_MIB, report
    assert peak - start < CACHE_MIB + WORKING_MIB, report


# -- the cache's accounting ----------------------------------------------------------------
def _page(nbytes: int) -> Entry:
    return Entry(b"x" * nbytes)


def test_page_cache_is_bounded_in_bytes_not_entries():
    """Attack: pages of 1,000 items each fill a cache bounded by entries to gigabytes.
    Must hold: the estimated bytes held never exceed the budget, whatever the page sizes."""
    cache = PageCache(ttl=60, max_bytes=10 * 2**20)
    for n in range(500):
        cache.put(f"k{n}", _page(1_200_000 + n))
        assert cache.bytes <= cache.max_bytes
    assert 0 < len(cache) <= 9
    assert cache.get("k499") is not None and cache.get("k0") is None
    assert cache.bytes == sum(len(p.raw) + ENTRY_OVERHEAD for _, p in cache._data.values())


def test_a_page_larger_than_the_budget_is_not_kept_and_replacing_a_key_recounts():
    cache = PageCache(ttl=60, max_bytes=2**20)
    cache.put("huge", _page(2**20))
    assert len(cache) == 0 and cache.bytes == 0
    cache.put("a", _page(1000))
    cache.put("a", _page(2000))
    assert len(cache) == 1 and cache.bytes == 2000 + ENTRY_OVERHEAD


def test_expired_pages_are_given_back(monkeypatch):
    """After page_cache_ttl an idle EO-MQS holds no pages (the issue's RSS stayed up after the
    TTL: expired entries were kept until pushed out)."""
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    cache = PageCache(ttl=10, max_bytes=2**30)
    for n in range(20):
        cache.put(f"k{n}", _page(10_000))
    clock[0] += 11
    assert cache.purge() == 20
    assert len(cache) == 0 and cache.bytes == 0
