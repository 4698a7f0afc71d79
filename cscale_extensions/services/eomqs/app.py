"""The EO-MQS FastAPI application: a STAC API 1.0 over the whole federation."""

from __future__ import annotations

import re
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cscale_extensions.services.eomqs import errors
from cscale_extensions.services.eomqs.collections import STAC_VERSION
from cscale_extensions.services.eomqs.errors import ApiError
from cscale_extensions.services.eomqs.federation import Federation, SearchOutcome
from cscale_extensions.services.eomqs.filtering import FILTER_CONFORMANCE
from cscale_extensions.services.eomqs.links import absolute
from cscale_extensions.services.eomqs.paging_token import TokenSigner
from cscale_extensions.services.eomqs.validation import SearchParams, parse_search

try:
    import orjson
except ImportError:  # pragma: no cover
    orjson = None  # type: ignore[assignment]

CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#sort",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    *FILTER_CONFORMANCE,
]
QUERYABLES_REL = "http://www.opengis.net/def/rel/ogc/1.0/queryables"
SCHEMA_JSON = "application/schema+json"
GEOJSON = "application/geo+json"
OPENAPI = "application/vnd.oai.openapi+json;version=3.1"
JSON = "application/json"
_HOST = re.compile(r"^[A-Za-z0-9.\-\[\]:]+$")
_PREFIX = re.compile(r"^/[A-Za-z0-9._~\-/]*$")


class FastJSON(JSONResponse):
    """JSON rendered with orjson when it is installed (large pages of items)."""

    def render(self, content: Any) -> bytes:
        if orjson is None:  # pragma: no cover
            return super().render(content)
        return orjson.dumps(content)


