"""The k-way merge of the sites' result streams into pages, and its paging state.

Every site's results are a stream in the federation's total order (the site sorts them, or
EO-MQS reads them all and sorts them itself). An item is emitted only when every site that may
still have results has a buffered item, so the smallest head is the next item overall. Items
with the same sort key (hence the same collection and id) from several sites are emitted once,
naming every site in ``properties["federation:sites"]``.

A site's position survives between pages as the request of its current page and the number of
items of that page already emitted (re-fetched from the site or the page cache on the next
page), or, for a site sorted here, the number of its sorted items already emitted.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from cscale_extensions.services.eomqs.client import HttpClient
from cscale_extensions.services.eomqs.errors import bad_request
from cscale_extensions.services.eomqs.filtering import matcher
from cscale_extensions.services.eomqs.ordering import Key, full_sort, key_function
from cscale_extensions.services.eomqs.page_cache import (
    KEY_BYTES_PER_ITEM,
    Entry,
    Page,
    PageCache,
    Request,
    SortedItems,
)
from cscale_extensions.services.eomqs.sites import Site, SiteFailure, fetch_page, parse_page
from cscale_extensions.services.eomqs.validation import SearchParams
from cscale_extensions.services.eomqs.windows import Window, first_width, window_bounds

try:
    from orjson import dumps, loads
except ImportError:  # pragma: no cover

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    loads = json.loads

UNSORTED_PAGE_LIMIT = 1000
#: pages read to sort a site here are not cached (the sorted list is, far more compactly)
_UNCACHED = PageCache(0, 0)


@dataclass
class Cursor:
    """One site's position in one search."""

    site: Site
    body: dict[str, Any]  # the site's first request body (STAC POST form)
    mode: str  # s: stream, u: sorted here, d: done, x: failed
    req: Request | None = None  # s: request of the current page (None: not fetched yet)
    offset: int = 0  # s: items of the current page emitted; u: sorted items emitted
    buf: deque[tuple[Key, dict[str, Any]]] = field(default_factory=deque)
    page_len: int = 0
    next: Request | None = None
    loaded: bool = False
    reason: str | None = None
    detail: str | None = None
    sort_pages: bool = False  # sort each page here (the site does not sort, or did not)
    flagged: bool = False  # results of this site may be out of order: federation:unsorted
    taken: int = 0  # u: sorted items emitted during this request
    matched: int | None = None
    returned: int = 0
    local_filter: bool = False  # EO-MQS evaluates the search's filter on this site's items
    sorted_here: bool = False  # u: all the site's matching items were sorted by EO-MQS
    failed_now: bool = False
    answered: bool = False  # the site answered during this request
    last_key: Key | None = None
    full: list[tuple[Key, bytes]] = field(default_factory=list)  # u, w: sorted items (JSON)
    win: Window | None = None  # w: the datetime window being emitted
    pos: int = 0  # u: index in ``full`` of the first item not yet buffered


@dataclass
class PageResult:
    items: list[dict[str, Any]]
    cursors: list[Cursor]
    more: bool


