"""The page cache holds site pages as bytes, and a search's next page starts from the few items
its previous page left (issue #23, throughput).

Holding pages parsed, the cache added some twenty objects per cached item for Python's garbage
collector to walk at every full collection: ≈ 110 ms each against a 100k-item pgstac site,
15 ms of every 100-item page EO-MQS served, more than the rest of its work. Here a real
Federation (in this process, so its cache and the collector can be looked at) pages searches
over a real sorting STAC site (sitekit.TestSite on a loopback socket); what is counted is
objects and site requests, not time.
"""

from __future__ import annotations

import asyncio
import gc
import random
from typing import Any

from sitekit import TestSite, eomqs_settings, expected_order, make_item, serve

from cscale_extensions.services.eomqs.federation import Federation
from cscale_extensions.services.eomqs.page_cache import Entry
from cscale_extensions.services.eomqs.paging_token import TokenSigner
from cscale_extensions.services.eomqs.sites import SiteFailure, fetch_page
from cscale_extensions.services.eomqs.validation import parse_search

ITEMS = 3000


def _items(n: int) -> list[dict[str, Any]]:
    """Items with assets, as a real site's have: many nested objects each once parsed."""
    rng = random.Random(5)
    out = []
    for k in range(n):
        item = make_item("c1", k, rng)
        item["assets"] = {
            b: {"href": f"https://example.org/{k}/{b}.tif", "roles": ["data"], "title": b}
            for b in ("red", "green", "blue", "nir")
        }
        out.append(item)
    return out


def _federation(url: str, **overrides: Any) -> Federation:
    s = eomqs_settings(page_cache_ttl=600, capabilities_ttl=600, **overrides)
    return Federation([{"name": "a", "url": url, "timeout": 30}], s, TokenSigner(b"t", 600))


async def _search(fed: Federation, body: dict[str, Any], token: str | None = None):
    params = parse_search({**body, "token": token}, 10, 1000, 10000, post=True)
    return await fed.search(params)


async def _page_all(fed: Federation, body: dict[str, Any]) -> list[tuple[str, str]]:
    out, token = [], None
    while True:
        outcome = await _search(fed, body, token)
        out += [(i["collection"], i["id"]) for i in outcome.page.items]
        token = outcome.token
        if token is None:
            return out


def test_cached_pages_give_the_garbage_collector_nothing_per_item():
    """Attack: page a search whose site pages all stay cached (the cache is large enough).
    Must hold: the objects the collector tracks grow by a bounded number per cached page, not
    per cached item (parsed, 3,000 items with assets are > 40,000 objects), while the cache
    really holds the pages (bytes counted) and the answer is exact."""
    items = _items(ITEMS)
    site = TestSite(items, count=False)
    with serve(site.app) as s:

        async def main() -> tuple[int, int, list[tuple[str, str]], int, int]:
            fed = _federation(s.url, page_cache_mib=256, read_ahead_pages=1)
            await fed.start()
            try:
                await _search(fed, {"limit": 1})  # capabilities, connections: not counted
                gc.collect()
                before = len(gc.get_objects())
                got = await _page_all(fed, {"limit": 100})
                while fed._prefetching:
                    await asyncio.sleep(0.05)
                gc.collect()
                return before, len(gc.get_objects()), got, len(fed.cache), fed.cache.bytes
            finally:
                await fed.stop()

        before, after, got, entries, held = asyncio.run(main())
    assert got == expected_order(items)
    assert entries >= ITEMS // 101 and held > 2**20, (entries, held)  # the pages are cached
    assert after - before < 50 * entries, (after - before, entries)


def test_the_next_page_starts_from_the_items_the_last_one_left():
    """Attack: page on with the site's pages gone from the cache (evicted, or another EO-MQS
    replica). Must hold: the remainder kept with the search (a few items) is enough to start
    the next page — the site is asked only for its next page — and without it the next page
    is still exact, re-reading the site page it starts in."""
    items = _items(400)
    site = TestSite(items, count=False)
    body = {"limit": 100}
    with serve(site.app) as s:

        async def next_page(drop_tails: bool) -> tuple[int, list[tuple[str, str]]]:
            fed = _federation(s.url, read_ahead_pages=0)
            await fed.start()
            try:
                first = await _search(fed, body)
                assert first.token is not None
                for key in list(fed.cache._data):
                    if drop_tails or not key.startswith("tail:"):
                        fed.cache.discard(key)
                assert drop_tails or len(fed.cache) == 1  # the one remainder
                seen = site.served
                second = await _search(fed, body, first.token)
                ids = [(i["collection"], i["id"]) for i in first.page.items + second.page.items]
                return site.served - seen, ids
            finally:
                await fed.stop()

        with_tail = asyncio.run(next_page(drop_tails=False))
        without = asyncio.run(next_page(drop_tails=True))
    want = expected_order(items)[:200]
    assert with_tail == (101, want)  # the site's next page (EO-MQS asks for one item more)
    assert without == (202, want)


def test_a_cached_page_that_is_not_an_item_collection_is_not_served_again():
    """A site page read ahead is stored unparsed; one that turns out not to be an
    ItemCollection fails that search's site ("invalid response") and is dropped, so the next
    attempt asks the site again (items the site serves counted: the health watcher's requests
    are not searches)."""
    site = TestSite(_items(50), count=False)
    with serve(site.app) as s:

        async def main() -> tuple[str | None, bool, int, int]:
            fed = _federation(s.url)
            await fed.start()
            try:
                await _search(fed, {"limit": 1})
                while fed._prefetching:  # its next page, read ahead
                    await asyncio.sleep(0.05)
                site_ = fed.sites[0]
                req = {"method": "POST", "href": site_.caps.search_href, "body": {"limit": 7}}
                key = fed.cache.key("a", req)
                fed.cache.put(key, Entry(b'{"type": "FeatureCollection", "features": 3}'))
                reason = None
                try:
                    await fetch_page(fed.http, site_, req, fed.cache)
                except SiteFailure as exc:
                    reason = exc.reason
                dropped = fed.cache.get(key) is None
                seen = site.served
                page = await fetch_page(fed.http, site_, req, fed.cache)
                return reason, dropped, site.served - seen, len(page.items)
            finally:
                await fed.stop()

        reason, dropped, served, got = asyncio.run(main())
    assert reason == "invalid response" and dropped
    assert served == got == 7  # asked of the site again: a real page of 7 items
