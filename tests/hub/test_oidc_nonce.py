"""The hub sends an OIDC nonce bound to each sign-in and refuses an ID token that carries
another one (an ID token minted for a different authorization request), over the real flow
against the embedded provider."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import parse_qs, urlencode, urljoin, urlparse, urlunparse

import requests
from cscale_testing import on_hub

FORM_ACTION = re.compile(r'<form[^>]*method="post"[^>]*action="([^"]+/login)"', re.I)


def _authorize_request(hub_url: str) -> tuple[requests.Session, str]:
    s = requests.Session()
    r = s.get(urljoin(hub_url, "hub/oauth_login"), timeout=30, allow_redirects=False)
    assert r.status_code == 302, r.text[:300]
    return s, r.headers["Location"]


def _sign_in(s: requests.Session, authorize_url: str, user: str, password: str):
    r = s.get(authorize_url, timeout=30)
    m = FORM_ACTION.search(r.text)
    assert m, f"no login form at {r.url}"
    return s.post(
        urljoin(r.url, unescape(m.group(1))),
        data={"username": user, "password": password},
        timeout=30,
    )


def _with_query(url: str, **params: str) -> str:
    parts = urlparse(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(params)
    return urlunparse(parts._replace(query=urlencode(query)))


def test_each_sign_in_sends_its_own_nonce_and_succeeds(platform):
    nonces = set()
    for _ in range(2):
        s, authorize = _authorize_request(platform.url)
        nonce = parse_qs(urlparse(authorize).query).get("nonce", [""])[0]
        assert len(nonce) >= 32
        nonces.add(nonce)
        r = _sign_in(s, authorize, "demo-member", platform.credentials["demo-member"])
        assert r.status_code == 200 and on_hub(platform.url, r.url)  # hub or own server
        assert s.get(platform.url + "hub/api/user", timeout=30).status_code == 200
    assert len(nonces) == 2


def test_an_id_token_with_another_nonce_is_refused(platform):
    s, authorize = _authorize_request(platform.url)
    r = _sign_in(
        s,
        _with_query(authorize, nonce="nonce-of-another-sign-in"),
        "demo-member",
        platform.credentials["demo-member"],
    )
    assert r.status_code == 403
    assert "not issued for this sign-in" in r.text and "Traceback" not in r.text
    assert s.get(platform.url + "hub/api/user", timeout=30).status_code == 403


def test_an_id_token_without_a_nonce_is_refused(platform):
    s, authorize = _authorize_request(platform.url)
    parts = urlparse(authorize)
    query = {k: v[0] for k, v in parse_qs(parts.query).items() if k != "nonce"}
    r = _sign_in(
        s,
        urlunparse(parts._replace(query=urlencode(query))),
        "demo-member",
        platform.credentials["demo-member"],
    )
    assert r.status_code == 403 and "not issued for this sign-in" in r.text
    assert s.get(platform.url + "hub/api/user", timeout=30).status_code == 403
