"""Every link EO-MQS serves is reachable through EO-MQS: links of site documents that point into
a site (e.g. a collection's ``queryables``) are rewritten to EO-MQS or dropped; links elsewhere
(licences) are kept. Also: one STAC version on the landing page and the collections."""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from sitekit import TestSite, eomqs_server, make_collection, make_item, serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cscale_extensions.services.eomqs.app import CONFORMANCE

LICENSE = "https://example.org/licences/cc-by-4.0"
PREFIX = "/services/eo-mqs/"


class LinkySite(TestSite):
    """A site whose collection and items carry links into the site itself and elsewhere."""

    __test__ = False

    async def list_collections(self, request: Request) -> Response:
        base = str(request.base_url)
        colls = []
        for cid in self.collections:
            c = {**make_collection(cid), "stac_version": "1.0.0"}  # an older site
            c["links"] = [
                {"rel": "self", "href": f"{base}collections/{cid}"},
                {
                    "rel": "http://www.opengis.net/def/rel/ogc/1.0/queryables",
                    "href": f"{base}collections/{cid}/queryables",
                },
                {"rel": "alternate", "href": f"{base}collections/{cid}", "title": "at the site"},
                {
                    "rel": "related",
                    "href": f"{cid}/items/{cid}-00000",
                },  # relative to the collection
                {"rel": "describedby", "href": "../docs/collection.html"},
                {"rel": "license", "href": LICENSE},
            ]
            c["providers"] = [{"name": "Site operator", "roles": ["host"], "url": base}]
            colls.append(c)
        return JSONResponse({"collections": colls, "links": []})

    def _linked(self, item: dict[str, Any], base: str) -> dict[str, Any]:
        here = f"{base}collections/{item['collection']}/items/{item['id']}"
        return {
            **item,
            "links": [
                {"rel": "self", "href": here},
                {"rel": "alternate", "href": here},
                {"rel": "derived_from", "href": f"{base}raw/{item['id']}.json"},
                {"rel": "via", "href": LICENSE},
                {"rel": "related", "href": "relative/elsewhere.json"},
            ],
        }

    async def search(self, request: Request) -> Response:
        resp = await super().search(request)
        import json

        doc = json.loads(resp.body)
        if "features" in doc:
            base = str(request.base_url)
            doc["features"] = [self._linked(i, base) for i in doc["features"]]
        return JSONResponse(doc, status_code=resp.status_code)

    async def item(self, request: Request) -> Response:
        resp = await super().item(request)
        import json

        doc = json.loads(resp.body)
        if doc.get("type") == "Feature":
            doc = self._linked(doc, str(request.base_url))
        return JSONResponse(doc, status_code=resp.status_code)


@pytest.fixture(scope="module")
def linky():
    rng = random.Random(3)
    site = LinkySite([make_item("c1", n, rng) for n in range(12)])
    with serve(site.app) as s, eomqs_server([{"name": "one", "url": s.url}], PREFIX) as srv:
        yield s.url, srv.url


