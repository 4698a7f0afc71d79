"""The same item from two sites whose asset dicts come in different orders is returned with
one asset order (clients such as openEO's load_stac compare asset key tuples)."""

from __future__ import annotations

import random

import requests
from sitekit import TestSite, eomqs_server, make_item, serve


def test_assets_come_in_one_order_whatever_the_site():
    rng = random.Random(3)
    items = [make_item("c1", n, rng) for n in range(6)]
    hrefs = {k: {"href": f"http://example.invalid/{k}.tif"} for k in ("nir08", "red", "fmask")}
    one = [dict(i, assets=dict(hrefs)) for i in items[:3]]
    # the second site stores the keys sorted by length, as pgstac's JSONB does
    two = [
        dict(i, assets=dict(sorted(hrefs.items(), key=lambda kv: (len(kv[0]), kv[0]))))
        for i in items[3:]
    ]
    assert list(one[0]["assets"]) != list(two[0]["assets"])
    a, b = TestSite(one), TestSite(two)
    with serve(a.app) as sa, serve(b.app) as sb:
        sites = [{"name": "a", "url": sa.url}, {"name": "b", "url": sb.url}]
        with eomqs_server(sites) as srv:
            r = requests.post(f"{srv.url}search", json={"collections": ["c1"], "limit": 10})
    assert r.status_code == 200, r.text
    feats = r.json()["features"]
    assert len(feats) == 6
    orders = {tuple(f["assets"]) for f in feats}
    assert orders == {("fmask", "nir08", "red")}
