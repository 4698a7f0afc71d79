"""Fault injection: sites that are down, slower than their timeout, answering 500 or garbage."""

from __future__ import annotations

import random

import pytest
import requests
from sitekit import TestSite, eomqs_server, expected_order, make_item, serve

from cscale_extensions.net import free_port, wait_for


@pytest.fixture(scope="module")
def faulty_federation():
    rng = random.Random(7)
    good_items = [make_item("c1", n, rng) for n in range(23)]
    good = TestSite(good_items)
    slow = TestSite([make_item("c1", n, rng) for n in range(100, 110)], delay=3.0)
    err = TestSite(fault="500")
    garbage = TestSite(fault="garbage")
    with serve(good.app) as g, serve(slow.app) as s, serve(err.app) as e, serve(garbage.app) as b:
        sites = [
            {"name": "good", "url": g.url, "timeout": 5},
            {"name": "down", "url": f"http://127.0.0.1:{free_port()}/", "timeout": 2},
            {"name": "slow", "url": s.url, "timeout": 0.5},
            {"name": "err", "url": e.url, "timeout": 2},
            {"name": "garbage", "url": b.url, "timeout": 2},
        ]
        yield sites, good_items


REASONS = {
    "down": "unreachable",
    "slow": "timeout",
    "err": "http 500",
    "garbage": "invalid response",
}


def test_partial_results_name_the_missing_sites(faulty_federation):
    sites, good_items = faulty_federation
    with eomqs_server(sites) as srv:
        r = requests.post(srv.url + "search", json={"limit": 5}, timeout=30)
        assert r.status_code == 200
        doc = r.json()
        assert sorted(doc["federation:missing"]) == sorted(REASONS)
        for name, reason in REASONS.items():
            assert doc["federation:sites"][name]["status"] == "missing"
            assert doc["federation:sites"][name]["reason"] == reason
        assert doc["federation:sites"]["good"]["status"] == "ok"
        # paging continues over the sites that answer; the missing ones stay named on every page
        pages, ids = 0, []
        while True:
            ids += [(f["collection"], f["id"]) for f in doc["features"]]
            pages += 1
            assert sorted(doc["federation:missing"]) == sorted(REASONS)
            nxt = [ln for ln in doc["links"] if ln["rel"] == "next"]
            if not nxt:
                break
            doc = requests.post(nxt[0]["href"], json=nxt[0]["body"], timeout=30).json()
        assert ids == expected_order(good_items)
        assert pages == 5


def test_landing_and_federation_show_site_health(faulty_federation):
    sites, _ = faulty_federation
    with eomqs_server(sites) as srv:
        # the landing page shows what the background health check found, without waiting for it

        def landing_sites():
            return requests.get(srv.url, timeout=30).json()["federation:sites"]

        assert wait_for(
            lambda: "unknown" not in {s["status"] for s in landing_sites().values()}, 30
        )
        shown = landing_sites()
        assert shown["good"]["status"] == "ok"
        for name, reason in REASONS.items():
            assert (shown[name]["status"], shown[name]["reason"]) == ("unavailable", reason)
        doc = requests.get(srv.url + "federation", timeout=30).json()
        status = {s["name"]: (s["status"], s.get("reason")) for s in doc["sites"]}
        assert status["good"] == ("ok", None)
        for name, reason in REASONS.items():
            assert status[name] == ("unavailable", reason)
        landing = requests.get(srv.url, timeout=30).json()
        assert landing["federation:sites"]["down"]["status"] == "unavailable"
        assert landing["federation:sites"]["good"]["status"] == "ok"
        colls = requests.get(srv.url + "collections", timeout=30).json()
        assert sorted(colls["federation:missing"]) == sorted(REASONS)
        assert [c["id"] for c in colls["collections"]] == ["c1"]


def test_every_site_failing_is_a_502_json_error(faulty_federation):
    sites, _ = faulty_federation
    bad = [s for s in sites if s["name"] != "good"]
    with eomqs_server(bad) as srv:
        for r in (
            requests.post(srv.url + "search", json={}, timeout=30),
            requests.get(srv.url + "search", params={"limit": 3}, timeout=30),
        ):
            assert r.status_code == 502
            body = r.json()
            assert body["code"] == "AllSitesFailed"
            assert sorted(body["federation:missing"]) == sorted(REASONS)


def test_site_failing_between_pages_is_named_and_the_rest_continues():
    rng = random.Random(3)
    a_items = [make_item("c1", n, rng) for n in range(12)]
    b_items = [make_item("c1", n, rng) for n in range(100, 112)]
    a, b = TestSite(a_items), TestSite(b_items, paging="POST")
    with (
        serve(a.app) as sa,
        serve(b.app) as sb,
        eomqs_server(
            [{"name": "a", "url": sa.url}, {"name": "b", "url": sb.url, "timeout": 2}],
            page_cache_ttl=0,
        ) as srv,
    ):
        doc = requests.post(srv.url + "search", json={"limit": 4}, timeout=30).json()
        first = [(f["collection"], f["id"]) for f in doc["features"]]
        b.fault = "500"
        nxt = [ln for ln in doc["links"] if ln["rel"] == "next"][0]
        doc2 = requests.post(nxt["href"], json=nxt["body"], timeout=30).json()
        assert doc2["federation:missing"] == ["b"]
        assert doc2["federation:sites"]["b"]["reason"] == "http 500"
        b.fault = None  # b comes back, but this search keeps it out: order would break otherwise
        rest = []
        while True:
            rest += [(f["collection"], f["id"]) for f in doc2["features"]]
            assert doc2["federation:missing"] == ["b"]
            nxt = [ln for ln in doc2["links"] if ln["rel"] == "next"]
            if not nxt:
                break
            doc2 = requests.post(nxt[0]["href"], json=nxt[0]["body"], timeout=30).json()
        emitted_a = [k for k in first if k[1] in {i["id"] for i in a_items}]
        assert emitted_a + rest == [k for k in expected_order(a_items)]


def test_an_empty_answer_is_not_a_failure():
    """One site answers with nothing, the other fails: 200, no items, the failure named."""
    empty, err = TestSite([]), TestSite(fault="500")
    with (
        serve(empty.app) as e,
        serve(err.app) as b,
        eomqs_server([{"name": "empty", "url": e.url}, {"name": "err", "url": b.url}]) as srv,
    ):
        r = requests.post(srv.url + "search", json={}, timeout=30)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["features"] == [] and doc["federation:missing"] == ["err"]
        assert not [ln for ln in doc["links"] if ln["rel"] == "next"]
