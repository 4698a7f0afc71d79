"""Fixtures: the real embedded OIDC provider (node) on a free port, and a browser-like login."""

from __future__ import annotations

import base64
import hashlib
import secrets
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests

from cscale_extensions import config as settings
from cscale_extensions.localstack.oidc import embedded
from cscale_extensions.localstack.supervisor import Supervisor

CLIENT_SECRET = "test-client-secret-" + secrets.token_hex(8)
# Nothing listens here: the flow stops at the first redirect to it and reads the code.
REDIRECT_URI = "http://127.0.0.1:9/hub/oauth_callback"

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


@dataclass
class Provider:
    issuer: str
    data_dir: Path
    accounts_file: Path
    client_id: str
    client_secret: str
    redirect_uri: str
    supervisor: Supervisor
    spec: object

    def discovery(self) -> dict:
        r = requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=10)
        r.raise_for_status()
        return r.json()

    def restart(self) -> None:
        """Stop the node process and start it again with the same data dir."""
        self.supervisor.stop()
        self.supervisor.start(self.spec)


def start_provider(data_dir: Path, log_dir: Path, overrides: dict | None = None) -> Provider:
    cfg = settings.deep_merge(settings.defaults(), overrides or {})
    spec, issuer = embedded.provider_process(
        cfg, data_dir, client_secret=CLIENT_SECRET, redirect_uri=REDIRECT_URI
    )
    sup = Supervisor(log_dir, stack_id=f"oidc-test-{uuid.uuid4().hex[:8]}")
    try:
        sup.start(spec)
    except BaseException:
        sup.stop()
        raise
    return Provider(
        issuer=issuer,
        data_dir=data_dir,
        accounts_file=embedded.accounts_path(cfg, data_dir),
        client_id=cfg["auth"]["client_id"],
        client_secret=CLIENT_SECRET,
        redirect_uri=REDIRECT_URI,
        supervisor=sup,
        spec=spec,
    )


@pytest.fixture(scope="module")
def provider(tmp_path_factory) -> Iterator[Provider]:
    """One provider for a test module, with the demo accounts."""
    base = tmp_path_factory.mktemp("oidc")
    p = start_provider(base / "data", base / "logs")
    try:
        yield p
    finally:
        p.supervisor.stop()


class _FormParser(HTMLParser):
    """Collects the forms of a page: action, method and named inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action"), "method": a.get("method"), "inputs": {}})
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["inputs"][a["name"]] = a.get("value") or ""


def parse_forms(html: str) -> list[dict]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    return verifier, challenge.decode()


@dataclass
class LoginResult:
    code: str | None
    error: str | None
    state_ok: bool
    verifier: str
    last: requests.Response  # the last response seen (login page, error page or the redirect)


def follow(session: requests.Session, resp: requests.Response, stop_prefix: str):
    """Follow redirects by hand; stop (without contacting it) at a URL starting with stop_prefix."""
    for _ in range(10):
        if resp.status_code not in (301, 302, 303, 307, 308):
            return resp, None
        location = urljoin(resp.url, resp.headers["Location"])
        if location.startswith(stop_prefix):
            return resp, location
        resp = session.get(location, allow_redirects=False, timeout=10)
    raise AssertionError("too many redirects")


def login(
    p: Provider,
    username: str,
    password: str,
    *,
    session: requests.Session | None = None,
    scope: str = "openid profile email eduperson_entitlement offline_access",
    extra: dict | None = None,
    action: str = "login",
) -> LoginResult:
    """Drive the authorization code + PKCE flow like a browser; returns the code (or None)."""
    s = session or requests.Session()
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(12)
    authz = p.discovery()["authorization_endpoint"]
    r = s.get(
        authz,
        params={
            "response_type": "code",
            "client_id": p.client_id,
            "redirect_uri": p.redirect_uri,
            "scope": scope,
            "state": state,
            "nonce": secrets.token_urlsafe(12),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **(extra or {}),
        },
        allow_redirects=False,
        timeout=10,
    )
    page, target = follow(s, r, p.redirect_uri)
    if target is None:
        assert page.status_code == 200, page.text
        forms = [f for f in parse_forms(page.text) if f["action"].endswith("/" + action)]
        assert forms, f"no {action} form in {page.text[:500]}"
        form = forms[0]
        data = {**form["inputs"], "username": username, "password": password}
        r = s.post(urljoin(page.url, form["action"]), data=data, allow_redirects=False, timeout=10)
        page, target = follow(s, r, p.redirect_uri)
    if target is None:
        return LoginResult(None, None, False, verifier, page)
    query = parse_qs(urlsplit(target).query)
    return LoginResult(
        code=query.get("code", [None])[0],
        error=query.get("error", [None])[0],
        state_ok=query.get("state", [None])[0] == state,
        verifier=verifier,
        last=page,
    )


def exchange(p: Provider, code: str, verifier: str, *, secret: str | None = None, basic=False):
    """POST the code to the token endpoint (client_secret_post, or basic when basic=True)."""
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": p.redirect_uri,
        "code_verifier": verifier,
    }
    secret = p.client_secret if secret is None else secret
    kwargs: dict = {}
    if basic:
        kwargs["auth"] = (p.client_id, secret)
    else:
        data.update(client_id=p.client_id, client_secret=secret)
    return requests.post(p.discovery()["token_endpoint"], data=data, timeout=10, **kwargs)


def userinfo(p: Provider, access_token: str) -> requests.Response:
    return requests.get(
        p.discovery()["userinfo_endpoint"],
        headers={"Authorization": f"Bearer {access_token}"},
        timeout=10,
    )


@pytest.fixture(scope="session")
def oidc():
    """The helpers above, for test modules (importlib mode cannot import conftest)."""
    import types

    return types.SimpleNamespace(
        login=login,
        exchange=exchange,
        userinfo=userinfo,
        start_provider=start_provider,
        parse_forms=parse_forms,
        pkce_pair=pkce_pair,
        follow=follow,
        REDIRECT_URI=REDIRECT_URI,
    )
