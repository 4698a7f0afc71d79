"""The query language users of C-SCALE's EO-MQS rely on (issue #23 item 5; the tutorial
c-scale-tutorial-eo-mqs): CQL2 ``filter`` in cql2-text and cql2-json, ``sortby`` on any
property (``eo:cloud_cover``), site-qualified collection ids (``SITE|collection``), a
``collections`` string, unknown collections reported per collection, ``/queryables``.

Over real servers: a site that filters and sorts itself, a site that sorts but cannot filter
(EO-MQS evaluates the filter on its items) and a rustac site that can do neither (EO-MQS
sorts and filters its items). Every expectation is computed here from the data, independently
of EO-MQS (stable sorts, least significant key first).
"""

from __future__ import annotations

import random
from contextlib import ExitStack

import pytest
import requests
from sitekit import (
    TestSite,
    eomqs_server,
    make_collection,
    make_item,
    page_through,
    rustac_site,
    serve,
)


def _items(coll: str, start: int, n: int, rng: random.Random) -> list[dict]:
    out = []
    for k in range(start, start + n):
        item = make_item(coll, k, rng)
        item["properties"]["eo:cloud_cover"] = rng.choice([0, 5.5, 12, 30, 30, 47.25, 80, 99])
        out.append(item)
    return out


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """(site entries, sites by name, items by site name) of three sites with overlap."""
    rng = random.Random(2323)
    s2 = _items("sentinel-2", 0, 70, rng)
    ls = _items("landsat", 0, 40, rng)
    data = {
        "filtering": s2[:40],
        "sorting": s2[25:] + ls[:20],
        "rustac": s2[60:] + ls[10:],
    }
    sites = {
        "filtering": TestSite(data["filtering"], collections=("sentinel-2",), filters=True),
        "sorting": TestSite(data["sorting"], collections=("sentinel-2", "landsat"), paging="POST"),
    }
    root = tmp_path_factory.mktemp("ql")
    with ExitStack() as stack:
        entries = []
        for name, site in sites.items():
            srv = stack.enter_context(serve(site.app))
            entries.append({"name": name, "url": srv.url, "timeout": 10})
        url = stack.enter_context(
            rustac_site(
                root / "rustac",
                [make_collection("sentinel-2"), make_collection("landsat")],
                data["rustac"],
            )
        )
        entries.append({"name": "rustac", "url": url, "timeout": 10})
        yield entries, sites, data


def _order(items: list[dict], keys: list[tuple[str, bool]]) -> list[tuple[str, str]]:
    """(collection, id) of the de-duplicated union sorted by ``keys`` (property, desc), then
    id and collection ascending; a missing property last in either direction."""
    uniq = {(i["collection"], i["id"]): i for i in items}
    out = sorted(uniq.values(), key=lambda i: i["collection"])
    out.sort(key=lambda i: i["id"])
    for prop, desc in reversed(keys):
        present = [i for i in out if i["properties"].get(prop) is not None]
        missing = [i for i in out if i["properties"].get(prop) is None]
        present.sort(key=lambda i: i["properties"][prop], reverse=desc)
        out = present + missing
    return [(i["collection"], i["id"]) for i in out]


def _everything(data: dict) -> list[dict]:
    return [i for items in data.values() for i in items]


def _got(pages) -> list[tuple[str, str]]:
    assert all(status == 200 for status, _ in pages), pages[-1]
    return [(f["collection"], f["id"]) for _, doc in pages for f in doc["features"]]


def test_cql2_text_and_json_filter_select_the_same_items_on_every_kind_of_site(mixed):
    """The tutorial's ``eo:cloud_cover < 30`` filter (GET, cql2-text) and its cql2-json form
    (POST), paged 7 at a time: exactly the matching items of all three sites, in order, each
    once. The site that filters gets the filter; the others do not (EO-MQS evaluates it)."""
    entries, sites, data = mixed
    want = _order(
        [i for i in _everything(data) if i["properties"]["eo:cloud_cover"] < 30],
        [("datetime", True)],
    )
    assert 0 < len(want) < len(_order(_everything(data), [("datetime", True)]))
    with eomqs_server(entries, page_cache_ttl=0) as srv:
        for site in sites.values():
            site.bodies.clear()
        got_get = _got(
            page_through(srv.url, {"filter": "eo:cloud_cover < 30", "limit": 7}, method="GET")
        )
        json_filter = {"op": "<", "args": [{"property": "eo:cloud_cover"}, 30]}
        got_post = _got(
            page_through(srv.url, {"filter": json_filter, "filter-lang": "cql2-json", "limit": 7})
        )
    assert got_get == want
    assert got_post == want
    assert all("filter" in b for b in sites["filtering"].bodies)
    assert not any("filter" in b for b in sites["sorting"].bodies)