def _links(doc: Any) -> list[dict[str, Any]]:
    """Every link object anywhere in a JSON document."""
    out: list[dict[str, Any]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == "links" and isinstance(v, list):
                out += [ln for ln in v if isinstance(ln, dict)]
            else:
                out += _links(v)
    elif isinstance(doc, list):
        for v in doc:
            out += _links(v)
    return out


def _documents(url: str) -> dict[str, Any]:
    s = requests.Session()
    docs = {
        "landing": s.get(url, timeout=30),
        "collections": s.get(url + "collections", timeout=30),
        "collection": s.get(url + "collections/c1", timeout=30),
        "items": s.get(url + "collections/c1/items", params={"limit": 5}, timeout=30),
        "search GET": s.get(url + "search", params={"limit": 5}, timeout=30),
        "search POST": s.post(url + "search", json={"limit": 5}, timeout=30),
        "item": s.get(url + "collections/c1/items/c1-00003", timeout=30),
    }
    for name, r in docs.items():
        assert r.status_code == 200, (name, r.text)
    return {name: r.json() for name, r in docs.items()}


def test_every_link_is_eomqs_or_external_and_eomqs_links_answer(linky):
    site_url, url = linky
    docs = _documents(url)
    checked = 0
    s = requests.Session()
    for name, doc in docs.items():
        for ln in _links(doc):
            href = ln["href"]
            assert not href.startswith(site_url), (name, ln)
            assert href.startswith(url) or href == LICENSE, (name, ln)
            if href.startswith(url) and ln.get("method", "GET") == "GET":
                r = s.get(href, timeout=30)
                assert r.status_code == 200, (name, ln, r.status_code, r.text[:200])
                checked += 1
            elif ln.get("method") == "POST":
                r = s.post(href, json=ln.get("body", {}), timeout=30)
                assert r.status_code == 200, (name, ln, r.status_code, r.text[:200])
    assert checked > 20
    providers = docs["collection"]["providers"]
    assert {p["name"] for p in providers} >= {"Site operator", "one"}
    assert all(not p.get("url", "").startswith(site_url) for p in providers)


def test_site_links_are_rewritten_or_dropped(linky):
    site_url, url = linky
    docs = _documents(url)
    coll = {(ln["rel"], ln["href"]) for ln in docs["collection"]["links"]}
    assert ("alternate", f"{url}collections/c1") in coll
    assert ("related", f"{url}collections/c1/items/c1-00000") in coll
    assert ("license", LICENSE) in coll
    rels = [ln["rel"] for ln in docs["collection"]["links"]]
    assert not [r for r in rels if r.endswith("queryables") or r == "describedby"]
    assert rels.count("self") == 1
    item = {(ln["rel"], ln["href"]) for ln in docs["item"]["links"]}
    assert ("alternate", f"{url}collections/c1/items/c1-00003") in item
    assert ("via", LICENSE) in item
    assert not [ln for ln in docs["item"]["links"] if ln["rel"] in ("derived_from", "related")]


def test_rustac_sites_links_stay_within_eomqs(rustac_federation):
    entries, _ = rustac_federation
    with eomqs_server(entries) as srv:
        docs = _documents_rustac(srv.url)
    origins = {urlsplit(e["url"]).netloc for e in entries}
    for name, doc in docs.items():
        for ln in _links(doc):
            assert urlsplit(ln["href"]).netloc not in origins, (name, ln)
            assert ln["href"].startswith(srv.url), (name, ln)


def _documents_rustac(url: str) -> dict[str, Any]:
    s = requests.Session()
    out = {}
    for name, path in [
        ("landing", ""),
        ("collections", "collections"),
        ("collection", "collections/landsat"),
        ("items", "collections/landsat/items?limit=5"),
        ("search", "search?limit=5"),
    ]:
        r = s.get(url + path, timeout=30)
        assert r.status_code == 200, (name, r.text)
        out[name] = r.json()
    return out


def test_landing_page_and_collections_have_one_stac_version(linky):
    _, url = linky
    docs = _documents(url)
    version = docs["landing"]["stac_version"]
    assert version == "1.1.0"
    assert docs["collection"]["stac_version"] == version
    assert {c["stac_version"] for c in docs["collections"]["collections"]} == {version}
    # pystac-client 0.9 recognises the v1.0.0 conformance URIs only: they stay
    assert docs["landing"]["conformsTo"] == CONFORMANCE
    assert all("/v1.0.0/" in c for c in CONFORMANCE if "stacspec" in c)


@pytest.mark.slow
def test_embedded_federation_pgstac_links_stay_within_eomqs():
    """The sample sites of ``cscale-hub up`` (pgstac + rustac): pgstac's collections carry a
    ``queryables`` link and items links at the site; none reaches a user."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from cscale_extensions import config as settings
    from cscale_extensions.localstack.eodata import prepare
    from cscale_extensions.localstack.sites import embedded_federation
    from cscale_extensions.localstack.supervisor import Supervisor

    if not Path("/usr/lib/postgresql/15/bin/postgres").exists():
        pytest.skip("PostgreSQL 15 is not installed (scripts/apt-packages.txt)")
    data = Path(tempfile.mkdtemp(prefix="eomqs-links-", dir="/tmp"))  # postgres must reach it
    os.chmod(data, 0o755)
    sup = None
    try:
        prepare(data)
        specs, sites = embedded_federation(settings.load(None), data)
        sup = Supervisor(data / "logs", f"eomqs-links-{os.getpid()}")
        sup.start_all(specs)
        entries = [{"name": s["name"], "url": s["url"]} for s in sites]
        site_origins = {urlsplit(s["url"]).netloc for s in sites}
        with eomqs_server(entries, PREFIX) as srv:
            s = requests.Session()
            colls = s.get(srv.url + "collections", timeout=30).json()
            docs = [colls]
            for c in colls["collections"]:
                docs.append(s.get(srv.url + f"collections/{c['id']}", timeout=30).json())
                docs.append(
                    s.get(srv.url + f"collections/{c['id']}/items?limit=3", timeout=30).json()
                )
            docs.append(s.get(srv.url, timeout=30).json())
        assert len(docs) > 4
        for doc in docs:
            for ln in _links(doc):
                assert urlsplit(ln["href"]).netloc not in site_origins, ln
                assert ln["href"].startswith(srv.url) or ln["rel"] == "license", ln
            for c in doc.get("collections", []):
                for p in c.get("providers", []):
                    assert urlsplit(p.get("url", "")).netloc not in site_origins, p
        assert {c["stac_version"] for c in colls["collections"]} == {"1.1.0"}
    finally:
        if sup is not None:
            sup.stop()
        shutil.rmtree(data, ignore_errors=True)
