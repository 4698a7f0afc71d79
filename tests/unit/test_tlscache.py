"""TLS contexts are built once per certificate files (cscale_extensions.tlscache): in a user
server's hub requests (singleuser.hub_tls, JupyterHub's real HubAuth over a real socket) and in
the hub's checks that a server is up."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cscale_testing import send_json
from jupyterhub.services import auth
from jupyterhub.utils import make_ssl_context

from cscale_extensions import tlscache
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
    make = tlscache.cached(real)
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
        send_json(self, {"name": "alice"})

    def log_message(self, *args):
        pass


def test_hubauth_builds_one_context_for_many_requests(cert, monkeypatch):
    real = Counting()
    monkeypatch.setattr(auth, "make_ssl_context", real)
    monkeypatch.setenv("JUPYTERHUB_SSL_KEYFILE", cert.keyfile)
    monkeypatch.setenv("JUPYTERHUB_SSL_CERTFILE", cert.certfile)
    monkeypatch.delenv("JUPYTERHUB_SSL_CLIENT_CA", raising=False)
    hub_tls._load_jupyter_server_extension(None)  # builds the context HubAuth will ask for
    hub_tls._load_jupyter_server_extension(None)  # loaded twice: still one wrapper
    assert auth.make_ssl_context.__wrapped__ is real and real.calls == 1
    server = ThreadingHTTPServer(("127.0.0.1", 0), HubAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hub/api/user"
        hub_auth = auth.HubAuth(  # what a user server's environment gives it
            api_token="x" * 32, api_url=url.rsplit("/", 1)[0],
            keyfile=cert.keyfile, certfile=cert.certfile,
        )  # fmt: skip

        async def three():
            return [await hub_auth._api_request("GET", url) for _ in range(3)]

        assert asyncio.run(three()) == [{"name": "alice"}] * 3
    finally:
        server.shutdown()
        server.server_close()
    assert real.calls == 1  # upstream: one per request (three), none at load


def test_the_hub_checks_servers_with_cached_contexts():
    """The local hub's configuration caches the function JupyterHub's ``Server.wait_up`` calls,
    and the start queue's own check uses the same cache (in a fresh interpreter: the patch is
    for the whole process)."""
    code = (
        "import jupyterhub.objects, jupyterhub.utils\n"
        "from traitlets.config import Config\n"
        "from cscale_extensions import config, tlscache\n"
        "from cscale_extensions.hub import configure_local_hub, startqueue\n"
        "assert not hasattr(jupyterhub.objects.make_ssl_context, '__wrapped__')\n"
        "configure_local_hub(Config(), config.load(None, {'platform': {'data_dir': '/nonexistent'}}))\n"
        "assert jupyterhub.objects.make_ssl_context.__wrapped__ is jupyterhub.utils.make_ssl_context\n"
        "assert startqueue.make_ssl_context is tlscache.make_ssl_context\n"
        "assert jupyterhub.objects.make_ssl_context is tlscache.make_ssl_context  # one cache\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
