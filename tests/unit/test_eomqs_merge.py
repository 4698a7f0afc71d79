"""The federated search's merge and paging, run through the real Federation, Merger, page cache
and token signer, with no site server: every site page is put in the page cache beforehand,
as a sorting STAC site would have answered it (the pages a search asks for are a function of
the search, so they are computed with the federation's own request bodies).

A page missing from the cache goes to the site's URL, where nothing listens: a real
"unreachable" failure, used on purpose to fail a site in the middle of a search. The same
paging over real HTTP sites is tests/eomqs/test_paging_property.py (component level).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cscale_extensions import config
from cscale_extensions.services.eomqs.errors import ApiError
from cscale_extensions.services.eomqs.federation import Federation
from cscale_extensions.services.eomqs.merge import Merger
from cscale_extensions.services.eomqs.ordering import key_function
from cscale_extensions.services.eomqs.page_cache import Entry, PageCache
from cscale_extensions.services.eomqs.paging_token import TokenSigner
from cscale_extensions.services.eomqs.sites import Capabilities
from cscale_extensions.services.eomqs.validation import parse_search

DATES = [f"2021-01-{d:02d}T00:00:00Z" for d in (1, 2, 3, 5, 8)]
SORTS = {
    "-datetime": [{"field": "properties.datetime", "direction": "desc"}],
    "+datetime": [{"field": "properties.datetime", "direction": "asc"}],
    "-id": [{"field": "id", "direction": "desc"}],
    "+cloud": [{"field": "properties.eo:cloud_cover", "direction": "asc"}],
    "-cloud": [{"field": "properties.eo:cloud_cover", "direction": "desc"}],
}


def item(coll: str, n: int, dt: str, cloud: float | None) -> dict[str, Any]:
    props: dict[str, Any] = {"datetime": dt}
    if cloud is not None:
        props["eo:cloud_cover"] = cloud
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": f"i{n:02d}",
        "collection": coll,
        "geometry": {"type": "Point", "coordinates": [0, 0]},
        "bbox": [0, 0, 0, 0],
        "properties": props,
        "links": [],
        "assets": {"b": {"href": "b.tif"}, "a": {"href": "a.tif"}},
    }


def expected(items: list[dict[str, Any]], sort: str) -> list[tuple[str, str]]:
    """(collection, id) of the union in the federation's order, worked out here with stable
    sorts, least significant key first: collection, id, then the sort field (missing last)."""
    uniq = sorted(
        {(i["collection"], i["id"]): i for i in items}.values(), key=lambda i: i["collection"]
    )
    uniq.sort(key=lambda i: i["id"], reverse=sort == "-id")
    if sort.endswith("datetime"):
        uniq.sort(key=lambda i: i["properties"]["datetime"], reverse=sort[0] == "-")
    elif sort.endswith("cloud"):
        have = [i for i in uniq if "eo:cloud_cover" in i["properties"]]
        have.sort(key=lambda i: i["properties"]["eo:cloud_cover"], reverse=sort[0] == "-")
        uniq = have + [i for i in uniq if "eo:cloud_cover" not in i["properties"]]
    return [(i["collection"], i["id"]) for i in uniq]


class CachedFederation:
    """A real Federation whose sites answer only from its page cache (see module doc)."""

    def __init__(self, names: list[str], dead_url: str, secret: bytes = b"unit"):
        s = config.load(None)["eomqs"] | {"page_cache_ttl": 3600, "capabilities_ttl": 3600}
        entries = [{"name": n, "url": f"{dead_url}/{n}/", "timeout": 2} for n in names]
        self.fed = Federation(entries, s, TokenSigner(secret, 3600))
        for site in self.fed.sites:
            site.caps = Capabilities(
                search_href=site.url + "search",
                method="POST",
                collections_href=site.url + "collections",
                sorts=True,
                fetched=time.monotonic(),
            )

    def publish(
        self,
        name: str,
        items: list[dict[str, Any]],
        body: dict[str, Any],
        fail_after: int | None = None,
    ) -> None:
        """Put site ``name``'s answer to the search ``body`` in the cache, sorted as the
        search asks, in pages of the size the federation requests; with ``fail_after``, only
        that many pages (the next one is asked of the site, which does not answer)."""
        params = parse_search(body, 10, 1000, 1000, post=True)
        site = self.fed.by_name[name]
        merger = Merger(self.fed.client, self.fed.cache, params, 0)
        cursor = merger.new_cursor(site, None)
        size = cursor.body["limit"]
        ordered = sorted(items, key=key_function(params.sortby))
        req = merger.first_request(cursor)
        chunks = [ordered[k : k + size] for k in range(0, len(ordered), size)] or [[]]
        for n, chunk in enumerate(chunks):
            if fail_after is not None and n >= fail_after:
                return
            last = n == len(chunks) - 1
            nxt = None if last else {**req, "body": {**cursor.body, "page": n + 1}}
            doc = json.dumps({"type": "FeatureCollection", "features": chunk}).encode()
            entry = Entry(doc, nxt, len(ordered), checked=True)
            self.fed.cache.put(PageCache.key(name, req), entry)
            req = nxt

    async def pages(self, body: dict[str, Any], max_pages: int = 200):
        """Every page of the search ``body``, following the tokens (outcomes in order)."""
        await self.fed.client.start()
        try:
            out, token = [], None
            for _ in range(max_pages):
                params = parse_search({**body, "token": token}, 10, 1000, 1000, post=True)
                outcome = await self.fed.search(params)
                out.append(outcome)
                token = outcome.token
                if token is None:
                    return out
            raise AssertionError("the search did not end")
        finally:
            await self.fed.stop()


entry = st.tuples(
    st.sampled_from(["c1", "c2"]),
    st.integers(0, 40),
    st.sampled_from(DATES),
    st.one_of(st.none(), st.integers(0, 100), st.sampled_from([0.5, 12.25, 99.9])),
    st.sets(st.sampled_from(["a", "b", "c"]), min_size=1),
)


@settings(max_examples=60, deadline=None)
@given(
    pool=st.lists(entry, max_size=40, unique_by=lambda e: (e[0], e[1])),
    limit=st.integers(1, 9),
    sort=st.sampled_from(sorted(SORTS)),
)
def test_paging_returns_the_union_once_in_order_naming_every_holder(
    closed_port_url, pool, limit, sort
):
    fed = CachedFederation(["a", "b", "c"], closed_port_url)
    body = {"limit": limit, "sortby": SORTS[sort]}
    held = {(c, f"i{n:02d}"): sorted(h) for c, n, _, _, h in pool}
    every = [item(c, n, dt, cl) for c, n, dt, cl, _ in pool]
    for name in "abc":
        fed.publish(name, [item(c, n, dt, cl) for c, n, dt, cl, h in pool if name in h], body)
    outcomes = asyncio.run(fed.pages(body))
    got = []
    for k, o in enumerate(outcomes):
        feats = o.page.items
        assert len(feats) <= limit
        assert feats or (k == 0 and not pool), "an empty page before the end"
        assert (o.token is None) == (k == len(outcomes) - 1)
        assert not any(c.flagged or c.mode == "x" for c in o.queried)
        for f in feats:
            key = (f["collection"], f["id"])
            assert f["properties"]["federation:sites"] == held[key]
            assert list(f["assets"]) == ["a", "b"]  # one asset order, whatever the site's
            got.append(key)
    assert got == expected(every, sort)


def test_a_site_failing_mid_search_is_reported_and_not_asked_again(closed_port_url):
    """Site b answers its first page, then not: its items so far are in the results, the
    other site's all of them, in order; b is failed once and stays failed in the token."""
    fed = CachedFederation(["a", "b"], closed_port_url)
    body = {"limit": 3, "sortby": SORTS["+datetime"]}
    a = [item("c1", n, DATES[n % 5], None) for n in range(0, 12, 2)]
    b = [item("c1", n, DATES[n % 5], None) for n in range(1, 12, 2)]
    fed.publish("a", a, body)
    fed.publish("b", b, body, fail_after=1)
    outcomes = asyncio.run(fed.pages(body))
    got = [(f["collection"], f["id"]) for o in outcomes for f in o.page.items]
    first_b_page = sorted(b, key=lambda i: (i["properties"]["datetime"], i["id"]))[:4]
    assert got == expected(a + first_b_page, "+datetime")
    failures = [(o.queried[1].mode, o.queried[1].reason, o.queried[1].failed_now) for o in outcomes]
    assert ("x", "unreachable", True) in failures
    assert [f for f in failures if f[2]] == [("x", "unreachable", True)]  # failed once
    after = failures.index(("x", "unreachable", True))
    assert all(mode == "x" for mode, _, _ in failures[after:])


