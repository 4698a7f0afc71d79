"""A user's Dask dashboards under their own server, on the shared stack (issue #21).

A member starts a gateway cluster in a kernel of her server: ``cluster.dashboard_link`` is on
her own origin (``<her server>dask-gateway/clusters/<name>/status``) and her server serves it
(the page, ``individual-plots.json`` the Dask panel reads, Bokeh's websocket), forwarding to
the gateway with the server's own token. Another member's server, asked for that cluster,
gets the gateway's 404 (the gateway checks the server's token: another user); the other
member's token does not open her server at all. Before this, the link was on the gateway's
host (behind its own sign-in) and ``<server>dask-gateway/…`` was a 404 of Jupyter Server:
the owner's requests here fail on the old code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
import requests
from cscale_testing import server_url

from cscale_extensions.kernelclient import run_in_kernel

pytestmark = [pytest.mark.slow]


def _api(token: str) -> requests.Session:
    s = requests.Session()
    s.headers["Authorization"] = f"token {token}"
    return s


@pytest.fixture(scope="module")
def owner(platform) -> tuple[str, str, str]:
    """(name, token, server URL) of a member with a running server."""
    name = platform.add_user("dashowner")
    token = platform.api_token(name)
    return name, token, server_url(platform.url, platform.start_server(token, name)["url"])


@pytest.fixture(scope="module")
def cluster(platform, owner) -> Iterator[dict[str, str]]:
    """A gateway cluster the owner started in a kernel of her server: name and link."""
    _, token, server = owner
    out = run_in_kernel(server, token, "\n".join([
        "import json",
        "from dask_gateway import Gateway",
        "c = Gateway().new_cluster(shutdown_on_close=False)",
        "print(json.dumps({'name': c.name, 'link': c.dashboard_link}))",
    ]), timeout=300)
    info = json.loads(out.strip().splitlines()[-1])
    try:
        yield info
    finally:
        run_in_kernel(server, token, "\n".join([
            "from dask_gateway import Gateway",
            f"Gateway().stop_cluster({info['name']!r})",
        ]), timeout=120)


def test_dashboard_link_is_on_the_owners_own_server(owner, cluster):
    _, _, server = owner
    assert cluster["link"] == f"{server}dask-gateway/clusters/{cluster['name']}/status", cluster


def test_owners_server_serves_the_dashboard_and_its_websocket(owner, cluster):
    _, token, _ = owner
    api = _api(token)
    r = api.get(cluster["link"], timeout=60)
    assert r.status_code == 200 and "bokeh" in r.text.lower(), (r.status_code, r.text[:300])
    assert "Set-Cookie" not in r.headers, r.headers
    plots = api.get(cluster["link"].removesuffix("status") + "individual-plots.json", timeout=60)
    assert plots.status_code == 200, plots.text[:300]
    assert any("task-stream" in v for v in plots.json().values()), plots.json()
    _bokeh_websocket_answers(cluster["link"], r.text, token)


def test_another_users_server_gets_a_404_for_the_cluster(platform, owner, cluster):
    peer = platform.add_user("dashpeer")
    token = platform.api_token(peer)
    peer_server = server_url(platform.url, platform.start_server(token, peer)["url"])
    r = _api(token).get(f"{peer_server}dask-gateway/clusters/{cluster['name']}/status",
                        allow_redirects=False, timeout=60)
    assert r.status_code == 404 and "bokeh" not in r.text.lower(), (r.status_code, r.text[:300])
    assert "owner" in r.text, r.text[:300]  # the gateway's answer, passed on as a page
    # and her token opens nothing of the owner's server
    r = _api(token).get(cluster["link"], allow_redirects=False, timeout=60)
    assert r.status_code in (302, 403) and "bokeh" not in r.text.lower(), r.status_code
    platform.api(platform.api_token(peer)).delete(platform.url + f"hub/api/users/{peer}/server",
                                                  timeout=60)


def _bokeh_websocket_answers(link: str, page: str, token: str) -> None:
    """Bokeh's live updates through the server's route: the first message is its ACK."""
    import websocket

    m = re.search(r'"token":"([^"]+)"', page)
    assert m, "no Bokeh session token in the page"
    ws = websocket.create_connection(
        link.replace("http", "ws", 1) + "/ws", subprotocols=["bokeh", m.group(1)],
        header=[f"Authorization: token {token}"], timeout=60,
    )
    try:
        assert "ACK" in ws.recv()
    finally:
        ws.close()


def test_a_cluster_the_dask_panel_made_opens_through_the_same_route(owner):
    """dask-labextension's "+ New" makes a gateway cluster in the server; the panel opens it at
    ``dask/dashboard/<id>/…`` (its own route, which could only reach local ports): for gateway
    clusters that is served like the cluster's link, through the gateway with the server's token."""
    _, token, server = owner
    api = _api(token)
    r = api.put(server + "dask/clusters", json={}, timeout=300)
    assert r.status_code == 200, r.text[:300]
    model = r.json()
    try:
        assert model["dashboard_link"].startswith(f"{server}dask-gateway/clusters/"), model
        r = api.get(server + f"dask/dashboard/{model['id']}/individual-plots.json", timeout=60)
        assert r.status_code == 200, r.text[-500:]
        assert any("task-stream" in v for v in r.json().values()), r.json()
    finally:
        api.delete(server + f"dask/clusters/{model['id']}", timeout=120)