def test_filter_combines_with_bbox_collections_and_spatial_operators(mixed):
    entries, _, data = mixed
    flt = (
        "collection = 'sentinel-2' AND eo:cloud_cover BETWEEN 5 AND 50 AND "
        "S_INTERSECTS(geometry, POLYGON((-10 40, 0 40, 0 50, -10 50, -10 40)))"
    )
    want = _order(
        [
            i
            for i in _everything(data)
            if i["collection"] == "sentinel-2"
            and 5 <= i["properties"]["eo:cloud_cover"] <= 50
            and i["geometry"]["coordinates"][0] <= 0
        ],
        [("datetime", True)],
    )
    with eomqs_server(entries) as srv:
        got = _got(page_through(srv.url, {"filter": flt, "limit": 5}, method="GET"))
    assert got == want and want


@pytest.mark.parametrize("desc", [False, True])
def test_sortby_cloud_cover_pages_the_exact_union_in_order(mixed, desc):
    """``sortby`` on ``properties.eo:cloud_cover`` (many ties: the total order's id and
    collection decide), across a sorting site, another and rustac (sorted by EO-MQS): every
    item once, in order, page after page, the order never flagged as unsure."""
    entries, _, data = mixed
    want = _order(_everything(data), [("eo:cloud_cover", desc)])
    sortby = [{"field": "properties.eo:cloud_cover", "direction": "desc" if desc else "asc"}]
    with eomqs_server(entries) as srv:
        pages = page_through(srv.url, {"sortby": sortby, "limit": 9})
        get_pages = page_through(
            srv.url, {"sortby": ("-" if desc else "") + "eo:cloud_cover", "limit": 9}, "GET"
        )
    assert _got(pages) == want
    assert _got(get_pages) == want
    assert not any(doc.get("federation:unsorted") for _, doc in pages)


def test_site_qualified_collection_ids_and_a_collections_string(mixed):
    """``SORTING|landsat`` (the original MQS's ids, site name in any case) searches that site
    only; a POST ``collections`` string is one id (stac-api-validator's sort class sends one)."""
    entries, _, data = mixed
    landsat_sorting = _order(
        [i for i in data["sorting"] if i["collection"] == "landsat"], [("datetime", True)]
    )
    landsat_all = _order(
        [i for i in _everything(data) if i["collection"] == "landsat"], [("datetime", True)]
    )
    with eomqs_server(entries) as srv:
        got = _got(page_through(srv.url, {"collections": ["SORTING|landsat"], "limit": 50}))
        as_string = _got(page_through(srv.url, {"collections": "landsat", "limit": 50}))
        mixed_ids = page_through(
            srv.url, {"collections": "rustac|landsat,SORTING|landsat", "limit": 50}, "GET"
        )
    assert got == landsat_sorting
    assert as_string == landsat_all
    assert set(_got(mixed_ids)) == set(landsat_all) and len(_got(mixed_ids)) == len(landsat_all)
    assert set(mixed_ids[0][1]["federation:sites"]) == {"sorting", "rustac"}


def test_an_unknown_collection_among_known_ones_is_reported_not_fatal(mixed):
    """Decision (documented): the known collections are searched and every page names the
    unknown ones in ``federation:unknown_collections``; only when none is known is it a 400."""
    entries, _, data = mixed
    want = _order(
        [i for i in _everything(data) if i["collection"] == "landsat"], [("datetime", True)]
    )
    with eomqs_server(entries) as srv:
        pages = page_through(srv.url, {"collections": ["landsat", "nope", "X|landsat"], "limit": 8})
        r = requests.post(srv.url + "search", json={"collections": ["nope"]}, timeout=30)
    assert _got(pages) == want
    assert len(pages) > 1
    assert all(doc["federation:unknown_collections"] == ["nope", "X|landsat"] for _, doc in pages)
    assert r.status_code == 400 and r.json()["code"] == "UnknownCollection"


