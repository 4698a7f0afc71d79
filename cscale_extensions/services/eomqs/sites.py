"""One federated STAC site: its capabilities (cached), its search pages, collections and health.

Every request to a site is bounded by the site's ``timeout`` (total, not per phase). Failures
become :class:`SiteFailure` with a short reason: ``unreachable``, ``timeout``, ``http <status>``
or ``invalid response``.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urljoin

from cscale_extensions.services.eomqs.client import (
    HttpClient,
    RequestFailed,
    RequestTimeout,
    origin,
)
from cscale_extensions.services.eomqs.filtering import SiteFiltering, as_text, site_filtering
from cscale_extensions.services.eomqs.page_cache import Entry, Page, PageCache, Request

try:  # orjson parses large pages several times faster; json is the fallback
    from orjson import loads
except ImportError:  # pragma: no cover
    from json import loads

SORT_CONFORMANCE = "item-search#sort"


class SiteFailure(Exception):
    """A site did not answer usefully; ``reason`` is short, ``detail`` says more."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class Capabilities:
    search_href: str
    method: str  # GET or POST
    collections_href: str
    sorts: bool
    fetched: float
    filtering: SiteFiltering = SiteFiltering()

    @property
    def filters(self) -> bool:
        """Whether the site evaluates a CQL2 filter sent in its search method."""
        return self.filtering.handles(self.method)


@dataclass
class Health:
    ok: bool
    checked: float
    reason: str | None = None
    detail: str | None = None
    latency_ms: float | None = None


@dataclass
class Site:
    """A site of ``federation.sites`` (array items get no schema defaults: read with .get())."""

    name: str
    url: str
    title: str
    headers: dict[str, str]
    timeout: float
    search_method: str
    caps: Capabilities | None = None
    health: Health | None = None
    latency: float = 0.0  # recent time of a search page (moving average), to ask slow sites first
    density: float = 0.0  # items per microsecond in its last datetime window read (windows.py)
    _caps_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    def from_config(cls, entry: dict[str, Any]) -> Site:
        url = entry["url"] if entry["url"].endswith("/") else entry["url"] + "/"
        return cls(
            name=entry["name"],
            url=url,
            title=entry.get("title") or entry["name"],
            headers=dict(entry.get("headers") or {}),
            timeout=float(entry.get("timeout") or 10),
            search_method=entry.get("search_method") or "auto",
        )


async def _request_bytes(
    client: HttpClient,
    site: Site,
    method: str,
    url: str,
    body: Any = None,
    params: dict[str, str] | None = None,
    allow_404: bool = False,
) -> bytes | None:
    """The body of one successful request to ``site``, within the site's timeout (None: a 404
    that ``allow_404`` accepts). The site's configured headers (its credentials) go only to
    the site's own origin: a link or redirect of the site to another host gets none."""
    headers = {"Accept": "application/json, application/geo+json"}
    own = site.headers if origin(url) == origin(site.url) else None
    try:
        status, content = await client.request(
            method,
            url,
            body=body,
            params=params,
            headers=headers,
            timeout=site.timeout,
            credentials=own,
        )
    except RequestTimeout as exc:
        raise SiteFailure("timeout", str(exc)) from None
    except RequestFailed as exc:
        raise SiteFailure("unreachable", str(exc)) from None
    if allow_404 and status == 404:
        return None
    if status >= 400:
        raise SiteFailure(f"http {status}", content[:200].decode("utf-8", "replace"))
    return content


def _json(content: bytes) -> Any:
    try:
        return loads(content)
    except (ValueError, UnicodeDecodeError):
        raise SiteFailure("invalid response", "the answer is not JSON") from None


async def _json_request(
    client: HttpClient, site: Site, method: str, url: str, **options: Any
) -> Any:
    """One request to ``site`` answered with JSON (``options``: those of :func:`_request_bytes`)."""
    content = await _request_bytes(client, site, method, url, **options)
    return None if content is None else _json(content)


def _link(doc: dict[str, Any], rel: str) -> list[dict[str, Any]]:
    links = doc.get("links") if isinstance(doc, dict) else None
    return [
        ln
        for ln in links or []
        if isinstance(ln, dict) and ln.get("rel") == rel and isinstance(ln.get("href"), str)
    ]


