"""EO-MQS reads a paged search ahead (eomqs.read_ahead_pages): after a client's later pages it
asks the site for up to that many pages in a row before the client asks, so the site works
while EO-MQS and the client handle the current page; the answers are the same at every depth.
Counted in site requests (a real site over a socket), not timed."""

from __future__ import annotations

import random
import time

import pytest
import requests
from sitekit import TestSite, eomqs_server, expected_order, make_item, serve


def _quiet(site: TestSite, settle: float = 0.4, limit: float = 20) -> int:
    """The site's request count once no request has arrived for ``settle`` seconds."""
    deadline = time.monotonic() + limit
    seen = site.requests
    while time.monotonic() < deadline:
        time.sleep(settle)
        if site.requests == seen:
            return seen
        seen = site.requests
    raise AssertionError("the site kept being asked")


def _run(depth: int) -> tuple[list[int], list[str]]:
    """Two client pages, each followed by a quiet moment (site requests counted then), then
    the rest of the search; the site requests after each page, and every id in order."""
    rng = random.Random(7)
    items = [make_item("c1", n, rng) for n in range(60)]
    site = TestSite(items, count=False)
    with serve(site.app) as s, eomqs_server(
        [{"name": "a", "url": s.url}], read_ahead_pages=depth
    ) as srv:
        counts, ids = [], []
        doc = requests.post(srv.url + "search", json={"limit": 10}, timeout=30).json()
        while True:
            ids += [f["id"] for f in doc["features"]]
            if len(counts) < 2:
                counts.append(_quiet(site))
            nxt = [ln for ln in doc["links"] if ln["rel"] == "next"]
            if not nxt:
                break
            doc = requests.post(nxt[0]["href"], json=nxt[0]["body"], timeout=30).json()
        assert ids == [iid for _, iid in expected_order(items)]  # every depth: the same answer
        return counts, ids


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_later_pages_are_read_that_many_pages_ahead(depth):
    none, _ = _run(0)
    ahead, _ = _run(depth)
    # a first page: one site page ahead (a client that asks for one page costs one more)
    assert ahead[0] == none[0] + 1
    # after the second page (the client is paging): `depth` pages in a row are fetched ahead
    assert ahead[1] == none[1] + depth
