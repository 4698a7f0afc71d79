"""Sites that cannot sort, too large to sort whole (issue #23 item 2: a 20k-item rustac site
cost 3.3 s per first page and its first page held 0 of the true newest 10 items).

EO-MQS reads such a site one datetime window at a time (windows.py). What must hold: the
exact order (the union, each item once, page after page, GET and POST, both directions, with a
user datetime range), ``ordering: eomqs-windows`` stated for the site and no
``federation:unsorted`` flag, and a first page that reads a small part of the site, not all of it.
"""

from __future__ import annotations

import random

import pytest
import requests
from sitekit import (
    TestSite,
    eomqs_server,
    expected_order,
    make_collection,
    make_item,
    page_through,
    rustac_site,
    serve,
)


def _spread(n: int, rng: random.Random) -> list[dict]:
    """Items over two years, many sharing an instant (ties decided by id)."""
    out = []
    for k in range(n):
        item = make_item("c1", k, rng)
        day, hour = rng.randrange(0, 730), rng.choice([0, 6, 12])
        y, d = 2020 + day // 365, day % 365
        item["properties"]["datetime"] = (
            f"{y}-{1 + d // 31 % 12:02d}-{1 + d % 28:02d}T{hour:02d}:00:00Z"
        )
        out.append(item)
    return out


@pytest.fixture(scope="module")
def windowed(tmp_path_factory):
    rng = random.Random(7)
    items = _spread(2500, rng)
    sorted_part = _spread(300, rng)
    for i in sorted_part:
        i["id"] = "s" + i["id"]
    unsorting = TestSite(items, sorts=False, count=False)
    sorting = TestSite(sorted_part)
    root = tmp_path_factory.mktemp("win")
    with (
        serve(unsorting.app) as u,
        serve(sorting.app) as s,
        rustac_site(root / "r", [make_collection("c1")], items[:1200]) as r,
    ):
        entries = [
            {"name": "unsorting", "url": u.url},
            {"name": "sorting", "url": s.url},
            {"name": "rustac", "url": r},
        ]
        yield entries, unsorting, items, sorted_part


@pytest.mark.parametrize("sort", ["-datetime", "datetime"])
def test_unsortable_sites_beyond_the_limit_are_merged_exactly_by_windows(windowed, sort):
    entries, _, items, sorted_part = windowed
    want = expected_order(items + sorted_part, sort)
    direction = "desc" if sort.startswith("-") else "asc"
    with eomqs_server(entries, unsorted_max_items=400) as srv:
        pages = page_through(
            srv.url,
            {"limit": 97, "sortby": [{"field": "properties.datetime", "direction": direction}]},
        )
    got = [(f["collection"], f["id"]) for _, d in pages for f in d["features"]]
    assert got == want
    first = pages[0][1]
    assert first["federation:sites"]["unsorting"]["ordering"] == "eomqs-windows"
    assert first["federation:sites"]["rustac"]["ordering"] == "eomqs-windows"
    assert not any(d.get("federation:unsorted") for _, d in pages)


def test_windows_respect_a_user_datetime_range_over_get(windowed):
    entries, _, items, sorted_part = windowed
    lo, hi = "2020-06-01T00:00:00Z", "2021-03-01T00:00:00Z"
    inside = [i for i in items + sorted_part if lo <= i["properties"]["datetime"] <= hi]
    want = expected_order(inside)
    with eomqs_server(entries, unsorted_max_items=400) as srv:
        pages = page_through(srv.url, {"limit": 50, "datetime": f"{lo}/{hi}"}, method="GET")
    assert [(f["collection"], f["id"]) for _, d in pages for f in d["features"]] == want


def test_a_first_page_reads_a_window_not_the_whole_site(windowed):
    """The true newest 10 items, having read far fewer than the site's 2,500 items."""
    entries, unsorting, items, sorted_part = windowed
    with eomqs_server(entries[:1], unsorted_max_items=400, page_cache_ttl=0) as srv:
        before = unsorting.served
        pages = page_through(srv.url, {"limit": 10}, max_pages=1)
        read = unsorting.served - before
    got = [(f["collection"], f["id"]) for f in pages[0][1]["features"]]
    assert got == expected_order(items)[:10]
    assert read < 1000, read


def _searches(site: TestSite) -> int:
    return sum(1 for b in site.bodies if "limit" in b)


@pytest.fixture(scope="module")
def years_ago():
    """An unsorting site whose items (and collection extent, 2021-01-01/2021-03-31) end years
    before now, 3,000 items in February and March 2021."""
    rng = random.Random(11)
    items = [make_item("c1", k, rng) for k in range(3000)]
    for item in items:
        month, day = rng.choice([(2, 28), (3, 31)])
        item["properties"]["datetime"] = (
            f"2021-{month:02d}-{rng.randrange(1, day + 1):02d}T{rng.randrange(24):02d}:00:00Z"
        )
    site = TestSite(items, sorts=False, count=False)
    with serve(site.app) as srv:
        yield site, srv.url


def test_windows_start_at_the_extent_end_not_at_now(years_ago):
    """Issue #23 item 2: the windows started at now and doubled back through ~5 empty years
    (a dozen site requests per first page, 3.3 s at 20k rustac items). They start at the
    collection's temporal extent: the first page, exact, costs at most 2 site searches, and a
    second search (density learnt) 1."""
    site, url = years_ago
    want = expected_order(site.items)
    with eomqs_server([{"name": "u", "url": url}], unsorted_max_items=400, page_cache_ttl=0) as srv:
        page_through(srv.url, {"limit": 1}, max_pages=1)  # collections known (health watcher)
        for limit, most in ((10, 2), (100, 1), (10, 1)):
            site.bodies.clear()
            doc = requests.post(srv.url + "search", json={"limit": limit}, timeout=60).json()
            assert [(f["collection"], f["id"]) for f in doc["features"]] == want[:limit]
            assert doc["federation:sites"]["u"]["ordering"] == "eomqs-windows"
            assert _searches(site) <= most, list(site.bodies)


def test_a_stale_extent_does_not_hide_newer_items(years_ago):
    """Items newer than the collection's extent says (metadata not refreshed) come first all the
    same: the first window reaches from now to the extent's end, so the metadata only saves
    requests; paging through gives the exact union."""
    site, url = years_ago
    rng = random.Random(12)
    late = []
    for k in range(150):
        item = make_item("c1", 5000 + k, rng)
        item["properties"]["datetime"] = f"2023-0{1 + k % 9}-{1 + k % 28:02d}T10:00:00Z"
        late.append(item)
    old = site.items
    site.items = old + late
    try:
        want = expected_order(site.items)
        with eomqs_server(
            [{"name": "u", "url": url}], unsorted_max_items=400, page_cache_ttl=0
        ) as srv:
            pages = page_through(srv.url, {"limit": 250})
    finally:
        site.items = old
    assert [(f["collection"], f["id"]) for _, d in pages for f in d["features"]] == want
    assert not any(d.get("federation:unsorted") for _, d in pages)
