"""The user server's gateway-dashboard route forwards as a program, never as the visitor.

A real Jupyter server (this environment's, with its extensions) runs with
``DASK_GATEWAY__ADDRESS`` pointing at a recording stand-in of the gateway (a real HTTP and
websocket server on loopback) and its own ``JUPYTERHUB_API_TOKEN``. Requests to
``/dask-gateway/clusters/<name>/…`` carrying the visitor's cookies, XSRF and forwarding headers
reach the stand-in with ``Authorization: jupyterhub <the server's token>`` and nothing of the
visitor's; the stand-in's ``Set-Cookie`` never reaches the visitor; dot segments and
cross-origin websockets are refused. Without the extension (before issue #21's dashboard
work) the route does not exist: every test here fails with a 404 at the first request.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from aiohttp import WSMsgType, web

SERVER_TOKEN = "server-own-token-abc"
VISITOR_TOKEN = "visitor-login-token-xyz"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder:
    """A stand-in gateway: records each request's path and headers, answers with a cookie."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.port = _free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.ready = threading.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.path_qs, dict(request.headers)))
        if request.headers.get("Upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse(protocols=("bokeh",))
            await ws.prepare(request)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await ws.send_str("echo:" + msg.data)
            return ws
        if request.path.endswith("/missing"):
            return web.Response(status=404, text="no such cluster")
        if request.path.endswith("/moved"):
            return web.Response(status=302, headers={"Location": "/status"})
        response = web.Response(text="<html>bokeh dashboard</html>", content_type="text/html")
        response.set_cookie("gateway-session", "leak")
        return response

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self.ready.set()
        self.loop.run_forever()

    def start(self) -> Recorder:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture(scope="module")
def gateway() -> Iterator[Recorder]:
    rec = Recorder().start()
    yield rec
    rec.stop()


@pytest.fixture(scope="module")
def server(gateway, tmp_path_factory) -> Iterator[str]:
    """A Jupyter server of this environment (its extensions enabled as in a user server)."""
    root: Path = tmp_path_factory.mktemp("server-root")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "DASK_"))}
    env.update({
        "DASK_GATEWAY__ADDRESS": f"http://127.0.0.1:{gateway.port}/services/dask-gateway",
        "JUPYTERHUB_API_TOKEN": SERVER_TOKEN,
        "JUPYTER_CONFIG_DIR": str(root / ".jupyter"),
    })
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "jupyter-server"), "--no-browser", "--allow-root",
         f"--port={port}", "--ip=127.0.0.1", f"--ServerApp.root_dir={root}",
         f"--IdentityProvider.token={VISITOR_TOKEN}",
         # as jupyterhub-singleuser sets it: no page of the server may be framed
         """--ServerApp.tornado_settings={"headers": {"Content-Security-Policy": "frame-ancestors 'none'"}}"""],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                requests.get(url + "api/status", timeout=2,
                             headers={"Authorization": f"token {VISITOR_TOKEN}"})
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                time.sleep(0.5)
        else:
            pytest.fail("the Jupyter server did not start")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _visitor() -> dict[str, str]:
    return {"Authorization": f"token {VISITOR_TOKEN}", "Cookie": "_xsrf=abc; lab-login=secret",
            "X-XSRFToken": "abc", "X-Forwarded-For": "10.0.0.9", "Accept": "text/html"}


def test_forwards_with_the_servers_token_and_nothing_of_the_visitor(server, gateway):
    before = len(gateway.seen)
    r = requests.get(server + "dask-gateway/clusters/abc123/status?theme=dark",
                     headers=_visitor(), timeout=30)
    assert r.status_code == 200 and "bokeh dashboard" in r.text, (r.status_code, r.text[:300])
    assert "gateway-session" not in r.headers.get("Set-Cookie", ""), r.headers
    # the Dask panel frames the dashboard in the lab (same origin); nothing else may
    assert r.headers["Content-Security-Policy"].startswith("frame-ancestors 'self'"), r.headers
    other = requests.get(server + "api/status", headers=_visitor(), timeout=30)
    assert other.headers["Content-Security-Policy"].startswith("frame-ancestors 'none'")
    path, headers = gateway.seen[before]
    assert path == "/services/dask-gateway/clusters/abc123/status?theme=dark"
    lower = {k.lower(): v for k, v in headers.items()}
    assert lower["authorization"] == f"jupyterhub {SERVER_TOKEN}"
    assert VISITOR_TOKEN not in str(headers) and "secret" not in str(headers), headers
    for private in ("cookie", "x-xsrftoken", "x-forwarded-for"):
        assert private not in lower, (private, headers)
    assert lower.get("accept") == "text/html"