class BodyLimit:
    """ASGI middleware: a 413 JSON error for a request body larger than ``max_body`` bytes.

    The limit applies to the bytes actually received, not only to a declared
    ``Content-Length``: a chunked body (no length) is counted as it is read and refused at
    the first byte over the limit, so it is never held in memory whole. Plain ASGI:
    Starlette's BaseHTTPMiddleware costs a task and a stream per request."""

    def __init__(self, app: ASGIApp, max_body: int):
        self.app, self.max_body = app, max_body

    def _too_large(self) -> StarletteHTTPException:
        return StarletteHTTPException(413, f"the request body exceeds {self.max_body} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for k, v in scope["headers"]:
            if k == b"content-length":
                size = v.decode("latin-1")
                if not size.isdigit() or int(size) > self.max_body:
                    await self._refuse(scope, receive, send)
                    return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise self._too_large()
            return message

        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except StarletteHTTPException as exc:  # raised by counted() outside a route's handler
            if exc.status_code != 413 or started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = {"code": "RequestTooLarge", "description": str(self._too_large().detail)}
        await FastJSON(body, status_code=413)(scope, receive, send)


class SearchBody(BaseModel):
    """Item Search (POST). Every field is optional; the checks and their errors are EO-MQS's."""

    model_config = ConfigDict(extra="allow")
    bbox: list[float] | None = None
    intersects: dict[str, Any] | None = None
    datetime: str | None = None
    collections: list[str] | str | None = None
    ids: list[str] | str | None = None
    limit: int | None = None
    sortby: list[dict[str, Any]] | str | None = None
    filter: dict[str, Any] | str | None = None
    token: str | None = None


def shown_site_url(url: str) -> str:
    """A site's URL as users may see it: without user:password@ or a query, where an
    operator may have put the site's credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _normalize_prefix(prefix: str) -> str:
    prefix = "/" + prefix.strip("/")
    return prefix if prefix == "/" else prefix + "/"


def create_app(
    sites: list[dict[str, Any]], settings: dict[str, Any], secret: bytes, prefix: str = "/"
) -> FastAPI:
    """EO-MQS for the ``federation.sites`` entries ``sites`` and the ``eomqs`` ``settings``,
    answering under the path ``prefix`` (e.g. ``/services/eo-mqs/`` as a hub service)."""
    prefix = _normalize_prefix(prefix)
    fed = Federation(sites, settings, TokenSigner(secret, settings["token_max_age"]))

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await fed.start()
        try:
            yield
        finally:
            await fed.stop()

    app = FastAPI(
        title=settings["title"],
        description="Federated STAC API of C-SCALE: one Item Search over every site.",
        version="1.0.0",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.federation = fed
    errors.install(app)
    max_body = 64 * 1024 + 64 * settings["max_intersects_vertices"]

    app.add_middleware(BodyLimit, max_body=max_body)

    router = APIRouter(prefix=prefix.rstrip("/"))

    def base(request: Request) -> str:
        if settings["public_url"]:
            return settings["public_url"].rstrip("/") + "/"
        proto, host, path = (
            request.url.scheme,
            request.headers.get("host") or request.url.netloc,
            prefix,
        )
        if settings["trust_forwarded_headers"]:
            fproto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
            fhost = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
            fprefix = request.headers.get("x-forwarded-prefix", "").split(",")[0].strip()
            proto = fproto if fproto in ("http", "https") else proto
            host = fhost if fhost and _HOST.match(fhost) else host
            if fprefix and _PREFIX.match(fprefix):
                path = fprefix.rstrip("/") + prefix
        if not _HOST.match(host):
            host = request.url.netloc
        return f"{proto}://{host}{path}"

    def link(rel: str, href: str, type_: str = JSON, **extra: Any) -> dict[str, Any]:
        return {"rel": rel, "href": href, "type": type_, **extra}

    def geojson(body: dict[str, Any], status: int = 200) -> FastJSON:
        return FastJSON(body, status_code=status, media_type=GEOJSON)

    def collection_doc(b: str, coll: dict[str, Any]) -> dict[str, Any]:
        out = dict(coll)
        cid = quote(coll["id"], safe="")
        out["links"] = [
            link("self", f"{b}collections/{cid}"),
            link("root", b),
            link("parent", b),
            link("items", f"{b}collections/{cid}/items", GEOJSON),
            *absolute(coll.get("links", []), b),
        ]
        return out

    def item_doc(b: str, item: dict[str, Any]) -> dict[str, Any]:
        """The item with EO-MQS's links (once per item of every page: kept lean)."""
        out = dict(item)
        coll = item.get("collection")
        cpath = f"{b}collections/{quote(str(coll or ''), safe='')}"
        links = [
            {"rel": "self", "href": f"{cpath}/items/{quote(item['id'], safe='')}", "type": GEOJSON},
            {"rel": "root", "href": b, "type": JSON},
        ]
        if coll:
            links.append({"rel": "parent", "href": cpath, "type": JSON})
            links.append({"rel": "collection", "href": cpath, "type": JSON})
        own = item.get("links")
        if own:
            links += absolute(fed.links.public(own), b)
        out["links"] = links
        return out

    def ordering_of(c: Any) -> str | None:
        """Who put this site's results in order, i.e. the guarantee: ``site`` (it sorts),
        ``eomqs`` (all its matching items, at most unsorted_max_items, sorted here: exact),
        ``eomqs-windows`` (too many to sort whole: read and sorted one datetime window at a
        time, exact), ``pages`` (each page sorted here, the order across pages unsure)."""
        if c.flagged:
            return "pages"
        if c.win is not None:
            return "eomqs-windows"
        if c.sorted_here:
            return "eomqs"
        if c.site.caps and c.site.caps.sorts:
            return "site"
        return None

    def fed_report(out: SearchOutcome) -> dict[str, Any]:
        sites: dict[str, Any] = {}
        for c in out.queried:
            entry: dict[str, Any] = {
                "status": "missing" if c.mode == "x" else "ok",
                "returned": c.returned,
            }
            if c.mode == "x":
                entry.update(reason=c.reason, detail=c.detail)
            if c.matched is not None:
                entry["matched"] = c.matched
            if c.flagged:
                entry["unsorted"] = True
            ordering = ordering_of(c)
            if ordering:
                entry["ordering"] = ordering
            if out.page_filtered and c.mode != "x":
                entry["filtering"] = "eomqs" if c.local_filter else "site"
            sites[c.site.name] = entry
        report: dict[str, Any] = {
            "federation:missing": [c.site.name for c in out.queried if c.mode == "x"],
            "federation:sites": sites,
        }
        unsorted = [c.site.name for c in out.queried if c.flagged]
        if unsorted:
            report["federation:unsorted"] = unsorted
        if out.unknown_collections:
            report["federation:unknown_collections"] = out.unknown_collections
        return report

    def search_response(
        request: Request,
        b: str,
        params: SearchParams,
        out: SearchOutcome,
        endpoint: str,
        post: bool,
    ) -> FastJSON:
        items = [item_doc(b, i) for i in out.page.items]
        body: dict[str, Any] = {"type": "FeatureCollection", "features": items}
        links = [link("root", b)]
        if post:
            links.append(link("self", f"{b}{endpoint}", GEOJSON, method="POST"))
        else:
            qs = str(request.url.query)
            links.append(link("self", f"{b}{endpoint}" + (f"?{qs}" if qs else ""), GEOJSON))
        if out.token:
            if post:
                nb = {**params.query_json(), "limit": params.limit, "token": out.token}
                links.append(
                    link("next", f"{b}{endpoint}", GEOJSON, method="POST", body=nb, merge=False)
                )
            else:
                qp = params.get_params()
                if endpoint != "search":
                    qp.pop("collections", None)
                qp["token"] = out.token
                links.append(link("next", f"{b}{endpoint}?{urlencode(qp)}", GEOJSON, method="GET"))
        body["links"] = links
        body["numberReturned"] = len(items)
        live = out.queried
        if len(live) == 1 and live[0].mode != "x" and live[0].matched is not None:
            body["numberMatched"] = live[0].matched
        body.update(fed_report(out))
        return geojson(body)

    def check(raw: dict[str, Any], post: bool = False) -> SearchParams:
        return parse_search(
            raw,
            settings["default_limit"],
            settings["max_limit"],
            settings["max_intersects_vertices"],
            post=post,
        )

    # -- routes -----------------------------------------------------------------------------
    @router.get("/", summary="Landing page")
    async def landing(request: Request) -> FastJSON:
        b = base(request)
        view = await fed.collections()
        health = {s.name: s.health for s in fed.sites}
        links = [
            link("self", b),
            link("root", b),
            link("conformance", f"{b}conformance"),
            link("data", f"{b}collections"),
            link("search", f"{b}search", GEOJSON, method="GET"),
            link("search", f"{b}search", GEOJSON, method="POST"),
            link("service-desc", f"{b}api", OPENAPI),
            link("service-doc", f"{b}api.html", "text/html"),
            link("federation", f"{b}federation", title="Health of the federation's sites"),
            link(QUERYABLES_REL, f"{b}queryables", SCHEMA_JSON, title="Queryables"),
        ]
        links += [
            link("child", f"{b}collections/{quote(cid, safe='')}", title=c.get("title") or cid)
            for cid, c in view.collections.items()
        ]
        sites = {}
        for s in fed.sites:
            h = health.get(s.name)
            state = "unknown" if h is None else ("ok" if h.ok else "unavailable")
            entry: dict[str, Any] = {"title": s.title, "status": state}
            if h is not None and not h.ok:
                entry.update(reason=h.reason, detail=h.detail)
            sites[s.name] = entry
        return FastJSON(
            {
                "type": "Catalog",
                "stac_version": STAC_VERSION,
                "id": "eo-mqs",
                "title": settings["title"],
                "description": "C-SCALE EO Metadata Query Service: one STAC API over the federation's sites.",
                "conformsTo": CONFORMANCE,
                "links": links,
                "federation:sites": sites,
            }
        )

    @router.get("/queryables", summary="Properties a filter or sortby can use, of every site")
    async def queryables(request: Request) -> FastJSON:
        props, missing = await fed.queryables()
        return FastJSON(
            {
                "$schema": "https://json-schema.org/draft/2019-09/schema",
                "$id": f"{base(request)}queryables",
                "type": "object",
                "title": "Queryables of the federation",
                "description": "Each site's queryables merged (the first site in the "
                "federation's order defining a name wins); any other item property can be "
                "filtered and sorted on too.",
                "properties": props,
                "additionalProperties": True,
                "federation:missing": missing,
            },
            media_type=SCHEMA_JSON,
        )

    @router.get("/conformance", summary="Conformance classes")
    async def conformance() -> FastJSON:
        return FastJSON({"conformsTo": CONFORMANCE})

    @router.get("/federation", summary="Health of every site of the federation")
    async def federation(request: Request) -> FastJSON:
        health = await fed.health()
        view = await fed.collections()
        out = []
        for s in fed.sites:
            h = health[s.name]
            entry: dict[str, Any] = {
                "name": s.name,
                "title": s.title,
                "url": shown_site_url(s.url),
                "status": "ok" if h.ok else "unavailable",
                "collections": sorted(
                    c for c, d in view.collections.items() if s.name in d["federation:sites"]
                ),
            }
            if h.ok:
                entry["latency_ms"] = h.latency_ms
            else:
                entry.update(reason=h.reason, detail=h.detail)
            if s.caps:
                entry.update(search_method=s.caps.method, sorts=s.caps.sorts)
            out.append(entry)
        return FastJSON({"sites": out, "links": [link("root", base(request))]})

    @router.get("/collections", summary="Collections of every site")
    async def collections(request: Request) -> FastJSON:
        b = base(request)
        view = await fed.collections()
        return FastJSON(
            {
                "collections": [collection_doc(b, c) for c in view.collections.values()],
                "links": [link("self", f"{b}collections"), link("root", b), link("parent", b)],
                "federation:missing": sorted(view.missing),
                "federation:stale": sorted(view.stale),
            }
        )

    async def _collection(cid: str) -> dict[str, Any]:
        view = await fed.collections()
        coll = view.collections.get(cid)
        if coll is None:
            raise ApiError(404, "NotFound", f"no collection {cid!r} in the federation")
        return coll

    @router.get("/collections/{collection_id}", summary="One collection")
    async def collection(request: Request, collection_id: str) -> FastJSON:
        return FastJSON(collection_doc(base(request), await _collection(collection_id)))

    @router.get("/collections/{collection_id}/items", summary="Items of one collection")
    async def items(
        request: Request,
        collection_id: str,
        bbox: str | None = Query(None, description="west,south,east,north"),
        datetime: str | None = Query(None, description="RFC 3339 instant or interval"),
        limit: int | None = Query(None, description="items per page"),
        sortby: str | None = Query(None, description="e.g. -properties.datetime,id"),
        filter: str | None = Query(None, description="CQL2 filter, e.g. eo:cloud_cover < 20"),
        token: str | None = Query(None, description="paging token from a next link"),
    ) -> FastJSON:
        await _collection(collection_id)
        raw = dict(request.query_params)
        raw["collections"] = [collection_id]
        params = check(raw)
        out = await fed.search(params)
        return search_response(
            request,
            base(request),
            params,
            out,
            f"collections/{quote(collection_id, safe='')}/items",
            post=False,
        )

    @router.get("/collections/{collection_id}/items/{item_id}", summary="One item")
    async def item(request: Request, collection_id: str, item_id: str) -> FastJSON:
        coll = await _collection(collection_id)
        found, holders, failed = await fed.item(collection_id, item_id)
        if found is None:
            if failed and len(failed) == len(coll["federation:sites"]):
                raise ApiError(
                    502,
                    "AllSitesFailed",
                    "every site holding the collection failed: "
                    + "; ".join(f"{n}: {f.reason}" for n, f in failed.items()),
                    **{"federation:missing": sorted(failed)},
                )
            raise ApiError(
                404,
                "NotFound",
                f"no item {item_id!r} in collection {collection_id!r}",
                **({"federation:missing": sorted(failed)} if failed else {}),
            )
        doc = item_doc(base(request), found)
        doc["properties"] = {**(doc.get("properties") or {}), "federation:sites": holders}
        return geojson(doc)

    @router.get("/search", summary="Item Search (GET)")
    async def search_get(
        request: Request,
        bbox: str | None = Query(None, description="west,south,east,north"),
        intersects: str | None = Query(None, description="GeoJSON geometry"),
        datetime: str | None = Query(None, description="RFC 3339 instant or interval"),
        collections: str | None = Query(None, description="comma-separated collection ids"),
        ids: str | None = Query(None, description="comma-separated item ids"),
        limit: int | None = Query(None, description="items per page"),
        sortby: str | None = Query(None, description="e.g. -properties.datetime,id"),
        filter: str | None = Query(None, description="CQL2 filter, e.g. eo:cloud_cover < 20"),
        token: str | None = Query(None, description="paging token from a next link"),
    ) -> FastJSON:
        params = check(dict(request.query_params))
        out = await fed.search(params)
        return search_response(request, base(request), params, out, "search", post=False)

    @router.post("/search", summary="Item Search (POST)")
    async def search_post(request: Request, body: SearchBody) -> FastJSON:
        params = check(body.model_dump(exclude_unset=True), post=True)
        out = await fed.search(params)
        return search_response(request, base(request), params, out, "search", post=True)

    @router.get("/api", include_in_schema=False)
    async def openapi() -> FastJSON:
        return FastJSON(app.openapi(), media_type=OPENAPI)

    @router.get("/api.html", include_in_schema=False)
    async def openapi_html() -> Any:
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url=f"{prefix}api", title=settings["title"])

    app.include_router(router)
    if prefix != "/":

        @app.get(prefix.rstrip("/"), include_in_schema=False)
        async def _slash() -> RedirectResponse:
            return RedirectResponse(prefix)

    return app
