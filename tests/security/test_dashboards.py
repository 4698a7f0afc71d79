"""A Dask cluster's dashboard is its owner's (and the hub admins'), not everyone's.

The victim starts a Dask cluster; its dashboard is at
``<gateway host>/services/dask-gateway/clusters/<name>/status`` (the link the Dask client
shows). An anonymous client and another signed-in VO member (browser session with the hub's
cookies, and with an API token) load that URL through the public proxy: neither gets the
dashboard (the anonymous one is sent to the hub's sign-in, the other member gets a 404). The
owner and an admin, signed in through the hub, do; the owner's token works too.

The scheduler's own dashboard port (127.0.0.1, chosen at random; Bokeh has no authentication)
answers another local account nothing: every request without the cluster's dashboard key,
which only the gateway adds, is a 403 (``cscale_extensions.dashboard_guard``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator

import psutil
import pytest
import requests

from cscale_extensions.dashboard_guard import HEADER, TOKEN_ENV, dashboard_key
from cscale_extensions.kernelclient import run_in_kernel

rel = pytest.mark.reliability
pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="the local gateway runs as root")
OWNER, PEER, ADMIN = "sec-dashowner", "sec-dashpeer", "sec-dashadmin"


def _gateway(sec) -> str:
    return sec.stack.service_url("dask-gateway")


def _hdr(token: str) -> dict[str, str]:
    return {"Authorization": f"jupyterhub {token}"}


@pytest.fixture(scope="module")
def cluster(sec) -> Iterator[str]:
    sec.member(OWNER)
    token = sec.token(OWNER)
    # the gateway runs her cluster as her account, which her first server start makes (her
    # sign-in asked for it, but starts queue: wait for it, as a notebook user has)
    sec.stack.start_server(token, OWNER)
    api = _gateway(sec) + "api/v1/clusters/"
    r = requests.post(api, json={"cluster_options": {}}, headers=_hdr(token), timeout=120)
    assert r.status_code == 201, r.text
    name = r.json()["name"]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            model = requests.get(api + name, headers=_hdr(token), timeout=30).json()
            if model["status"] == "RUNNING" and model.get("dashboard_route"):
                break
            time.sleep(1)
        else:
            pytest.fail(f"cluster {name} not running: {model}")
        yield name
    finally:
        requests.delete(api + name, headers=_hdr(token), timeout=60)


def _dashboard(sec, name: str) -> str:
    return _gateway(sec) + f"clusters/{name}/status"


def _is_dashboard(r: requests.Response) -> bool:
    return r.status_code == 200 and "bokeh" in r.text.lower()


@rel(
    injected="an anonymous client loads another user's Dask dashboard through the public proxy",
    expected="no dashboard: a redirect to the hub's sign-in",
)
def test_anonymous_client_cannot_load_a_dashboard(sec, cluster):
    url = _dashboard(sec, cluster)
    r = requests.get(url, allow_redirects=False, timeout=30)
    assert not _is_dashboard(r), "the dashboard is public"
    assert r.status_code == 302 and "/hub/api/oauth2/authorize" in r.headers["Location"], (
        r.status_code, r.headers.get("Location"),
    )
    followed = requests.get(url, timeout=30)
    assert not _is_dashboard(followed) and "/hub/" in followed.url, followed.url
    for path in ("", "/", "/individual-task-stream", "/info/main/workers.html"):
        r = requests.get(_gateway(sec) + f"clusters/{cluster}{path}", allow_redirects=False,
                         timeout=30)
        assert r.status_code in (302, 401), (path, r.status_code)


@rel(
    injected="another signed-in VO member loads the victim's Dask dashboard (browser session "
    "through the hub's OAuth, and with her API token)",
    expected="404, no dashboard content",
)
def test_another_user_cannot_load_the_victims_dashboard(sec, cluster):
    sec.member(PEER)
    browser = sec.login(PEER)
    r = browser.get(_dashboard(sec, cluster), timeout=60)
    assert not _is_dashboard(r), "another user sees the victim's dashboard"
    assert r.status_code == 404 and "owner" in r.text, (r.status_code, r.url, r.text[:300])
    r = requests.get(_dashboard(sec, cluster), headers=_hdr(sec.token(PEER)), timeout=30)
    assert r.status_code == 404 and not _is_dashboard(r)


@rel(
    injected="the cluster's owner and a hub admin open the dashboard (signed in at the hub), the "
    "owner also with her token",
    expected="200 with the dashboard for each; the dashboard gets none of their cookies",
)
def test_owner_and_admin_load_the_dashboard(sec, cluster):
    url = _dashboard(sec, cluster)
    owner = sec.login(OWNER)
    r = owner.get(url, timeout=60)
    assert _is_dashboard(r), (r.status_code, r.url, r.text[:300])
    assert "cscale-dashboard-session" in owner.cookies.get_dict(), owner.cookies.get_dict()
    _bokeh_websocket_answers(url, r.text, owner.cookies.get_dict())
    sec.member(ADMIN, role="admin")
    r = sec.login(ADMIN).get(url, timeout=60)
    assert _is_dashboard(r), (r.status_code, r.url)
    r = requests.get(url, headers=_hdr(sec.token(OWNER)), timeout=60)
    assert _is_dashboard(r), r.status_code
    # a forged or stale session cookie is no session
    r = requests.get(url, cookies={"cscale-dashboard-session": "forged"}, allow_redirects=False,
                     timeout=30)
    assert r.status_code == 302 and not _is_dashboard(r)


def _bokeh_websocket_answers(url: str, page: str, cookies: dict[str, str]) -> None:
    """The page's live updates (Bokeh's websocket, subprotocol ``bokeh`` + the page's session
    token) work through the gate: the server's first message is its ACK."""
    import websocket

    m = re.search(r'"token":"([^"]+)"', page)
    assert m, "no Bokeh session token in the page"
    ws = websocket.create_connection(
        url.replace("http", "ws", 1) + "/ws", subprotocols=["bokeh", m.group(1)],
        cookie="; ".join(f"{k}={v}" for k, v in cookies.items()), timeout=30,
    )
    try:
        assert "ACK" in ws.recv()
    finally:
        ws.close()