async def capabilities(client: HttpClient, site: Site, ttl: float) -> Capabilities:
    """The site's search endpoint, method and sort support (landing page + conformance), cached."""
    if site.caps and time.monotonic() - site.caps.fetched < ttl:
        return site.caps
    async with site._caps_lock:
        if site.caps and time.monotonic() - site.caps.fetched < ttl:
            return site.caps
        landing = await _json_request(client, site, "GET", site.url)
        if not isinstance(landing, dict):
            raise SiteFailure("invalid response", "the landing page is not a JSON object")
        conforms = landing.get("conformsTo")
        if not isinstance(conforms, list):
            conf_links = _link(landing, "conformance")
            href = (
                urljoin(site.url, conf_links[0]["href"])
                if conf_links
                else urljoin(site.url, "conformance")
            )
            doc = await _json_request(client, site, "GET", href)
            conforms = doc.get("conformsTo") if isinstance(doc, dict) else None
        conforms = [c for c in conforms or [] if isinstance(c, str)]
        searches = _link(landing, "search")
        methods = {str(ln.get("method", "GET")).upper() for ln in searches}
        search_href = (
            urljoin(site.url, searches[0]["href"]) if searches else urljoin(site.url, "search")
        )
        if site.search_method in ("GET", "POST"):
            method = site.search_method
        else:
            method = "POST" if "POST" in methods else "GET"
        data = _link(landing, "data")
        coll_href = urljoin(site.url, data[0]["href"]) if data else urljoin(site.url, "collections")
        site.caps = Capabilities(
            search_href=search_href,
            method=method,
            collections_href=coll_href,
            sorts=any(c.endswith(SORT_CONFORMANCE) for c in conforms),
            fetched=time.monotonic(),
            filtering=site_filtering(conforms),
        )
        return site.caps