def test_every_site_failing_is_one_clear_502(closed_port_url):
    fed = CachedFederation(["a", "b"], closed_port_url)
    with pytest.raises(ApiError) as err:
        asyncio.run(fed.pages({"limit": 5}))
    assert err.value.status == 502 and err.value.code == "AllSitesFailed"
    assert "a: unreachable" in err.value.description and "b: unreachable" in err.value.description
    assert err.value.extra["federation:missing"] == ["a", "b"]


async def _first_page(fed: CachedFederation, body: dict[str, Any]):
    await fed.fed.client.start()
    try:
        return await fed.fed.search(parse_search(body, 10, 1000, 1000, post=True))
    finally:
        await fed.fed.stop()


def _federation(names: list[str], url: str, body: dict[str, Any], secret=b"unit"):
    fed = CachedFederation(names, url, secret)
    for n in names:
        fed.publish(n, [item("c1", k, DATES[k % 5], k) for k in range(8)], body)
    return fed


def test_tokens_are_bound_to_the_search_and_the_federation(closed_port_url):
    body = {"limit": 2, "sortby": SORTS["-datetime"]}
    token = asyncio.run(_first_page(_federation(["a", "b"], closed_port_url, body), body)).token
    assert token

    def refused(names: list[str], search: dict[str, Any], secret=b"unit") -> ApiError:
        fed = _federation(names, closed_port_url, search, secret)
        with pytest.raises(ApiError) as err:
            asyncio.run(_first_page(fed, {**search, "token": token}))
        assert err.value.status == 400
        return err.value

    other = refused(["a", "b"], {"limit": 2, "sortby": SORTS["+cloud"]})
    assert other.code == "InvalidToken" and "different search" in other.description
    moved = refused(["a", "c"], body)
    assert moved.code == "StaleToken" and "federation changed" in moved.description
    forged = refused(["a", "b"], body, secret=b"another")
    assert forged.code == "InvalidToken" and "forged" in forged.description
    # the same search in the same federation (a new process, the same secret): the next page
    nxt = asyncio.run(
        _first_page(_federation(["a", "b"], closed_port_url, body), {**body, "token": token})
    )
    every = [item("c1", k, DATES[k % 5], k) for k in range(8)]
    assert [(f["collection"], f["id"]) for f in nxt.page.items] == expected(every, "-datetime")[2:4]
