"""EO-MQS through the hub, from a user's environment: pystac-client on $CSCALE_STAC_URL reaches
every embedded site's data as one catalogue (the `platform` fixture runs `cscale-hub up`)."""

from __future__ import annotations

import json

from cscale_testing import server_url

from cscale_extensions.kernelclient import run_in_kernel

CODE = r"""
import json, os, pystac_client
client = pystac_client.Client.open(os.environ["CSCALE_STAC_URL"])
collections = sorted(c.id for c in client.get_collections())
search = client.search(collections=["landsat-5-tm-sr"], limit=7)
items = list(search.items())
ids = [i.id for i in items]
sites = {i.id: sorted(i.properties.get("federation:sites", [])) for i in items}
page = client.search(collections=["landsat-5-tm-sr"], datetime="2009-01-01/2009-12-31", limit=100)
print(json.dumps({"collections": collections, "n": len(ids), "unique": len(set(ids)),
                  "datetimes": [i.datetime.isoformat() for i in items], "sites": sites,
                  "y2009": page.matched() if page.matched() is not None else len(list(page.items()))}))
"""


def test_pystac_client_through_the_hub_sees_the_whole_federation(platform):
    token = platform.api_token("demo-member")
    server = server_url(platform.url, platform.start_server(token, "demo-member")["url"])
    text = run_in_kernel(server, token, CODE, timeout=180)
    lines = [line for line in text.splitlines() if line.startswith("{")]
    assert lines, text
    out = json.loads(lines[-1])
    assert {"landsat-5-tm-sr", "landsat-7-etm-sr", "sentinel-2-l1c"} <= set(out["collections"])
    # landsat-5 is split over eodc (2008-2009) and cesnet (2009-2011): one list, no duplicates
    assert out["n"] == out["unique"] > 7  # more than one page, every item once
    assert out["datetimes"] == sorted(out["datetimes"], reverse=True)
    holders = {tuple(s) for s in out["sites"].values()}
    assert ("cesnet", "eodc") in holders  # 2009 items are on both sites and merged
    assert ("eodc",) in holders and ("cesnet",) in holders
