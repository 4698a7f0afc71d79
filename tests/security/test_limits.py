"""Resource limits: a user who asks for more named servers, Dask clusters or headless runs than
allowed is stopped at the limit with a clear 4xx message, and what they already have keeps
running."""

from __future__ import annotations

import pytest
import requests
from cscale_testing.testhub import notebook
from seckit import CLUSTER_LIMIT, NAMED_LIMIT, RUNS_LIMIT

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
    gw = sec.stack.service_url("dask-gateway") + "api/v1/clusters/"
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


@rel(
    injected=f"headless runs beyond runs.max_queued_per_user ({RUNS_LIMIT}): one more run, a "
    "sweep, a re-run",
    expected="429 naming the limit and how to free a slot; the accepted runs stay queued or "
    "running; a slot freed by cancelling is usable again",
)
def test_queued_runs_limit(sec):
    user = "sec-runner"
    sec.member(user)
    api = sec.api(sec.token(user))
    runs = sec.url + "services/runs/"
    nb = notebook("import time; time.sleep(600)")
    accepted = []
    try:
        for i in range(RUNS_LIMIT):
            r = api.post(runs + "runs", json={"notebook": nb, "name": f"r{i}"}, timeout=30)
            assert r.status_code == 201, r.text
            accepted.append(r.json()["id"])
        refused = [
            api.post(runs + "runs", json={"notebook": nb, "name": "one-too-many"}, timeout=30),
            api.post(runs + "sweeps", json={"notebook": nb, "grid": {"x": [1, 2]}}, timeout=30),
        ]
        for r in refused:
            assert r.status_code == 429, r.text
            msg = r.json()["detail"]
            assert f"limit per user is {RUNS_LIMIT}" in msg and "cancel" in msg, msg
        mine = {x["id"]: x for x in api.get(runs + "runs", timeout=30).json()}
        assert set(accepted) <= set(mine) and len(mine) == RUNS_LIMIT
        assert all(mine[i]["state"] in ("queued", "dispatching", "running") for i in accepted)
        # cancelling one frees its slot
        last = accepted[-1]
        assert api.post(runs + f"runs/{last}/cancel", timeout=30).status_code == 202
        r = api.post(runs + "runs", json={"notebook": nb, "name": "in-the-freed-slot"}, timeout=30)
        assert r.status_code == 201, r.text
        accepted.append(r.json()["id"])
        # at the limit again: re-running the cancelled run is refused the same way
        r = api.post(runs + f"runs/{last}/rerun", timeout=30)
        assert r.status_code == 429 and f"limit per user is {RUNS_LIMIT}" in r.json()["detail"]
    finally:
        for rid in accepted:
            api.post(runs + f"runs/{rid}/cancel", timeout=30)
