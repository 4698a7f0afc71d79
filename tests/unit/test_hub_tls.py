"""The user server's TLS context for hub requests is built once per certificate
(cscale_extensions.singleuser.hub_tls), with JupyterHub's real HubAuth over a real socket."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from jupyterhub.services import auth
from jupyterhub.utils import make_ssl_context

from cscale_extensions.hub.servertls import ServerCA
from cscale_extensions.singleuser import hub_tls


@pytest.fixture()
def cert(tmp_path):
    ca = ServerCA(tmp_path / "ca")
    ca.ensure()
    return ca.hub_client()


class Counting:
    """``make_ssl_context`` that counts the contexts it really builds."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return make_ssl_context(*args, **kwargs)


def test_same_files_same_context_and_a_renewed_certificate_is_picked_up(cert):
    real = Counting()
    make = hub_tls.cached(real)
    first = make(cert.keyfile, cert.certfile, cafile=cert.cafile)
    assert make(cert.keyfile, cert.certfile, cafile=cert.cafile) is first
    assert real.calls == 1
    st = os.stat(cert.certfile)
    os.utime(cert.certfile, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # renewed in place
    renewed = make(cert.keyfile, cert.certfile, cafile=cert.cafile)
    assert renewed is not first and real.calls == 2
    assert make(None, None) is None and make(None, None) is None  # no certificate: no TLS


class HubAPI(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"name": "alice"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_hubauth_builds_one_context_for_many_requests(cert, monkeypatch):
    real = Counting()
    monkeypatch.setattr(auth, "make_ssl_context", real)
    hub_tls.install()
    hub_tls.install()  # once per process, however often the extension is loaded
    assert auth.make_ssl_context.__wrapped__ is real
    server = ThreadingHTTPServer(("127.0.0.1", 0), HubAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hub/api/user"
        hub_auth = auth.HubAuth(
            api_token="x" * 32, api_url=url.rsplit("/", 1)[0],
            keyfile=cert.keyfile, certfile=cert.certfile,
        )  # fmt: skip

        async def three():
            return [await hub_auth._api_request("GET", url) for _ in range(3)]

        assert asyncio.run(three()) == [{"name": "alice"}] * 3
    finally:
        server.shutdown()
        server.server_close()
    assert real.calls == 1  # upstream: one per request (three)