class Merger:
    """Runs one page of a federated search."""

    def __init__(
        self,
        client: HttpClient,
        cache: PageCache,
        params: SearchParams,
        unsorted_max: int,
        extents: dict[str, tuple[int, int]] | None = None,
    ):
        self.client = client
        self.extents = extents or {}  # site -> (oldest, newest) instant by its metadata
        self.cache = cache
        self.params = params
        self.key = key_function(params.sortby)
        self.order_sig = json.dumps([s.as_json() for s in full_sort(params.sortby)])
        self.match = matcher(params.filter)
        self.filter_sig = json.dumps(params.filter, sort_keys=True) if params.filter else ""
        self.unsorted_max = unsorted_max
        self.overflow: list[dict[str, Any]] = []  # items of the last window read with too many

    # -- site bodies and state ---------------------------------------------------------------
    def site_body(
        self, site: Site, site_collections: list[str] | None, limit: int
    ) -> dict[str, Any]:
        p = self.params
        body: dict[str, Any] = {"limit": limit}
        if site_collections is not None:
            body["collections"] = site_collections
        for k in ("bbox", "intersects", "datetime", "ids"):
            v = getattr(p, k)
            if v is not None:
                body[k] = v
        if site.caps and site.caps.sorts:
            body["sortby"] = [s.as_json() for s in full_sort(p.sortby)]
        if p.filter is not None and site.caps and site.caps.filters:
            body["filter"] = p.filter
            body["filter-lang"] = "cql2-json"
        return body

    def new_cursor(self, site: Site, site_collections: list[str] | None) -> Cursor:
        sorts = bool(site.caps and site.caps.sorts)
        local = self.match is not None and not (site.caps and site.caps.filters)
        if not sorts and self.unsorted_max > 0:
            body = self.site_body(
                site, site_collections, min(UNSORTED_PAGE_LIMIT, self.unsorted_max + 1)
            )
            c = Cursor(site, body, "u", local_filter=local)
            self._start_windows(c)  # datetime first: windows, else the whole site sorted here
            return c
        body = self.site_body(site, site_collections, min(self.params.limit + 1, 10000))
        return Cursor(site, body, "s", sort_pages=not sorts, flagged=not sorts, local_filter=local)

    def first_request(self, c: Cursor) -> Request:
        assert c.site.caps is not None
        return {"method": c.site.caps.method, "href": c.site.caps.search_href, "body": c.body}

    def encode_req(self, c: Cursor, req: Request) -> dict[str, Any]:
        first = self.first_request(c)
        if req == first:
            return {"l": c.body["limit"]}
        out: dict[str, Any] = {"m": req["method"]}
        if req["href"] != first["href"]:
            out["h"] = req["href"]
        body = req.get("body")
        if isinstance(body, dict):
            out["p"] = {k: v for k, v in body.items() if c.body.get(k, object()) != v}
            out["x"] = [k for k in c.body if k not in body]
        return out

    def decode_req(self, c: Cursor, enc: Any) -> Request:
        first = self.first_request(c)
        if not isinstance(enc, dict):
            raise bad_request("InvalidToken", "the paging token is malformed")
        if "l" in enc:
            c.body["limit"] = enc["l"]
            return self.first_request(c)
        req: Request = {"method": enc.get("m"), "href": enc.get("h", first["href"]), "body": None}
        if "p" in enc:
            body = {k: v for k, v in c.body.items() if k not in enc.get("x", [])}
            body.update(enc["p"])
            req["body"] = body
        return req

    def state(self, c: Cursor) -> dict[str, Any]:
        if c.mode == "x":
            return {"m": "x", "r": c.reason, "d": c.detail}
        if not c.buf:
            return {"m": "d"}
        if c.mode == "u":
            return {"m": "u", "o": c.offset + c.taken}
        if c.mode == "w":
            assert c.win is not None
            return {"m": "w", "w": c.win.as_json(), "o": c.pos - len(c.buf), "f": c.flagged}
        assert c.req is not None
        return {
            "m": "s",
            "r": self.encode_req(c, c.req),
            "o": c.page_len - len(c.buf),
            "u": c.sort_pages,
            "f": c.flagged,
        }

    def restore(self, c: Cursor, st: Any) -> None:
        """Put the cursor where the token says."""
        try:
            m = st["m"]
            if m == "d":
                c.mode = "d"
            elif m == "x":
                c.mode, c.reason, c.detail = "x", str(st["r"]), str(st.get("d") or "")
            elif m == "u":
                c.mode, c.offset, c.sorted_here = "u", int(st["o"]), True
                c.body["limit"] = min(UNSORTED_PAGE_LIMIT, self.unsorted_max + 1)
            elif m == "w":
                c.mode, c.offset, c.sorted_here = "w", int(st["o"]), True
                c.win, c.flagged = Window.from_json(st["w"]), bool(st.get("f"))
                c.body["limit"] = min(UNSORTED_PAGE_LIMIT, self.unsorted_max + 1)
            elif m == "s":
                c.mode, c.offset = "s", int(st["o"])
                c.sort_pages, c.flagged = bool(st.get("u")), bool(st.get("f"))
                c.req = self.decode_req(c, st["r"])
            else:
                raise ValueError(m)
        except (KeyError, TypeError, ValueError):
            raise bad_request("InvalidToken", "the paging token is malformed") from None

    # -- fetching ---------------------------------------------------------------------------
    def _page_keys(
        self, page: Page, local_filter: bool
    ) -> tuple[list[tuple[Key, dict[str, Any]]], list[tuple[Key, dict[str, Any]]], bool]:
        """The page's items (those matching the filter, when EO-MQS evaluates it) with their
        keys, as received and sorted, and whether they were in order."""
        items = page.items
        if local_filter and self.match is not None:
            items = [i for i in items if self.match(i)]
        keyed = [(self.key(i), i) for i in items]
        in_order = all(keyed[n][0] <= keyed[n + 1][0] for n in range(len(keyed) - 1))
        return keyed, (keyed if in_order else sorted(keyed, key=lambda kv: kv[0])), in_order

    def _keyed(self, c: Cursor, page: Page) -> list[tuple[Key, dict[str, Any]]]:
        keyed, srt, in_order = self._page_keys(page, c.local_filter)
        if not c.sort_pages and not in_order:
            c.sort_pages = c.flagged = True
        out = srt if c.sort_pages else keyed
        if out and c.last_key is not None and out[0][0] < c.last_key:
            c.flagged = True
        return out

    async def _sorted_list(
        self, c: Cursor, win: Window | None = None, cap: int | None = None
    ) -> list[tuple[Key, bytes]] | None:
        """Every matching item of an unsorting site, sorted, each kept as its JSON (a sixth
        of its parsed size: the list is cached, and only the items of a page are parsed
        again); None if more than the limit. The site pages read for it are not cached."""
        cap = self.unsorted_max if cap is None else cap
        req = self.first_request(c)
        if win is not None:
            body = {**c.body, "datetime": win.interval(), "limit": min(cap + 1, 10000)}
            req = {**req, "body": body}
        order = [s.as_json() for s in full_sort(self.params.sortby)]
        ck = "sorted:" + PageCache.key(c.site.name, req) + json.dumps(order)
        if c.local_filter:
            ck += "|" + self.filter_sig
        hit = self.cache.get(ck)
        if isinstance(hit, SortedItems):
            return hit.items
        items: list[dict[str, Any]] = []
        size = 0
        nxt: Request | None = req
        seen: set[str] = set()
        while nxt is not None:
            sig = json.dumps(nxt, sort_keys=True)
            if sig in seen:
                break
            seen.add(sig)
            page = await fetch_page(self.client, c.site, nxt, _UNCACHED)
            items.extend(page.items)
            if len(items) > cap:
                self.overflow = items
                return None
            nxt = page.next
        if c.local_filter and self.match is not None:
            items = [i for i in items if self.match(i)]
        uniq: dict[Key, tuple[Key, bytes]] = {}
        for i in items:
            k = self.key(i)
            if win is not None and not win.holds(i):
                continue  # a later window has it (its start), or it has no datetime
            if k not in uniq:
                raw = dumps(i)
                uniq[k] = (k, raw)
                size += len(raw) + KEY_BYTES_PER_ITEM
        out = sorted(uniq.values(), key=lambda kv: kv[0])
        self.cache.put(ck, SortedItems(out, size))
        return out

    def _refill_sorted(self, c: Cursor) -> None:
        """The next items of a site sorted here, parsed into its buffer (a page's worth)."""
        chunk = c.full[c.pos : c.pos + self.params.limit + 1]
        c.pos += len(chunk)
        c.buf = deque((k, loads(raw)) for k, raw in chunk)
        if not c.buf and c.mode == "u":
            c.mode = "d"
            c.full = []

    def _start_windows(self, c: Cursor) -> bool:
        """Switch a site too large to sort whole to datetime windows, if the order allows."""
        first = full_sort(self.params.sortby)[0]
        if first.field != "properties.datetime":
            return False
        width = first_width(c.site.density, self.params.limit + 1)
        win = window_bounds(self.params.datetime, first.desc, self.extents.get(c.site.name), width)
        c.mode, c.win, c.full, c.pos = "w", win, [], 0
        c.sorted_here, c.offset, c.loaded = True, 0, False
        return True

    async def _fill_window(self, c: Cursor) -> None:
        """Emit a site that cannot sort window by window of datetime (newest first for a
        descending sort): each window's items are read whole and sorted here, so the order is
        exact without reading the site whole; a window with too many items is halved, one
        with few doubles the next."""
        assert c.win is not None
        window_cap = min(self.unsorted_max, max(100, 4 * (self.params.limit + 1)))
        while not c.buf:
            if c.loaded:
                if c.pos < len(c.full):
                    self._refill_sorted(c)
                    continue
                c.win = c.win.next(len(c.full), self.params.limit + 1)
                c.full, c.pos, c.loaded = [], 0, False
            if c.win.done:
                c.mode, c.full = "d", []
                return
            cap = window_cap if c.win.width > 0 else self.unsorted_max
            got = await self._sorted_list(c, c.win, cap)
            c.answered = True
            if got is None:
                if c.win.width > 0:
                    c.win = c.win.narrowed(self.overflow, cap)
                    self.overflow = []
                    continue
                c.flagged = True  # > unsorted_max items at one instant: not all of them
                got = []
            if got and c.win.width > 0:  # sizes the first window of the next search
                c.site.density = len(got) * c.win.density(loads(got[0][1]))
            c.full, c.pos, c.loaded = got, c.offset, True
            c.offset = 0
            if c.pos < len(c.full):
                self._refill_sorted(c)

    async def _fill(self, c: Cursor) -> None:
        if c.mode == "w":
            await self._fill_window(c)
            return
        if c.mode == "u":
            if c.loaded:
                self._refill_sorted(c)
                return
            full = await self._sorted_list(c)
            if full is not None:
                c.loaded = c.answered = c.sorted_here = True
                c.matched = len(full)
                c.full, c.pos = full, c.offset
                self._refill_sorted(c)
                return
            # too many to sort whole: datetime windows, else its pages as they come, flagged
            if self._start_windows(c):
                await self._fill_window(c)
                return
            c.mode, c.offset, c.sort_pages, c.flagged = "s", 0, True, True
            c.body["limit"] = min(self.params.limit + 1, 10000)
        while not c.buf:
            if c.loaded and c.next is None:
                c.mode = "d"
                return
            if c.loaded:
                req, off = c.next, 0
            else:
                req, off = (c.req or self.first_request(c)), c.offset
                if off and self._resume_tail(c, req):
                    continue
            assert req is not None
            page = await fetch_page(self.client, c.site, req, self.cache)
            c.req, c.loaded, c.next, c.answered = req, True, page.next, True
            if page.matched is not None and not c.local_filter:
                c.matched = page.matched
            keyed = self._keyed(c, page)
            c.page_len = len(keyed)
            c.buf = deque(keyed[off:])

    def _tail_key(self, c: Cursor, req: Request, offset: int) -> str:
        sig = self.order_sig + ("|" + self.filter_sig if c.local_filter else "")
        return f"tail:{offset}:{int(c.sort_pages)}:{sig}:" + PageCache.key(c.site.name, req)

    def keep_tails(self, cursors: list[Cursor]) -> None:
        """Keep, for the search's next page, the items of each site's current page that this
        page did not take (usually a few: sites are asked for a page and one more item), so
        the next page starts without parsing that site page again."""
        if not self.cache.enabled:
            return
        for c in cursors:
            if c.mode == "s" and c.buf and c.req is not None:
                entry = Entry(dumps([i for _, i in c.buf]), c.next, c.matched, tail=True)
                self.cache.put(self._tail_key(c, c.req, c.page_len - len(c.buf)), entry)

    def _resume_tail(self, c: Cursor, req: Request) -> bool:
        """Start a restored site from the items kept by :meth:`keep_tails`, if still cached."""
        hit = self.cache.get(self._tail_key(c, req, c.offset))
        if not isinstance(hit, Entry):
            return False
        page = parse_page(hit, req)
        c.req, c.loaded, c.next, c.answered = req, True, page.next, True
        if page.matched is not None and not c.local_filter:
            c.matched = page.matched
        c.page_len = c.offset + len(page.items)
        c.buf = deque((self.key(i), i) for i in page.items)
        return True

    async def _ensure(self, c: Cursor) -> None:
        if c.mode in ("d", "x") or c.buf:
            return
        try:
            await self._fill(c)
        except SiteFailure as exc:
            c.mode, c.reason, c.detail, c.failed_now = "x", exc.reason, exc.detail, True
            c.buf.clear()

    async def _ensure_all(self, cursors: list[Cursor]) -> None:
        todo = [c for c in cursors if c.mode not in ("d", "x") and not c.buf]
        if len(todo) == 1:
            await self._ensure(todo[0])
        elif todo:
            # the slowest sites first: their requests leave before the others' are prepared
            todo.sort(key=lambda c: -c.site.latency)
            await asyncio.gather(*(self._ensure(c) for c in todo))

    # -- the page ---------------------------------------------------------------------------
    async def page(self, cursors: list[Cursor]) -> PageResult:
        await self._ensure_all(cursors)
        out: list[dict[str, Any]] = []
        limit = self.params.limit
        while len(out) < limit:
            live = [c for c in cursors if c.buf]
            if not live:
                break
            k = min(c.buf[0][0] for c in live)
            group = [c for c in live if c.buf[0][0] == k]
            item = group[0].buf[0][1]
            for c in group:
                c.buf.popleft()
                c.returned += 1
                c.last_key = k
                if c.mode == "u":
                    c.taken += 1
            sites = [c.site.name for c in group]
            out.append(_with_sites(item, sites))
            emptied = [c for c in group if not c.buf]
            if emptied:
                await self._ensure_all(emptied)
        return PageResult(out, cursors, any(c.buf for c in cursors))

    def prefetch(self, cursors: list[Cursor]) -> list[tuple[Site, Request]]:
        """Next pages the following page of this search will likely need (to warm the cache):
        those of sites left with fewer buffered items than two pages like this one take."""
        return [
            (c.site, c.next)
            for c in cursors
            if c.mode == "s" and c.next is not None and len(c.buf) < 2 * c.returned
        ]


def _with_sites(item: dict[str, Any], sites: list[str]) -> dict[str, Any]:
    """The item as EO-MQS returns it: its sites named, its assets in key order.

    Sites store the same assets in different orders (pgstac's JSONB sorts keys by length);
    clients that compare asset lists (openEO's ``load_stac``) need one order for all.
    """
    out = dict(item)
    assets = out.get("assets")
    if isinstance(assets, dict):
        out["assets"] = dict(sorted(assets.items()))
    props = dict(out.get("properties") or {})
    props["federation:sites"] = sites
    out["properties"] = props
    return out