def test_queryables_are_merged_across_sites_and_linked(tmp_path):
    """``/queryables`` holds the core queryables and each site's (first site wins), with the
    ``$id``/``$schema``/``type`` the filter extension requires, linked from the landing page."""
    one = TestSite([], collections=("c1",))
    two = TestSite([], collections=("c1",))
    one.queryables = {"eo:cloud_cover": {"type": "number", "minimum": 0, "maximum": 100}}
    two.queryables = {
        "eo:cloud_cover": {"type": "string"},
        "platform": {"type": "string", "enum": ["sentinel-2a"]},
    }
    with serve(one.app) as a, serve(two.app) as b:
        sites = [{"name": "one", "url": a.url}, {"name": "two", "url": b.url}]
        with eomqs_server(sites) as srv:
            landing = requests.get(srv.url, timeout=30).json()
            r = requests.get(srv.url + "queryables", timeout=30)
    doc = r.json()
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/schema+json")
    assert doc["$id"] == srv.url + "queryables" and doc["type"] == "object"
    assert doc["properties"]["eo:cloud_cover"]["type"] == "number"
    assert doc["properties"]["platform"]["enum"] == ["sentinel-2a"]
    assert {"id", "collection", "datetime", "geometry"} <= set(doc["properties"])
    rels = {ln["rel"]: ln["href"] for ln in landing["links"]}
    assert rels["http://www.opengis.net/def/rel/ogc/1.0/queryables"] == srv.url + "queryables"


@pytest.mark.slow
def test_filter_and_cloud_cover_sort_over_the_embedded_pgstac_and_rustac_sites():
    """The sample federation of ``cscale-hub up``: pgstac filters and sorts itself (it gets the
    filter), rustac does neither (EO-MQS does both). ``eo:cloud_cover < 40`` and ``sortby``
    ``eo:cloud_cover`` page exactly the union computed from the sites' own items."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from cscale_extensions import config as settings
    from cscale_extensions.localstack.eodata import eodata_dir, prepare
    from cscale_extensions.localstack.sites import embedded_federation
    from cscale_extensions.localstack.sites.documents import site_documents
    from cscale_extensions.localstack.sites.layout import SITES
    from cscale_extensions.localstack.supervisor import Supervisor

    if not Path("/usr/lib/postgresql/15/bin/postgres").exists():
        pytest.skip("PostgreSQL 15 is not installed (scripts/apt-packages.txt)")
    data = Path(tempfile.mkdtemp(prefix="eomqs-ql-", dir="/tmp"))  # postgres must reach it
    os.chmod(data, 0o755)
    sup = None
    try:
        prepare(data)
        specs, sites = embedded_federation(settings.load(None), data)
        sup = Supervisor(data / "logs", f"eomqs-ql-{os.getpid()}")
        sup.start_all(specs)
        entries = [{"name": s["name"], "url": s["url"]} for s in sites]
        # what the sites are loaded with (their documents, not asked through EO-MQS)
        eodata = eodata_dir(data)
        everything = [i for d in SITES for i in site_documents(d, eodata, "http://x")[1]]
        low = [
            i
            for i in everything
            if i["properties"].get("eo:cloud_cover") is not None
            and i["properties"]["eo:cloud_cover"] < 40
        ]
        want_low = _order(low, [("datetime", True)])
        want_cc = _order(everything, [("eo:cloud_cover", False)])
        with eomqs_server(entries) as srv:
            pages = page_through(srv.url, {"filter": "eo:cloud_cover < 40", "limit": 7}, "GET")
            sorted_pages = page_through(
                srv.url, {"sortby": [{"field": "eo:cloud_cover", "direction": "asc"}], "limit": 9}
            )
            fed = requests.get(srv.url + "federation", timeout=30).json()
    finally:
        if sup is not None:
            sup.stop()
        shutil.rmtree(data, ignore_errors=True)
    assert 0 < len(want_low) < len(_order(everything, [("datetime", True)]))
    assert _got(pages) == want_low
    assert _got(sorted_pages) == want_cc
    first = pages[0][1]["federation:sites"]
    filtering = {name: entry.get("filtering") for name, entry in first.items()}
    sorts = {s["name"]: s.get("sorts") for s in fed["sites"]}
    for name, where in filtering.items():
        assert where == ("site" if sorts[name] else "eomqs"), (name, filtering, sorts)
    assert not any(doc.get("federation:unsorted") for _, doc in sorted_pages)
