"""pystac-client end to end against a standalone EO-MQS over three real rustac sites."""

from __future__ import annotations

import pytest
from pystac_client import Client
from sitekit import eomqs_server, expected_order


@pytest.fixture(scope="module")
def eomqs(rustac_federation):
    entries, data = rustac_federation
    with eomqs_server(entries) as srv:
        yield srv, data


def _all(data):
    return [i for items in data.values() for i in items]


def _ids(items):
    return [(i.collection_id, i.id) for i in items]


def test_items_over_many_pages_is_the_deduplicated_union_in_order(eomqs):
    srv, data = eomqs
    client = Client.open(srv.url)
    want = expected_order(_all(data))
    for method in ("POST", "GET"):
        got = _ids(client.search(limit=7, max_items=None, method=method).items())
        assert len(got) == len(set(got)), "duplicates across pages"
        assert got == want, method
    # copies of an item held by two sites are one result naming both sites
    shared = [i for i in client.search(limit=50, ids=["sentinel-2-00045"]).items()]
    assert [i.properties["federation:sites"] for i in shared] == [["site-a", "site-b"]]


@pytest.mark.parametrize(
    "sortby,key", [("+id", "id"), ("-id", "-id"), ("+properties.datetime", "datetime")]
)
def test_sortby_both_directions(eomqs, sortby, key):
    srv, data = eomqs
    got = _ids(Client.open(srv.url).search(limit=9, sortby=sortby, collections=["landsat"]).items())
    want = expected_order([i for i in _all(data) if i["collection"] == "landsat"], key)
    assert got == want


def test_filters_bbox_datetime_collections_ids(eomqs):
    srv, data = eomqs
    client = Client.open(srv.url)
    items = _all(data)
    bbox = [-5.0, 41.0, 5.0, 47.0]
    got = _ids(client.search(bbox=bbox, collections=["sentinel-2"], limit=5).items())
    want = expected_order(
        [
            i
            for i in items
            if i["collection"] == "sentinel-2"
            and bbox[0] <= i["bbox"][0] <= bbox[2]
            and bbox[1] <= i["bbox"][1] <= bbox[3]
        ]
    )
    assert got == want and got
    dt = "2021-01-10T00:00:00Z/2021-02-05T00:00:00Z"
    got = _ids(client.search(datetime=dt, limit=6).items())
    want = expected_order(
        [
            i
            for i in items
            if "2021-01-10T00:00:00Z" <= i["properties"]["datetime"] <= "2021-02-05T00:00:00Z"
        ]
    )
    assert got == want and got
    ids = ["landsat-00020", "sentinel-2-00001", "sentinel-2-00070", "nope"]
    got = _ids(client.search(ids=ids, limit=2).items())
    assert got == expected_order([i for i in items if i["id"] in ids])
    assert len(got) == 3


def test_collections_are_merged_and_name_their_sites(eomqs):
    srv, _ = eomqs
    client = Client.open(srv.url)
    colls = {c.id: c for c in client.get_collections()}
    assert set(colls) == {"sentinel-2", "landsat"}
    assert colls["sentinel-2"].extra_fields["federation:sites"] == ["site-a", "site-b"]
    assert colls["landsat"].extra_fields["federation:sites"] == ["site-b", "site-c"]
    item = client.get_collection("landsat").get_item("landsat-00020")
    assert item is not None and item.properties["federation:sites"] == ["site-b", "site-c"]


def test_search_goes_only_to_sites_holding_the_collection(eomqs):
    import requests

    srv, _ = eomqs
    doc = requests.post(
        srv.url + "search", json={"collections": ["landsat"], "limit": 3}, timeout=30
    ).json()
    assert set(doc["federation:sites"]) == {"site-b", "site-c"}
    assert doc["federation:missing"] == []
    doc = requests.get(
        srv.url + "search", params={"collections": "sentinel-2", "limit": 1}, timeout=30
    ).json()
    assert set(doc["federation:sites"]) == {"site-a", "site-b"}


def test_intersects(eomqs):
    srv, data = eomqs
    poly = {"type": "Polygon", "coordinates": [[[-5, 41], [5, 41], [5, 47], [-5, 47], [-5, 41]]]}
    got = _ids(
        Client.open(srv.url).search(intersects=poly, collections=["landsat"], limit=4).items()
    )
    want = expected_order(
        [
            i
            for i in _all(data)
            if i["collection"] == "landsat" and -5 <= i["bbox"][0] <= 5 and 41 <= i["bbox"][1] <= 47
        ]
    )
    assert got == want and got