def _dashboard_port(owner: str) -> tuple[int, str]:
    """The loopback port of ``owner``'s scheduler dashboard and its key (found as root from
    the scheduler's environment and listening sockets; another account finds the port by
    scanning 127.0.0.1, never the key)."""
    import pwd

    uid = pwd.getpwnam(owner).pw_uid
    for proc in psutil.process_iter(["uids", "cmdline"]):
        if proc.info["uids"] and proc.info["uids"].real == uid and "scheduler" in " ".join(
            proc.info["cmdline"] or []
        ):
            env = proc.environ()
            if "CSCALE_STACK_ID" not in env or TOKEN_ENV not in env:
                continue
            key = dashboard_key(env[TOKEN_ENV])
            listening = sorted(c.laddr.port for c in proc.net_connections("tcp")
                               if c.status == psutil.CONN_LISTEN)
            for port in listening:
                try:
                    r = requests.get(f"http://127.0.0.1:{port}/status", headers={HEADER: key},
                                     timeout=5)
                except requests.RequestException:
                    continue
                if _is_dashboard(r):
                    return port, key
    raise AssertionError(f"no dashboard port of {owner}")


@rel(
    injected="another local account (the peer's kernel) connects to the victim's scheduler "
    "dashboard on its 127.0.0.1 port directly, bypassing the gateway: several paths, without "
    "a key and with a forged one",
    expected="403 for each: the dashboard answers only requests with the cluster's key, "
    "which only the gateway's dashboard proxy adds",
)
def test_dashboard_loopback_port_is_not_reachable_by_another_account(sec, cluster):
    port, key = _dashboard_port(OWNER)
    sec.member(PEER)
    token = sec.token(PEER)
    url = sec.start_server(token, PEER)
    paths = ["/status", "/individual-task-stream", "/info/main/workers.html", "/sitemap.json",
             "/json/identity.json", "/metrics", "/health"]
    out = run_in_kernel(url, token, "\n".join([
        "import urllib.request, urllib.error",
        f"for path in {paths!r}:",
        f"    for forged in ('', {('0' * 64)!r}, {key[:-1] + 'x'!r}):",
        f"        req = urllib.request.Request('http://127.0.0.1:{port}' + path,",
        f"                                     headers={{{HEADER!r}: forged}} if forged else {{}})",
        "        try:",
        "            body = urllib.request.urlopen(req, timeout=10).read()",
        "            print('REACHED', path, repr(body[:60]))",
        "        except urllib.error.HTTPError as exc:",
        "            print('REFUSED', path, exc.code)",
        "        except OSError as exc:",
        "            print('ERROR', path, exc)",
    ]))
    assert "REACHED" not in out, out
    assert out.count("REFUSED") == 3 * len(paths) and "ERROR" not in out, out
    assert set(re.findall(r"REFUSED \S+ (\d+)", out)) == {"403"}, out
    # the owner's gateway route still gets there (the gateway adds the key)
    r = requests.get(_dashboard(sec, cluster), headers=_hdr(sec.token(OWNER)), timeout=60)
    assert _is_dashboard(r), r.status_code
