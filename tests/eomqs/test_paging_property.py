"""Property: paging through a federation of random item sets returns exactly their union, in
order, with no duplicates, no gaps and no empty page (real servers, datasets swapped per example)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sitekit import TestSite, eomqs_server, expected_order, page_through, serve

SITES = ("sorted-get", "sorted-post", "unsorted")
DATES = [f"2021-01-{d:02d}T00:00:00Z" for d in (1, 2, 3, 5, 8)]


@pytest.fixture(scope="module")
def federation():
    sites = {
        "sorted-get": TestSite(collections=["c1", "c2"], paging="GET"),
        "sorted-post": TestSite(collections=["c1", "c2"], paging="POST", methods=("POST",)),
        "unsorted": TestSite(collections=["c1", "c2"], sorts=False),
    }
    with (
        serve(sites["sorted-get"].app) as a,
        serve(sites["sorted-post"].app) as b,
        serve(sites["unsorted"].app) as c,
    ):
        entries = [{"name": n, "url": s.url} for n, s in zip(SITES, (a, b, c), strict=True)]
        with eomqs_server(entries, page_cache_ttl=0) as srv:
            yield sites, srv


def _item(coll: str, n: int, dt: str) -> dict:
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": f"i{n}",
        "collection": coll,
        "geometry": {"type": "Point", "coordinates": [0, 0]},
        "bbox": [0, 0, 0, 0],
        "properties": {"datetime": dt},
        "links": [],
        "assets": {},
    }


pool_entry = st.tuples(
    st.sampled_from(["c1", "c2"]),
    st.integers(0, 30),
    st.sampled_from(DATES),
    st.sets(st.sampled_from(SITES), min_size=1),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    pool=st.lists(pool_entry, max_size=45, unique_by=lambda e: (e[0], e[1])),
    limit=st.integers(1, 7),
    sort=st.sampled_from(["-datetime", "+datetime", "id", "-id"]),
    method=st.sampled_from(["GET", "POST"]),
)
def test_paging_returns_the_union_in_order(federation, pool, limit, sort, method):
    sites, srv = federation
    for name, site in sites.items():
        site.items = [_item(c, n, dt) for c, n, dt, held in pool if name in held]
    all_items = [_item(c, n, dt) for c, n, dt, _ in pool]
    sortby = sort if sort.startswith(("-", "+")) else "+" + sort
    sortby = sortby.replace("datetime", "properties.datetime")
    body = (
        {"limit": limit, "sortby": sortby}
        if method == "GET"
        else {
            "limit": limit,
            "sortby": [{"field": sortby[1:], "direction": "desc" if sortby[0] == "-" else "asc"}],
        }
    )
    pages = page_through(srv.url, body, method)
    got = []
    for i, (status, doc) in enumerate(pages):
        assert status == 200, doc
        assert doc["federation:missing"] == []
        assert "federation:unsorted" not in doc
        n = len(doc["features"])
        assert n <= limit
        assert n > 0 or (i == 0 and not all_items), "empty page before the end"
        got += [(f["collection"], f["id"]) for f in doc["features"]]
    assert got == expected_order(all_items, sort.lstrip("+"))
    # provenance: every site holding an item is named
    holders = {(c, f"i{n}"): sorted(h) for c, n, _, h in pool}
    for _, doc in pages:
        for f in doc["features"]:
            assert (
                sorted(f["properties"]["federation:sites"]) == holders[(f["collection"], f["id"])]
            )
