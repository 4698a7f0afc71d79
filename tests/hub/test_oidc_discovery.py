"""OIDC discovery without blocking the hub: cached, backed off, 503 with Retry-After.

A real local HTTP server (a thread on 127.0.0.1) plays the issuer: down (nothing listening),
failing (500), slow (answers after the timeout) and healthy; it counts the requests it gets, so
the tests see that failures are not retried on every sign-in and that concurrent sign-ins share
one fetch. The old code (blocking ``urllib`` under ``functools.cache``) fails these: a slow
issuer stopped the event loop's ticker, a failure was retried on every call, and an unreachable
issuer was a RuntimeError (a 500 page) instead of a 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cscale_testing import send_json

from cscale_extensions.hub.auth import CScaleAuthenticator, IdpUnavailable
from cscale_extensions.hub.discovery import Discovery, DiscoveryUnavailable


class Issuer:
    """A discovery endpoint on a free port; ``mode`` is "ok", "fail" or "slow"."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.requests = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                issuer.requests += 1
                if issuer.mode == "slow":
                    time.sleep(1.5)
                if issuer.mode == "fail":
                    self.send_response(500)
                    self.end_headers()
                    return
                send_json(
                    self,
                    {
                        "issuer": issuer.url,
                        "authorization_endpoint": issuer.url + "/auth",
                        "token_endpoint": issuer.url + "/token",
                        "userinfo_endpoint": issuer.url + "/me",
                    },
                )

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/realms/test"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def issuer():
    srv = Issuer()
    yield srv
    srv.close()


def _down_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/realms/down"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_down_issuer_backs_off_then_recovers(issuer):
    clock = Clock()
    d = Discovery(issuer.url, timeout=2, backoff_initial=2, backoff_max=8, clock=clock)
    issuer.mode = "fail"

    async def scenario():
        with pytest.raises(DiscoveryUnavailable) as first:
            await d.get()
        assert first.value.retry_after == 2
        with pytest.raises(DiscoveryUnavailable):  # within the back-off: no request
            await d.get()
        assert issuer.requests == 1
        clock.now += 2
        with pytest.raises(DiscoveryUnavailable) as second:
            await d.get()
        assert second.value.retry_after == 4 and issuer.requests == 2
        issuer.mode = "ok"
        clock.now += 4
        doc = await d.get()
        assert doc["token_endpoint"] == issuer.url + "/token"
        await d.get()  # cached
        assert issuer.requests == 3
        # expired and the issuer fails: the stale document keeps sign-ins working
        issuer.mode = "fail"
        clock.now += d.max_age + 1
        assert await d.get() == doc
        assert issuer.requests == 4

    asyncio.run(scenario())


def test_concurrent_sign_ins_share_one_fetch(issuer):
    d = Discovery(issuer.url, timeout=5)

    async def scenario():
        docs = await asyncio.gather(*(d.get() for _ in range(20)))
        assert all(doc is docs[0] for doc in docs)

    asyncio.run(scenario())
    assert issuer.requests == 1


def test_slow_issuer_does_not_block_the_event_loop(issuer):
    issuer.mode = "slow"
    d = Discovery(issuer.url, timeout=0.5)
    ticks = []

    async def ticker():
        for _ in range(10):
            ticks.append(time.monotonic())
            await asyncio.sleep(0.05)

    async def scenario():
        t = asyncio.ensure_future(ticker())
        start = time.monotonic()
        with pytest.raises(DiscoveryUnavailable):
            await d.get()
        assert time.monotonic() - start < 1.4  # the timeout, not the issuer's 1.5 s
        await t

    asyncio.run(scenario())
    assert max(b - a for a, b in zip(ticks, ticks[1:], strict=False)) < 0.3


def test_unreachable_issuer_is_a_503_with_retry_after():
    auth = CScaleAuthenticator(oidc_issuer=_down_url(), discovery_timeout=2)

    async def scenario():
        with pytest.raises(IdpUnavailable) as exc:
            await auth.ensure_endpoints()
        assert exc.value.status_code == 503
        assert int(exc.value.headers["Retry-After"]) >= 1

    asyncio.run(scenario())


def test_endpoints_from_discovery_unless_configured(issuer):
    auth = CScaleAuthenticator(oidc_issuer=issuer.url, token_url="https://configured/token")

    async def scenario():
        await auth.ensure_endpoints()

    asyncio.run(scenario())
    assert auth.authorize_url == issuer.url + "/auth"
    assert auth.userdata_url == issuer.url + "/me"
    assert auth.token_url == "https://configured/token"