def test_without_a_login_nothing_is_forwarded(server, gateway):
    before = len(gateway.seen)
    r = requests.get(server + "dask-gateway/clusters/abc123/status", allow_redirects=False,
                     headers={"Cookie": "lab-login=secret"}, timeout=30)
    assert r.status_code in (302, 403), r.status_code
    assert len(gateway.seen) == before


def test_gateway_answers_and_redirects_pass_through_under_the_route(server, gateway):
    h = {"Authorization": f"token {VISITOR_TOKEN}"}
    r = requests.get(server + "dask-gateway/clusters/other/missing", headers=h, timeout=30)
    assert r.status_code == 404
    r = requests.get(server + "dask-gateway/clusters/abc123/moved", headers=h,
                     allow_redirects=False, timeout=30)
    assert r.status_code == 302
    assert r.headers["Location"] == "/dask-gateway/clusters/abc123/status"


def test_dot_segments_are_refused(server, gateway):
    before = len(gateway.seen)
    h = {"Authorization": f"token {VISITOR_TOKEN}"}
    r = requests.get(server + "dask-gateway/clusters/abc123/%2E%2E/%2E%2E/api/v1/clusters",
                     headers=h, timeout=30)
    assert r.status_code in (400, 404), r.status_code
    assert len(gateway.seen) == before


def test_websocket_same_origin_only_with_the_servers_token(server, gateway):
    import websocket

    ws_url = server.replace("http", "ws", 1) + "dask-gateway/clusters/abc123/individual-task-stream/ws"
    host = server.split("//", 1)[1].rstrip("/")
    before = len(gateway.seen)
    ws = websocket.create_connection(
        ws_url, subprotocols=["bokeh", "session-token"], origin=f"http://{host}",
        header=[f"Authorization: token {VISITOR_TOKEN}"], cookie="lab-login=secret", timeout=30,
    )
    try:
        assert ws.getsubprotocol() == "bokeh"
        ws.send("hello")
        assert ws.recv() == "echo:hello"
    finally:
        ws.close()
    path, headers = gateway.seen[before]
    assert path == "/services/dask-gateway/clusters/abc123/individual-task-stream/ws"
    lower = {k.lower(): v for k, v in headers.items()}
    assert lower["authorization"] == f"jupyterhub {SERVER_TOKEN}" and "cookie" not in lower
    # a browser's login cookie (not a token: Jupyter skips origin checks for tokens) from
    # a page of another origin: refused before anything reaches the gateway
    cookie = _login_cookie(server)
    before = len(gateway.seen)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(ws_url, origin="http://evil.example", cookie=cookie,
                                    timeout=30)
    assert refused.value.status_code == 403
    assert len(gateway.seen) == before
    ws = websocket.create_connection(ws_url, origin=f"http://{host}", cookie=cookie, timeout=30)
    ws.close()
    assert len(gateway.seen) == before + 1
    assert "cookie" not in {k.lower() for k in gateway.seen[-1][1]}


def _login_cookie(server: str) -> str:
    """The Cookie header of a browser signed in to the server (its login cookie)."""
    s = requests.Session()
    s.get(server + f"api/status?token={VISITOR_TOKEN}", timeout=30)
    s.get(server + f"tree?token={VISITOR_TOKEN}", timeout=30)
    assert s.cookies, "no login cookie"
    return "; ".join(f"{k}={v}" for k, v in s.cookies.get_dict().items())
