"""Real servers for EO-MQS tests: rustac sites, a small STAC site with fault/latency injection,
and EO-MQS itself, all on free loopback ports (also used by bench/federated_search.py)."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cscale_extensions import config as settings
from cscale_extensions.localstack.sites.rustac_site import rustac_binary
from cscale_extensions.net import free_port, http_ready, wait_for

STAC = "1.1.0"


# -- data -----------------------------------------------------------------------------------
def make_item(coll: str, n: int, rng: random.Random) -> dict[str, Any]:
    x, y = round(rng.uniform(-9.5, 9.5), 3), round(rng.uniform(40.5, 49.5), 3)
    day = rng.randrange(0, 60)
    dt = f"2021-{1 + day // 28:02d}-{1 + day % 28:02d}T{rng.randrange(24):02d}:00:00Z"
    return {
        "type": "Feature",
        "stac_version": STAC,
        "stac_extensions": [],
        "id": f"{coll}-{n:05d}",
        "collection": coll,
        "geometry": {"type": "Point", "coordinates": [x, y]},
        "bbox": [x, y, x, y],
        "properties": {"datetime": dt},
        "links": [],
        "assets": {},
    }


def make_collection(cid: str) -> dict[str, Any]:
    return {
        "type": "Collection",
        "stac_version": STAC,
        "stac_extensions": [],
        "id": cid,
        "description": f"test collection {cid}",
        "license": "CC-BY-4.0",
        "extent": {
            "spatial": {"bbox": [[-10.0, 40.0, 10.0, 50.0]]},
            "temporal": {"interval": [["2021-01-01T00:00:00Z", "2021-03-31T00:00:00Z"]]},
        },
        "links": [],
    }


def expected_order(items: list[dict[str, Any]], sort: str = "-datetime") -> list[tuple[str, str]]:
    """(collection, id) of the union of ``items`` (copies counted once) in EO-MQS's order,
    computed here independently of EO-MQS: stable sorts, least significant key first."""
    uniq = {(i["collection"], i["id"]): i for i in items}
    out = sorted(uniq.values(), key=lambda i: i["collection"])
    out.sort(key=lambda i: i["id"], reverse=sort == "-id")
    if sort.endswith("datetime"):
        out.sort(key=lambda i: i["properties"]["datetime"], reverse=sort.startswith("-"))
    return [(i["collection"], i["id"]) for i in out]


# -- servers in threads ---------------------------------------------------------------------
class ThreadServer:
    """An ASGI app served by uvicorn in a thread on a free loopback port."""

    def __init__(self, app, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, ready_path: str = "") -> ThreadServer:
        self.thread.start()
        if not wait_for(lambda: self.server.started, 20):
            raise RuntimeError("server did not start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@contextmanager
def serve(app) -> Iterator[ThreadServer]:
    srv = ThreadServer(app).start()
    try:
        yield srv
    finally:
        srv.stop()


class TestSite:
    """A small STAC API site whose data and behaviour tests change at will.

    ``sorts``: honours sortby (and says so in its conformance; on any property, missing values
    last); ``filters``: evaluates a CQL2 ``filter`` (with the cql2 library) and advertises
    it; ``paging``: "GET" (token in the next href) or "POST" (skip in the next body);
    ``delay``: seconds added to every answer; ``fault``: None, "500" or "garbage" for every
    answer; ``count``: report numberMatched.
    """

    __test__ = False

    def __init__(
        self,
        items=(),
        collections=("c1",),
        sorts=True,
        paging="GET",
        delay=0.0,
        fault=None,
        methods=("GET", "POST"),
        count=True,
        filters=False,
    ):
        self.items = list(items)
        self.collections = list(collections)
        self.sorts, self.paging, self.delay, self.fault = sorts, paging, delay, fault
        self.methods = methods
        self.count = count  # report numberMatched (costs a full scan)
        self.filters = filters
        self.queryables: dict[str, Any] | None = None  # served at /queryables (else 404)
        self.requests = 0
        self.served = 0  # items returned by searches, in all
        self.bodies: deque[dict[str, Any]] = deque(maxlen=200)  # recent search queries
        self._order_cache: dict[str, Any] = {}
        self.app = Starlette(
            routes=[
                Route("/", self.landing),
                Route("/conformance", self.conformance),
                Route("/queryables", self.get_queryables),
                Route("/collections", self.list_collections),
                Route("/collections/{cid}/items/{iid}", self.item),
                Route("/search", self.search, methods=["GET", "POST"]),
            ]
        )

    @property
    def items(self) -> list[dict[str, Any]]:
        return self._items

    @items.setter
    def items(self, value) -> None:
        self._items = list(value)
        self._order_cache = {}

    async def _gate(self) -> Response | None:
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fault == "500":
            return JSONResponse({"code": "boom"}, status_code=500)
        if self.fault == "garbage":
            return Response("{not json at all", media_type="application/json")
        return None

    def _conforms(self) -> list[str]:
        out = [
            "https://api.stacspec.org/v1.0.0/core",
            "https://api.stacspec.org/v1.0.0/item-search",
        ]
        out += ["https://api.stacspec.org/v1.0.0/item-search#sort"] if self.sorts else []
        if self.filters:
            out += [
                "https://api.stacspec.org/v1.0.0/item-search#filter",
                "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
                "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
            ]
        return out

    async def landing(self, request: Request) -> Response:
        if (bad := await self._gate()) is not None:
            return bad
        base = str(request.base_url)
        links = [{"rel": "search", "href": f"{base}search", "method": m} for m in self.methods]
        links += [
            {"rel": "data", "href": f"{base}collections"},
            {"rel": "conformance", "href": f"{base}conformance"},
        ]
        return JSONResponse(
            {
                "type": "Catalog",
                "id": "test",
                "stac_version": STAC,
                "description": "test site",
                "conformsTo": self._conforms(),
                "links": links,
            }
        )

    async def conformance(self, request: Request) -> Response:
        return (await self._gate()) or JSONResponse({"conformsTo": self._conforms()})

    async def get_queryables(self, request: Request) -> Response:
        if (bad := await self._gate()) is not None:
            return bad
        if self.queryables is None:
            return JSONResponse({"code": "NotFound"}, status_code=404)
        doc = {"$id": f"{request.base_url}queryables", "type": "object"}
        return JSONResponse({**doc, "properties": self.queryables})

    async def list_collections(self, request: Request) -> Response:
        if (bad := await self._gate()) is not None:
            return bad
        return JSONResponse(
            {"collections": [make_collection(c) for c in self.collections], "links": []}
        )

    async def item(self, request: Request) -> Response:
        if (bad := await self._gate()) is not None:
            return bad
        for i in self.items:
            if (
                i["collection"] == request.path_params["cid"]
                and i["id"] == request.path_params["iid"]
            ):
                return JSONResponse(i)
        return JSONResponse({"code": "NotFound"}, status_code=404)

    def _ordered(self, sortby: list[dict[str, str]]) -> list[dict[str, Any]]:
        """The items in the order of ``sortby`` (cached until ``items`` is replaced)."""
        key = json.dumps(sortby if self.sorts else [])
        if self._order_cache.get("key") != key:
            out = list(self.items)
            if self.sorts:
                for s in reversed(sortby or []):
                    f = s["field"]
                    desc = s["direction"] == "desc"
                    if f.endswith("datetime"):

                        def get(i):
                            return i["properties"]["datetime"]
                    elif f.startswith("properties."):

                        def get(i, name=f[11:], desc=desc):  # after "properties."
                            v = i["properties"].get(name)
                            return (v is None) != desc, v if v is not None else 0
                    else:

                        def get(i, f=f):
                            return i[f]

                    out.sort(key=get, reverse=desc)
            self._order_cache = {"key": key, "items": out}
        return self._order_cache["items"]

    def _select(
        self, q: dict[str, Any], stop: int | None = None
    ) -> tuple[list[dict[str, Any]], bool]:
        """Matching items in order; with ``stop``, only the first ``stop`` (and whether more exist)."""
        colls = set(q.get("collections") or [])
        ids = set(q.get("ids") or [])
        box = q.get("bbox")
        if box:
            box = box[:4] if len(box) == 4 else [box[0], box[1], box[3], box[4]]
        lo = hi = None
        if q.get("datetime"):
            a, sep, b = q["datetime"].partition("/")
            b = b if sep else a
            lo = None if a in ("", "..") else _instant(a)
            hi = None if b in ("", "..") else _instant(b)
        out: list[dict[str, Any]] = []
        match = None
        if self.filters and q.get("filter"):
            import cql2

            expr = cql2.Expr(q["filter"])

            def match(i):
                try:
                    return expr.matches(i) is True
                except Exception:  # noqa: BLE001
                    return False

        for i in self._ordered(q.get("sortby") or []):
            if match is not None and not match(i):
                continue
            if colls and i["collection"] not in colls or ids and i["id"] not in ids:
                continue
            if box and not (box[0] <= i["bbox"][0] <= box[2] and box[1] <= i["bbox"][1] <= box[3]):
                continue
            dt = _instant(i["properties"]["datetime"])
            if lo is not None and dt < lo or hi is not None and dt > hi:
                continue
            if stop is not None and len(out) == stop:
                return out, True
            out.append(i)
        return out, False

    async def search(self, request: Request) -> Response:
        if (bad := await self._gate()) is not None:
            return bad
        if request.method == "POST":
            q = await request.json()
        else:
            raw = {k: v[0] for k, v in parse_qs(request.url.query).items()}
            q = dict(raw)
            for k in ("collections", "ids"):
                if k in q:
                    q[k] = q[k].split(",")
            if "bbox" in q:
                q["bbox"] = [float(v) for v in q["bbox"].split(",")]
            if "sortby" in q:
                q["sortby"] = [
                    {"field": s.lstrip("+-"), "direction": "desc" if s.startswith("-") else "asc"}
                    for s in q["sortby"].split(",")
                ]
            q["skip"] = int(q.get("page", 0))
            if q.get("filter-lang") == "cql2-json" and "filter" in q:
                q["filter"] = json.loads(q["filter"])
        self.bodies.append(q)
        limit, skip = int(q.get("limit", 10)), int(q.get("skip", 0))
        hits, more = self._select(q, stop=skip + limit)
        page = hits[skip : skip + limit]
        self.served += len(page)
        links = []
        if more:
            base = f"{request.base_url}search"
            if self.paging == "POST" and request.method == "POST":
                links.append(
                    {
                        "rel": "next",
                        "href": base,
                        "method": "POST",
                        "body": {"skip": skip + limit},
                        "merge": True,
                    }
                )
            else:
                params = (
                    {k: v for k, v in parse_qs(request.url.query).items()}
                    if request.method == "GET"
                    else {}
                )
                params = {k: v[0] for k, v in params.items()} if params else _as_get(q)
                params["page"] = str(skip + limit)
                links.append(
                    {"rel": "next", "href": f"{base}?{urlencode(params)}", "method": "GET"}
                )
        doc = {"type": "FeatureCollection", "features": page, "links": links}
        doc["numberReturned"] = len(page)
        if not more:
            doc["numberMatched"] = len(hits)
        elif self.count:
            doc["numberMatched"] = len(self._select(q)[0])
        return JSONResponse(doc)


def _instant(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _as_get(q: dict[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in q.items():
        if k in ("collections", "ids", "bbox"):
            out[k] = ",".join(str(x) for x in v)
        elif k == "sortby":
            out[k] = ",".join(("-" if s["direction"] == "desc" else "+") + s["field"] for s in v)
        elif k == "filter" and isinstance(v, dict):
            out[k] = json.dumps(v)
        elif k not in ("skip", "intersects"):
            out[k] = str(v)
    return out


@contextmanager
def rustac_site(
    workdir: Path, collections: list[dict[str, Any]], items: list[dict[str, Any]]
) -> Iterator[str]:
    """``rustac serve`` (in-memory) loaded with ``collections`` and ``items``; yields its URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    files = []
    for c in collections:
        p = workdir / f"collection-{c['id']}.json"
        p.write_text(json.dumps(c))
        files.append(str(p))
    p = workdir / "items.json"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    files.append(str(p))
    port = free_port()
    log = open(workdir / "rustac.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [rustac_binary(), "serve", "--addr", f"127.0.0.1:{port}", *files],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        if not wait_for(lambda: http_ready(url, 1), 30):
            raise RuntimeError(
                f"rustac did not start: {(workdir / 'rustac.log').read_text()[-500:]}"
            )
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def eomqs_settings(**overrides: Any) -> dict[str, Any]:
    s = settings.defaults()["eomqs"]
    s.update({"token_secret": "test-secret", "log_level": "WARNING"})
    s.update(overrides)
    return s


@contextmanager
def eomqs_server(
    sites: list[dict[str, Any]], prefix: str = "/", **overrides: Any
) -> Iterator[ThreadServer]:
    """EO-MQS over ``sites`` served on a free port; ``srv.url`` is its landing page."""
    from cscale_extensions.services.eomqs.app import create_app

    s = eomqs_settings(**overrides)
    app = create_app(sites, s, s["token_secret"].encode(), prefix)
    srv = ThreadServer(app).start()
    srv.url = f"http://127.0.0.1:{srv.port}{prefix}"
    try:
        yield srv
    finally:
        srv.stop()


def page_through(url: str, body: dict[str, Any], method: str = "POST", max_pages: int = 10_000):
    """Every page of a search as (status, document) pairs, following next links (requests)."""
    import requests

    pages = []
    s = requests.Session()
    r = (
        s.post(url + "search", json=body, timeout=60)
        if method == "POST"
        else s.get(url + "search", params=body, timeout=60)
    )
    for _ in range(max_pages):
        doc = r.json()
        pages.append((r.status_code, doc))
        if r.status_code != 200:
            break
        nxt = [ln for ln in doc.get("links", []) if ln["rel"] == "next"]
        if not nxt:
            break
        ln = nxt[0]
        if ln.get("method", "GET") == "POST":
            r = s.post(ln["href"], json=ln["body"], timeout=60)
        else:
            r = s.get(ln["href"], timeout=60)
    return pages


def elapsed(f, *a, **kw):
    t0 = time.perf_counter()
    out = f(*a, **kw)
    return out, time.perf_counter() - t0
