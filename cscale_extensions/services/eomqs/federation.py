"""The federation: its sites, the pooled HTTP client, caches, and the fan-out of every request."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from cscale_extensions.services.eomqs.client import HttpClient
from cscale_extensions.services.eomqs.collections import merge_collections
from cscale_extensions.services.eomqs.errors import ApiError, bad_request
from cscale_extensions.services.eomqs.links import SiteLinks
from cscale_extensions.services.eomqs.merge import Cursor, Merger, PageResult
from cscale_extensions.services.eomqs.page_cache import PageCache
from cscale_extensions.services.eomqs.paging_token import TokenSigner
from cscale_extensions.services.eomqs.sites import (
    Health,
    Site,
    SiteFailure,
    capabilities,
    check_health,
    fetch_collections,
    fetch_item,
    fetch_queryables,
    fetch_raw,
    parse_page,
)
from cscale_extensions.services.eomqs.validation import SearchParams
from cscale_extensions.services.eomqs.windows import extent_us

log = logging.getLogger("cscale.eomqs")
MIB = 1024 * 1024
#: what every search can filter and sort on, whatever the sites say
CORE_QUERYABLES: dict[str, Any] = {
    "id": {"title": "Item id", "type": "string"},
    "collection": {"title": "Collection id", "type": "string"},
    "datetime": {"title": "Acquisition time", "type": "string", "format": "date-time"},
    "geometry": {"title": "Footprint", "description": "GeoJSON geometry (CRS84)"},
}


@dataclass
class CollectionsView:
    collections: dict[str, dict[str, Any]]
    missing: dict[str, SiteFailure]  # sites whose collections are unknown (never fetched)
    stale: dict[str, SiteFailure]  # sites whose last known collections are shown


@dataclass
class SearchOutcome:
    page: PageResult
    token: str | None
    queried: list[Cursor]
    unknown_collections: list[str]
    page_filtered: bool = False  # the search has a CQL2 filter


class Federation:
    """Everything EO-MQS knows about its sites; one per app."""

    def __init__(
        self, site_entries: list[dict[str, Any]], settings: dict[str, Any], signer: TokenSigner
    ):
        self.sites = [Site.from_config(e) for e in site_entries]
        self.by_name = {s.name: s for s in self.sites}
        self.links = SiteLinks(s.url for s in self.sites)
        self.s = settings
        self.signer = signer
        self.client = HttpClient(settings["max_connections"])
        self.cache = PageCache(settings["page_cache_ttl"], int(settings["page_cache_mib"] * MIB))
        self._site_colls: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._colls: CollectionsView | None = None
        self._colls_at = 0.0
        self._colls_lock = asyncio.Lock()
        self._refresh_task: asyncio.Task | None = None
        self._prefetching: set[asyncio.Future] = set()
        self._queryables: tuple[float, dict[str, Any], list[str]] | None = None
        raw = json.dumps(sorted((s.name, s.url) for s in self.sites))
        self.fingerprint = hashlib.sha256(raw.encode()).hexdigest()[:16]

    async def start(self) -> None:
        await self.client.start()
        self._watch = asyncio.ensure_future(self._watch_health())

    async def _watch_health(self) -> None:
        """Check every site's health now and then every ``health_ttl`` seconds (landing page)."""
        while True:
            try:
                await self.health()
                await self.collections()
                self.cache.purge()
            except Exception:  # noqa: BLE001 - a watcher must outlive any one failure
                log.exception("site health check failed")
            await asyncio.sleep(max(1.0, float(self.s["health_ttl"])))

    async def stop(self) -> None:
        watch = getattr(self, "_watch", None)
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        for task in list(self._prefetching):
            task.cancel()
        await self.client.close()

    @property
    def http(self) -> HttpClient:
        return self.client

    # -- collections ------------------------------------------------------------------------
    async def _site_collections(self, site: Site) -> list[dict[str, Any]]:
        colls = await fetch_collections(self.http, site, self.s["capabilities_ttl"])
        self._site_colls[site.name] = (time.monotonic(), colls)
        return colls

    async def collections(self, refresh: bool = False) -> CollectionsView:
        """The merged collections, refreshed from every site after ``collections_ttl``.

        An expired list is still answered at once while a refresh runs in the background, so a
        slow site does not hold up every request once per ``collections_ttl``.
        """
        ttl = self.s["collections_ttl"]
        if not refresh and self._colls:
            expired = time.monotonic() - self._colls_at >= ttl
            idle = self._refresh_task is None or self._refresh_task.done()
            if expired and idle and not self._colls_lock.locked():
                self._refresh_task = asyncio.create_task(self._load_collections(ttl))
            return self._colls
        return await self._load_collections(ttl, force=refresh)

    async def _load_collections(self, ttl: float, force: bool = False) -> CollectionsView:
        async with self._colls_lock:
            if not force and self._colls and time.monotonic() - self._colls_at < ttl:
                return self._colls
            results = await asyncio.gather(
                *(self._site_collections(s) for s in self.sites), return_exceptions=True
            )
            per_site, missing, stale = [], {}, {}
            for site, res in zip(self.sites, results, strict=True):
                if isinstance(res, SiteFailure):
                    known = self._site_colls.get(site.name)
                    if known:
                        stale[site.name] = res
                        per_site.append((site, known[1]))
                    else:
                        missing[site.name] = res
                elif isinstance(res, BaseException):
                    raise res
                else:
                    per_site.append((site, res))
            self._colls = CollectionsView(merge_collections(per_site, self.links), missing, stale)
            self._colls_at = time.monotonic()
            return self._colls

    # -- queryables --------------------------------------------------------------------------
    async def queryables(self) -> tuple[dict[str, Any], list[str]]:
        """The queryable properties of the whole federation (each site's ``/queryables``
        merged, the first site in configuration order defining a name wins, plus the core
        ones every search can filter on) and the sites whose queryables are unknown now;
        cached for ``collections_ttl``."""
        hit = self._queryables
        if hit is not None and time.monotonic() - hit[0] < self.s["collections_ttl"]:
            return hit[1], hit[2]

        async def one(site: Site) -> dict[str, Any] | SiteFailure:
            try:
                return await fetch_queryables(self.http, site)
            except SiteFailure as exc:
                return exc

        results = await asyncio.gather(*(one(s) for s in self.sites))
        merged: dict[str, Any] = dict(CORE_QUERYABLES)
        missing = []
        for site, res in zip(self.sites, results, strict=True):
            if isinstance(res, SiteFailure):
                missing.append(site.name)
                continue
            for name, schema in res.items():
                merged.setdefault(name, schema)
        self._queryables = (time.monotonic(), merged, missing)
        return merged, missing

    # -- health -----------------------------------------------------------------------------
    async def health(self) -> dict[str, Health]:
        results = await asyncio.gather(
            *(
                check_health(self.http, s, self.s["health_ttl"], self.s["capabilities_ttl"])
                for s in self.sites
            )
        )
        return dict(zip((s.name for s in self.sites), results, strict=True))

    # -- search -----------------------------------------------------------------------------
    def resolve_collections(
        self, requested: list[str], view: CollectionsView
    ) -> tuple[dict[str, list[str]], list[str]]:
        """Site name -> the plain collection ids it is asked for, and the requested ids nobody
        holds. ``SITE|collection`` (the original MQS's ids, site name in any case) asks that
        site only for its collection; a plain id asks every holder."""
        per_site: dict[str, list[str]] = {}
        unknown: list[str] = []
        for cid in requested:
            coll = view.collections.get(cid)
            if coll is not None:
                holders = coll["federation:sites"]
                plain = cid
            else:
                site_name, sep, plain = cid.partition("|")
                site = self.by_name.get(site_name.strip().lower()) if sep else None
                coll = view.collections.get(plain) if site else None
                if site is None or coll is None or site.name not in coll["federation:sites"]:
                    unknown.append(cid)
                    continue
                holders = [site.name]
            for name in holders:
                got = per_site.setdefault(name, [])
                if plain not in got:
                    got.append(plain)
        return per_site, unknown

    async def _targets(
        self, params: SearchParams
    ) -> tuple[list[tuple[Site, list[str] | None]], list[str]]:
        """The sites a search goes to, with the requested collections each holds, and the
        requested collections no site holds (reported, not searched; 400 when all are)."""
        if not params.collections:
            return [(s, None) for s in self.sites], []
        view = await self.collections()
        per_site, unknown = self.resolve_collections(params.collections, view)
        if not per_site:
            extra = ""
            if view.missing:
                extra = f" (sites {', '.join(sorted(view.missing))} are unreachable; their collections are unknown)"
            raise bad_request(
                "UnknownCollection", f"no site holds the collection(s) {', '.join(unknown)}{extra}"
            )
        return [(s, per_site[s.name]) for s in self.sites if s.name in per_site], unknown

    async def _caps(self, site: Site) -> SiteFailure | None:
        try:
            await capabilities(self.http, site, self.s["capabilities_ttl"])
            return None
        except SiteFailure as exc:
            return exc

    async def search(self, params: SearchParams) -> SearchOutcome:
        """One page of a federated search (the first, or the one its token points to)."""
        qhash = params.query_hash()
        if params.token:
            state = self.signer.load(params.token, qhash, self.fingerprint)
            if not state or any(name not in self.by_name for name in state):
                raise bad_request(
                    "StaleToken", "the paging token names sites that are not in the federation"
                )
            held: dict[str, list[str]] = {}
            unknown: list[str] = []
            if params.collections:
                held, unknown = self.resolve_collections(
                    params.collections, await self.collections()
                )
            targets = [
                (self.by_name[n], held.get(n, []) if params.collections else None) for n in state
            ]
        else:
            state = None
            targets, unknown = await self._targets(params)
        merger = Merger(
            self.http, self.cache, params, self.s["unsorted_max_items"], self._extents(targets)
        )
        ttl, now = self.s["capabilities_ttl"], time.monotonic()
        if all(s.caps and now - s.caps.fetched < ttl for s, _ in targets):
            fails: list[SiteFailure | None] = [None] * len(targets)  # known: no round trip
        else:
            fails = await asyncio.gather(*(self._caps(s) for s, _ in targets))
        cursors = []
        for (site, colls), fail in zip(targets, fails, strict=True):
            st = state.get(site.name) if state is not None else None
            finished = isinstance(st, dict) and st.get("m") in ("d", "x")
            if fail is not None and site.caps is None and not finished:
                c = Cursor(site, {}, "x", reason=fail.reason, detail=fail.detail, failed_now=True)
            else:
                c = merger.new_cursor(site, colls)
                if st is not None:
                    merger.restore(c, st)
            cursors.append(c)
        page = await merger.page(cursors)
        failed_now = [c for c in cursors if c.failed_now]
        if not page.items and failed_now and not any(c.answered for c in cursors):
            raise ApiError(
                502,
                "AllSitesFailed",
                "every site that could answer this search failed: "
                + "; ".join(f"{c.site.name}: {c.reason}" for c in failed_now),
                **{"federation:missing": [c.site.name for c in failed_now]},
            )
        token = None
        if page.more:
            merger.keep_tails(cursors)
            depth = int(self.s["read_ahead_pages"])
            self._prefetch(merger.prefetch(cursors), depth if params.token else min(depth, 1))
            token = self.signer.dump(
                {c.site.name: merger.state(c) for c in cursors}, qhash, self.fingerprint
            )
        return SearchOutcome(page, token, cursors, unknown, params.filter is not None)

    def _extents(self, targets: list[tuple[Site, list[str] | None]]) -> dict[str, tuple[int, int]]:
        """Per site that cannot sort, the (oldest, newest) instant of the searched collections
        by their last known metadata (where its datetime windows start: windows.py); none for
        a site whose collections are unknown or have an open or unreadable extent."""
        out: dict[str, tuple[int, int]] = {}
        for site, colls in targets:
            known = self._site_colls.get(site.name)
            if known is None or (site.caps and site.caps.sorts):
                continue
            intervals: list[Any] = []
            for coll in known[1]:
                if colls is not None and coll.get("id") not in colls:
                    continue
                ext = coll.get("extent")
                temporal = ext.get("temporal") if isinstance(ext, dict) else None
                got = temporal.get("interval") if isinstance(temporal, dict) else None
                if not isinstance(got, list) or not got:
                    intervals = []
                    break
                intervals.append(got[0])  # the first interval is the overall one (STAC)
            span = extent_us(intervals) if intervals else None
            if span is not None:
                out[site.name] = span
        return out

    def _prefetch(self, wanted: list[tuple[Site, dict[str, Any]]], depth: int) -> None:
        """Fetch into the page cache, in the background, site pages the next pages will need:
        each wanted page and up to ``depth - 1`` pages after it, one after the other (a site's
        next page is known only from the page before it)."""
        if not self.cache.enabled or depth < 1:
            return
        for site, req in wanted:
            task = asyncio.ensure_future(self._read_ahead(site, req, depth))
            self._prefetching.add(task)
            task.add_done_callback(self._prefetch_done)

    async def _read_ahead(self, site: Site, req: dict[str, Any], depth: int) -> None:
        """Fetch ``depth`` pages from ``req`` into the cache, as bytes; only a page whose
        successor is fetched too is parsed here (for its next link)."""
        for n in range(depth):
            entry = await fetch_raw(self.http, site, req, self.cache)
            if n == depth - 1:
                return
            nxt = entry.next if entry.checked else parse_page(entry, req).next
            if nxt is None:
                return
            req = nxt

    def _prefetch_done(self, task: asyncio.Future) -> None:
        self._prefetching.discard(task)
        if not task.cancelled():
            task.exception()  # a failure is fetched (and reported) again by the next page

    # -- one item ---------------------------------------------------------------------------
    async def item(
        self, collection: str, item_id: str
    ) -> tuple[dict[str, Any] | None, list[str], dict[str, SiteFailure]]:
        view = await self.collections()
        if collection not in view.collections:
            raise ApiError(404, "NotFound", f"no collection {collection!r} in the federation")
        holders = [self.by_name[n] for n in view.collections[collection]["federation:sites"]]

        async def one(site: Site) -> dict[str, Any] | None | SiteFailure:
            try:
                return await fetch_item(
                    self.http, site, collection, item_id, self.s["capabilities_ttl"]
                )
            except SiteFailure as exc:
                return exc

        results = await asyncio.gather(*(one(s) for s in holders))
        found = [(s, r) for s, r in zip(holders, results, strict=True) if isinstance(r, dict)]
        failed = {
            s.name: r for s, r in zip(holders, results, strict=True) if isinstance(r, SiteFailure)
        }
        if not found:
            return None, [], failed
        return found[0][1], [s.name for s, _ in found], failed
