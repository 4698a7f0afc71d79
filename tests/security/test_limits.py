"""Resource limits: a user who asks for more named servers or Dask clusters than allowed is
stopped at the limit with a clear 4xx message, and what they already have keeps running."""

from __future__ import annotations

import pytest
import requests
from seckit import CLUSTER_LIMIT, NAMED_LIMIT

rel = pytest.mark.reliability
USER = "sec-greedy"


@rel(
    injected=f"named servers beyond hub.named_server_limit_per_user ({NAMED_LIMIT})",
    expected="400 naming the limit; the servers within it run",
)
def test_named_server_limit(sec):
    sec.member(USER)
    token = sec.token(USER)
    api = sec.api(token)
    started = [f"n{i}" for i in range(NAMED_LIMIT)]
    for name in started:
        sec.start_server(token, USER, name)
    r = api.post(sec.url + f"hub/api/users/{USER}/servers/one-too-many", timeout=60)
    assert r.status_code == 400, r.text
    msg = r.json()["message"]
    assert str(NAMED_LIMIT) in msg and "named server" in msg
    servers = api.get(sec.url + f"hub/api/users/{USER}", timeout=30).json()["servers"]
    assert all(servers[n]["ready"] for n in started) and "one-too-many" not in servers
    for name in started:
        api.delete(
            sec.url + f"hub/api/users/{USER}/servers/{name}", json={"remove": True}, timeout=60
        )


@rel(
    injected=f"Dask clusters beyond dask_gateway.max_clusters_per_user ({CLUSTER_LIMIT})",
    expected="422 with a message naming the limit and how to free one",
)
def test_dask_cluster_limit(sec):
    sec.member(USER)
    hdr = {"Authorization": f"jupyterhub {sec.token(USER)}"}
    gw = sec.url + "services/dask-gateway/api/v1/clusters/"
    names = []
    try:
        for _ in range(CLUSTER_LIMIT):
            r = requests.post(gw, json={"cluster_options": {}}, headers=hdr, timeout=120)
            assert r.status_code == 201, r.text
            names.append(r.json()["name"])
        r = requests.post(gw, json={"cluster_options": {}}, headers=hdr, timeout=120)
        assert r.status_code == 422, r.text
        msg = r.json()["error"]
        assert f"limit per user is {CLUSTER_LIMIT}" in msg and "shutdown" in msg
        listed = requests.get(gw, headers=hdr, timeout=30).json()
        assert set(names) <= set(listed) and len(listed) == CLUSTER_LIMIT
    finally:
        for name in names:
            requests.delete(gw + name, headers=hdr, timeout=60)
