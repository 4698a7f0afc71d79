"""Every embedded site answers STAC API searches (pystac-client, POST) over its share of the data."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from pathlib import Path

import pystac
import pytest
import requests
from pystac_client import Client

from cscale_extensions.localstack.sites.layout import SITES

from .conftest import Federation, needs_postgres

pytestmark = [needs_postgres]
SITE_NAMES = [s.name for s in SITES]


@pytest.fixture(scope="module")
def expected(eodata: Path) -> dict[str, dict[str, set[str]]]:
    """site -> collection -> item ids, from the static catalog and the documented split."""
    catalog = pystac.Catalog.from_file(str(eodata / "stac" / "catalog.json"))
    dates = {(i.collection_id, i.id): i.datetime.date() for i in catalog.get_items(recursive=True)}
    out: dict[str, dict[str, set[str]]] = {}
    for site in SITES:
        per: dict[str, set[str]] = defaultdict(set)
        for h in site.holdings:
            for (coll, iid), d in dates.items():
                if coll == h.collection and h.start <= d <= h.end:
                    per[coll].add(iid)
        out[site.name] = dict(per)
    return out


def _ids(search) -> list[str]:
    return [i.id for i in search.items()]


@pytest.mark.parametrize("name", SITE_NAMES)
def test_site_lists_its_collections(federation: Federation, expected: dict, name: str) -> None:
    client = Client.open(federation.site(name)["url"])
    assert {c.id for c in client.get_collections()} == set(expected[name])


@pytest.mark.parametrize("name", SITE_NAMES)
def test_collections_search_pages_through_everything(
    federation: Federation, expected: dict, name: str
) -> None:
    client = Client.open(federation.site(name)["url"])
    for coll, ids in expected[name].items():
        search = client.search(collections=[coll], limit=4)
        pages = list(search.pages())
        got = [i.id for p in pages for i in p.items]
        assert sorted(got) == sorted(ids)  # no loss, no repeats across pages
        assert len(pages) >= len(ids) // 4


@pytest.mark.parametrize("name", SITE_NAMES)
def test_bbox_search(federation: Federation, expected: dict, name: str) -> None:
    client = Client.open(federation.site(name)["url"])
    landsat = {i for c, ids in expected[name].items() if c.startswith("landsat") for i in ids}
    colorado = [-107.0, 40.2, -106.8, 40.4]
    assert set(_ids(client.search(bbox=colorado, limit=50))) == landsat
    assert _ids(client.search(bbox=[10.0, 50.0, 11.0, 51.0], limit=50)) == []  # nothing there


@pytest.mark.parametrize("name", SITE_NAMES)
def test_datetime_search(federation: Federation, eodata: Path, expected: dict, name: str) -> None:
    client = Client.open(federation.site(name)["url"])
    catalog = pystac.Catalog.from_file(str(eodata / "stac" / "catalog.json"))
    held = {i for ids in expected[name].values() for i in ids}
    want = {
        i.id for i in catalog.get_items(recursive=True) if i.id in held and i.datetime.year == 2009
    }
    got = set(_ids(client.search(datetime="2009-01-01T00:00:00Z/2009-12-31T23:59:59Z", limit=50)))
    assert got == want


@pytest.mark.parametrize("name", SITE_NAMES)
def test_ids_search(federation: Federation, expected: dict, name: str) -> None:
    client = Client.open(federation.site(name)["url"])
    some = sorted(i for ids in expected[name].values() for i in ids)[:3]
    assert sorted(_ids(client.search(ids=some))) == some
    assert _ids(client.search(ids=["no-such-item"])) == []


def test_split_makes_the_federation_worth_searching(expected: dict) -> None:
    l5_eodc, l5_cesnet = expected["eodc"]["landsat-5-tm-sr"], expected["cesnet"]["landsat-5-tm-sr"]
    assert (
        l5_eodc & l5_cesnet and l5_eodc - l5_cesnet and l5_cesnet - l5_eodc
    )  # overlap, duplicates
    assert not expected["eodc"]["landsat-7-etm-sr"] & expected["incd"]["landsat-7-etm-sr"]
    holders = defaultdict(set)
    for site, colls in expected.items():
        for c in colls:
            holders[c].add(site)
    assert holders["sentinel-2-l1c"] == {"cesnet"}


def test_duplicates_are_identical_items(federation: Federation, expected: dict) -> None:
    shared = sorted(expected["eodc"]["landsat-5-tm-sr"] & expected["cesnet"]["landsat-5-tm-sr"])[:2]
    for iid in shared:
        a, b = (
            requests.get(
                f"{federation.site(s)['url']}collections/landsat-5-tm-sr/items/{iid}", timeout=10
            ).json()
            for s in ("eodc", "cesnet")
        )
        assert a["id"] == b["id"] and a["properties"]["datetime"] == b["properties"]["datetime"]
        assert {k: v["href"] for k, v in a["assets"].items()} == {
            k: v["href"] for k, v in b["assets"].items()
        }


def test_collections_name_their_host_and_own_extent(federation: Federation, expected: dict) -> None:
    for name in SITE_NAMES:
        client = Client.open(federation.site(name)["url"])
        for coll in client.get_collections():
            assert any(p.name == name and "host" in (p.roles or []) for p in coll.providers)
            start, end = coll.extent.temporal.intervals[0]
            site = next(s for s in SITES if s.name == name)
            h = next(h for h in site.holdings if h.collection == coll.id)
            assert h.start <= start.date() and end.date() <= h.end


def test_assets_are_http_with_a_local_alternate(federation: Federation, eodata: Path) -> None:
    client = Client.open(federation.site("incd")["url"])
    item = next(client.search(limit=1).items())
    for asset in item.assets.values():
        assert asset.href.startswith("http://127.0.0.1:")
        local = Path(asset.extra_fields["alternate"]["local"]["href"])
        assert local.is_file() and eodata in local.parents
        assert asset.href.endswith(local.relative_to(eodata).as_posix())
        r = requests.get(asset.href, headers={"Range": "bytes=0-3"}, timeout=10)
        assert r.status_code == 206 and r.content == local.read_bytes()[:4]
    assert any("alternate-assets" in e for e in item.stac_extensions)


def test_site_entries_are_ready_for_the_federation_section(federation: Federation) -> None:
    names = [s["name"] for s in federation.sites]
    assert names == SITE_NAMES
    assert len({s["url"] for s in federation.sites}) == len(names)
    for s in federation.sites:
        assert set(s) == {"name", "title", "url", "timeout"}
        assert requests.get(s["url"], timeout=10).json()["type"] == "Catalog"


def test_date_ranges_differ_between_sites(expected: dict, eodata: Path) -> None:
    catalog = pystac.Catalog.from_file(str(eodata / "stac" / "catalog.json"))
    when = {i.id: i.datetime.date() for i in catalog.get_items(recursive=True)}
    spans = {
        name: (
            min(when[i] for ids in colls.values() for i in ids),
            max(when[i] for ids in colls.values() for i in ids),
        )
        for name, colls in expected.items()
    }
    assert len(set(spans.values())) == len(spans)
    assert all(isinstance(a, date) for a, _ in spans.values())


def test_pgstac_site_names_itself_and_supports_more_than_search(federation: Federation) -> None:
    entry = federation.site("eodc")
    landing = requests.get(entry["url"], timeout=10).json()
    assert landing["id"] == "eodc" and landing["title"] == entry["title"]
    conformance = requests.get(f"{entry['url']}conformance", timeout=10).json()["conformsTo"]
    assert any("item-search#sort" in c for c in conformance)
    body = {
        "collections": ["landsat-7-etm-sr"],
        "limit": 100,
        "sortby": [{"field": "properties.eo:cloud_cover", "direction": "asc"}],
    }
    feats = requests.post(f"{entry['url']}search", json=body, timeout=10).json()["features"]
    covers = [f["properties"]["eo:cloud_cover"] for f in feats]
    assert covers == sorted(covers) and len(set(covers)) > 1
