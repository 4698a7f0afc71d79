"""Fixtures of the unit layer: real objects, no stack, no subprocesses, no mocks.

Where a test needs a peer it gets a real one in this process: :class:`TinyIdp` is an HTTP
server on a free loopback port answering the OAuth token and userinfo requests the
authenticator makes, as scripted by the test; hub users are real ``jupyterhub.user.User``
objects over an in-memory database, their auth state encrypted with a key of this session.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from cscale_testing import send_json
from hypothesis.configuration import set_hypothesis_home_dir

#: hypothesis keeps its examples and caches with the other test reports, not in the tree
set_hypothesis_home_dir(Path(__file__).resolve().parents[2] / "test-artifacts" / "hypothesis")

#: what an endpoint answers: (HTTP status, JSON body)
Answer = tuple[int, Any]


@dataclass
class TinyIdp:
    """An OAuth provider's token and userinfo endpoints, answering what the test put here.

    ``userinfo[access_token]`` is the userinfo document of a valid access token (any other
    token gets 401); ``refresh[refresh_token]`` is the token endpoint's answer to a refresh
    grant (any other gets 400 ``invalid_grant``). ``token_status``/``userinfo_status`` make
    the endpoint fail with that status whatever the request. ``calls`` lists
    ``(path, refresh token or bearer token)`` of every request served. It also serves its
    OpenID Connect discovery document (issuer: its URL).
    """

    url: str = ""
    userinfo: dict[str, dict[str, Any]] = field(default_factory=dict)
    refresh: dict[str, Answer] = field(default_factory=dict)
    token_status: int | None = None
    userinfo_status: int | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)

    def reset(self) -> None:
        self.userinfo.clear()
        self.refresh.clear()
        self.calls.clear()
        self.token_status = self.userinfo_status = None

    def answer(self, method: str, path: str, headers: Any, body: bytes) -> Answer:
        if method == "POST" and path == "/token":
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            self.calls.append(("/token", form.get("refresh_token", form.get("grant_type", ""))))
            if self.token_status:
                return self.token_status, {"error": "server_error"}
            if form.get("grant_type") != "refresh_token":  # no code is ever valid here
                return 400, {"error": "invalid_grant"}
            return self.refresh.get(
                form.get("refresh_token", ""), (400, {"error": "invalid_grant"})
            )
        if method == "GET" and path == "/.well-known/openid-configuration":
            self.calls.append((path, ""))
            return 200, {
                "issuer": self.url,
                "authorization_endpoint": self.url + "/authorize",
                "token_endpoint": self.url + "/token",
                "userinfo_endpoint": self.url + "/userinfo",
                "jwks_uri": self.url + "/jwks",
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        if method == "GET" and path == "/userinfo":
            token = (headers.get("Authorization") or "").removeprefix("Bearer ")
            self.calls.append(("/userinfo", token))
            if self.userinfo_status:
                return self.userinfo_status, {"error": "temporarily_unavailable"}
            if token not in self.userinfo:
                return 401, {"error": "invalid_token"}
            return 200, self.userinfo[token]
        return 404, {"error": "not_found"}


def _handler(idp: TinyIdp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, doc = idp.answer(self.command, self.path.split("?")[0], self.headers, body)
            send_json(self, doc, status)

        do_GET = do_POST = _serve

        def log_message(self, *args: Any) -> None:  # quiet
            pass

    return Handler


@pytest.fixture(scope="session")
def _idp_server() -> Iterator[TinyIdp]:
    idp = TinyIdp()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(idp))
    server.daemon_threads = True
    idp.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="tiny-idp", daemon=True)
    thread.start()
    try:
        yield idp
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def idp(_idp_server: TinyIdp) -> TinyIdp:
    """The session's :class:`TinyIdp`, with nothing scripted."""
    _idp_server.reset()
    return _idp_server


@pytest.fixture(scope="session")
def closed_port_url() -> Iterator[str]:
    """A loopback URL where nothing listens (an identity provider or a site that is down):
    the port stays bound, never listening, so connections are refused and no other process
    can take it meanwhile."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture(scope="session")
def _auth_state_key() -> Iterator[None]:
    """Auth state is encrypted as in a hub: a key of this session (JUPYTERHUB_CRYPT_KEY)."""
    from jupyterhub.crypto import CryptKeeper

    keeper = CryptKeeper.instance()
    saved = list(keeper.keys)
    keeper.keys = [os.urandom(32)]
    yield
    keeper.keys = saved


@pytest.fixture(scope="session")
def _hub_db(_auth_state_key: None) -> Iterator[Any]:
    """One in-memory hub database for the session (creating one runs the hub's migrations)."""
    from jupyterhub import orm

    db = orm.new_session_factory("sqlite:///:memory:")()
    yield db
    db.close()


@pytest.fixture
def hub_user(_hub_db: Any) -> Iterator[Callable[..., Any]]:
    """``await hub_user(name, auth_state)``: a real hub user in the hub database, its auth
    state saved (encrypted) as the hub saves it at sign-in; removed after the test."""
    from jupyterhub import orm
    from jupyterhub.user import User

    made: list[Any] = []

    async def make(name: str, auth_state: dict[str, Any] | None) -> User:
        orm_user = orm.User(name=name)
        _hub_db.add(orm_user)
        _hub_db.commit()
        made.append(orm_user)
        user = User(orm_user, {})
        await user.save_auth_state(auth_state)
        return user

    yield make
    for orm_user in made:
        _hub_db.delete(orm_user)
    _hub_db.commit()