def _get_params(body: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in body.items():
        if k in ("bbox", "collections", "ids"):
            out[k] = ",".join(str(x) for x in v)
        elif k == "intersects":
            out[k] = json.dumps(v, separators=(",", ":"))
        elif k == "sortby":
            out[k] = ",".join(("-" if s["direction"] == "desc" else "+") + s["field"] for s in v)
        elif k == "filter":
            out[k] = as_text(v)
        elif k == "filter-lang":
            out[k] = "cql2-text"
        else:
            out[k] = str(v)
    return out


def first_request(site: Site, body: dict[str, Any]) -> Request:
    """The site's first search request for the STAC POST ``body``, in the site's method."""
    assert site.caps is not None
    return {"method": site.caps.method, "href": site.caps.search_href, "body": body}


def _next_request(doc: dict[str, Any], current: Request, base: str) -> Request | None:
    nxt = _link(doc, "next")
    if not nxt:
        return None
    ln = nxt[0]
    method = str(ln.get("method", "GET")).upper()
    href = urljoin(base, ln["href"])
    if method == "POST":
        body = ln.get("body") if isinstance(ln.get("body"), dict) else {}
        if ln.get("merge") and isinstance(current.get("body"), dict):
            body = {**current["body"], **body}
        return {"method": "POST", "href": href, "body": body}
    return {"method": "GET", "href": href, "body": None}


async def fetch_raw(client: HttpClient, site: Site, req: Request, cache: PageCache) -> Entry:
    """One search page of ``site`` for the request ``req`` (a first request or a next link),
    as the bytes the site sent (:class:`Entry`, not parsed: what read-ahead stores).

    Served from the cache when fresh; concurrent fetches of the same page share one request.
    """
    ck = cache.key(site.name, req)
    hit = cache.get(ck)
    if isinstance(hit, Entry):
        return hit
    running = cache.inflight.get(ck)
    if running is None:
        running = asyncio.ensure_future(_fetch_raw(client, site, req, cache, ck))
        cache.inflight[ck] = running
        running.add_done_callback(lambda _: cache.inflight.pop(ck, None))
    return await asyncio.shield(running)


async def fetch_page(client: HttpClient, site: Site, req: Request, cache: PageCache) -> Page:
    """One search page of ``site`` for ``req``, parsed (see :func:`fetch_raw`); a page that is
    not an ItemCollection raises :class:`SiteFailure` and is not kept."""
    entry = await fetch_raw(client, site, req, cache)
    try:
        return parse_page(entry, req)
    except SiteFailure:
        cache.discard(cache.key(site.name, req))
        raise


async def _fetch_raw(
    client: HttpClient, site: Site, req: Request, cache: PageCache, ck: str
) -> Entry:
    t0 = time.monotonic()
    try:
        if req["method"] == "POST":
            raw = await _request_bytes(client, site, "POST", req["href"], body=req["body"] or {})
        elif req.get("body") is not None:
            raw = await _request_bytes(
                client, site, "GET", req["href"], params=_get_params(req["body"])
            )
        else:
            raw = await _request_bytes(client, site, "GET", req["href"])
    finally:
        site.latency += 0.3 * (time.monotonic() - t0 - site.latency)
    entry = Entry(raw or b"")
    cache.put(ck, entry)
    return entry


def parse_page(entry: Entry, req: Request) -> Page:
    """The items, next request and matched count of a site page (checked: an ItemCollection)."""
    doc = _json(entry.raw)
    if entry.tail:
        return Page(doc, entry.next, entry.matched)
    if entry.checked:
        return Page(doc["features"], entry.next, entry.matched)
    feats = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(feats, list) or not all(
        isinstance(f, dict)
        and isinstance(f.get("id"), str)
        and isinstance(f.get("properties", {}), dict)
        and isinstance(f.get("collection", ""), str)
        for f in feats
    ):
        raise SiteFailure("invalid response", "the answer is not an ItemCollection")
    context = doc.get("context") if isinstance(doc.get("context"), dict) else {}
    matched = doc.get("numberMatched", context.get("matched"))
    entry.next = _next_request(doc, req, req["href"]) if feats else None
    entry.matched = matched if isinstance(matched, int) and not isinstance(matched, bool) else None
    entry.checked = True
    return Page(feats, entry.next, entry.matched)


async def fetch_collections(
    client: HttpClient, site: Site, ttl: float, max_pages: int = 50
) -> list[dict[str, Any]]:
    """All collections of a site (following its ``next`` links)."""
    caps = await capabilities(client, site, ttl)
    href: str | None = caps.collections_href
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _ in range(max_pages):
        if href is None or href in seen:
            break
        seen.add(href)
        doc = await _json_request(client, site, "GET", href)
        colls = doc.get("collections") if isinstance(doc, dict) else None
        if not isinstance(colls, list):
            raise SiteFailure("invalid response", "the collection list is not STAC")
        out.extend(c for c in colls if isinstance(c, dict) and isinstance(c.get("id"), str))
        nxt = _link(doc, "next")
        href = urljoin(href, nxt[0]["href"]) if nxt and colls else None
    return out


async def fetch_item(
    client: HttpClient, site: Site, collection: str, item_id: str, ttl: float
) -> dict[str, Any] | None:
    """One item of a site, or None when the site does not have it."""
    caps = await capabilities(client, site, ttl)
    base = caps.collections_href.rstrip("/") + "/"
    doc = await _json_request(
        client,
        site,
        "GET",
        f"{base}{quote(collection, safe='')}/items/{quote(item_id, safe='')}",
        allow_404=True,
    )
    if doc is None:
        return None
    if not isinstance(doc, dict) or doc.get("type") != "Feature":
        raise SiteFailure("invalid response", "the item is not a GeoJSON Feature")
    return doc


async def check_health(client: HttpClient, site: Site, ttl: float, caps_ttl: float) -> Health:
    """Whether the site answers its landing page now (cached for ``ttl`` seconds)."""
    if site.health and time.monotonic() - site.health.checked < ttl:
        return site.health
    t0 = time.monotonic()
    try:
        await _json_request(client, site, "GET", site.url)
        await capabilities(client, site, caps_ttl)
        site.health = Health(
            True, time.monotonic(), latency_ms=round((time.monotonic() - t0) * 1000, 1)
        )
    except SiteFailure as exc:
        site.health = Health(False, time.monotonic(), exc.reason, exc.detail)
    return site.health


async def fetch_queryables(client: HttpClient, site: Site) -> dict[str, Any]:
    """The site's queryable properties (``/queryables``, JSON Schema ``properties``); {} when
    the site has none (404)."""
    doc = await _json_request(client, site, "GET", urljoin(site.url, "queryables"), allow_404=True)
    if doc is None:
        return {}
    props = doc.get("properties") if isinstance(doc, dict) else None
    if not isinstance(props, dict):
        raise SiteFailure("invalid response", "the queryables are not a JSON Schema object")
    return {k: v for k, v in props.items() if isinstance(k, str) and isinstance(v, dict)}
