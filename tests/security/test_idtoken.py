"""ID-token verification (cscale_extensions/hub/idtoken.py), alone and in the hub's login.

Forged tokens are made from a genuine one (issued by the real provider to a real login) by
re-signing its claims: with the provider's own key after changing a claim, with another key,
with ``alg: none`` or HS256 keyed with the public key. In the hub, :class:`seckit.IdpFront`
swaps the ``id_token`` of the token endpoint's answer on its way to the hub.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from seckit import CLIENT_ID, VO, assert_clean_page, logged_in, login_flow

from cscale_extensions.hub.idtoken import IdTokenError, allowed_algorithms, verify_id_token
from cscale_extensions.localstack.oidc import accounts

rel = pytest.mark.reliability
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Forger:
    """Re-sign the claims of a genuine ID token, changed as asked."""

    def __init__(self, jwk: dict):
        self.kid = jwk["kid"]
        self.key = jwt.PyJWK(jwk).key  # the provider's private signing key

    @staticmethod
    def claims(token: str) -> dict:
        return jwt.decode(token, options={"verify_signature": False})

    def sign(self, token: str, key=None, **changes) -> str:
        claims = {**self.claims(token), **changes}
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": self.kid})

    def unsigned(self, token: str) -> str:
        head = _b64(json.dumps({"alg": "none", "kid": self.kid}).encode())
        return f"{head}.{_b64(json.dumps(self.claims(token)).encode())}."

    def hs256_with_public_key(self, token: str) -> str:
        pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        head = _b64(json.dumps({"alg": "HS256", "kid": self.kid, "typ": "JWT"}).encode())
        body = _b64(json.dumps(self.claims(token)).encode())
        sig = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{_b64(sig)}"


@pytest.fixture(scope="module")
def forger(sec) -> Forger:
    return Forger(sec.idp.signing_jwk)


@pytest.fixture(scope="module")
def genuine(sec) -> str:
    """A real ID token of a real login (captured at the IdP front)."""
    sec.member("sec-idt")
    seen: list[str] = []

    def capture(tok: str) -> str:
        seen.append(tok)
        return tok

    with sec.idp.front.tampering(capture):
        sec.login("sec-idt")
    assert seen, "the token endpoint returned no id_token"
    return seen[0]


@pytest.fixture(scope="module")
def verify(sec) -> Callable[[str], dict]:
    doc = sec.idp.discovery()

    def run(token: str, **kw) -> dict:
        args = dict(
            issuer=doc["issuer"],
            client_id=CLIENT_ID,
            jwks_uri=doc["jwks_uri"],
            algorithms=allowed_algorithms(doc),
            leeway=0,
        )
        return verify_id_token(token, **{**args, **kw})

    return run


def _forgeries(f: Forger, sec) -> dict[str, Callable[[str], str | None]]:
    now = int(time.time())
    return {
        "other-key": lambda t: f.sign(t, key=OTHER_KEY),
        "wrong-aud": lambda t: f.sign(t, aud="another-client"),
        "wrong-iss": lambda t: f.sign(t, iss="https://evil.example.org"),
        "expired": lambda t: f.sign(t, iat=now - 7200, exp=now - 3600),
        "alg-none": f.unsigned,
        "hs256-public-key": f.hs256_with_public_key,
        "garbage": lambda t: "not-a-jwt",
        "several-aud-no-azp": lambda t: f.sign(
            t, aud=[CLIENT_ID, "another-client"], azp="another-client"
        ),
    }


FORGERIES = [
    "other-key",
    "wrong-aud",
    "wrong-iss",
    "expired",
    "alg-none",
    "hs256-public-key",
    "garbage",
    "several-aud-no-azp",
]


def test_genuine_token_verifies(verify, genuine, forger):
    claims = verify(genuine)
    assert claims["aud"] == CLIENT_ID and claims["sub"]
    # and one re-signed with the real key, unchanged, too: the forgeries differ only as named
    assert verify(forger.sign(genuine))["sub"] == claims["sub"]


@pytest.mark.parametrize("kind", FORGERIES)
def test_forged_token_is_rejected(verify, genuine, forger, sec, kind):
    with pytest.raises(IdTokenError):
        verify(_forgeries(forger, sec)[kind](genuine))


def test_unknown_kid_and_unreachable_jwks_are_clear_errors(verify, genuine, forger):
    token = jwt.encode(
        forger.claims(genuine), OTHER_KEY, algorithm="RS256", headers={"kid": "nope"}
    )
    with pytest.raises(IdTokenError, match="no signing key"):
        verify(token)
    with pytest.raises(IdTokenError, match="cannot fetch"):
        verify(genuine, jwks_uri="http://127.0.0.1:9/jwks")


def test_only_asymmetric_algorithms_are_offered():
    assert allowed_algorithms({"id_token_signing_alg_values_supported": ["HS256", "RS256"]}) == [
        "RS256"
    ]
    with pytest.raises(IdTokenError):
        allowed_algorithms({"id_token_signing_alg_values_supported": ["HS256", "none"]})


# --------------------------------------------------------------------------- in the hub's login


def _login_with(sec, fn) -> tuple[requests.Session, requests.Response, int]:
    with sec.idp.front.tampering(fn):
        s, r = login_flow(sec.url, "sec-idt", sec.passwords["sec-idt"])
        return s, r, sec.idp.front.tampered


def test_login_through_the_front_with_a_re_signed_genuine_token_is_admitted(sec, forger, genuine):
    """The control: the front's rewriting by itself does not break a login."""
    s, r, n = _login_with(sec, forger.sign)
    assert n >= 1 and logged_in(s) and r.status_code == 200


@rel(
    injected="token endpoint answer with a forged id_token: {param}",
    expected="403 page, no hub session; the hub log names the failed check",
)
@pytest.mark.parametrize("kind", [*FORGERIES, "other-subject", "missing"])
def test_login_with_a_forged_id_token_is_refused(sec, forger, genuine, kind):
    if kind == "other-subject":
        sec.add_user("sec-victim", [accounts.entitlement(VO, "admin")])
        victim = next(
            a
            for a in accounts.list_accounts(sec.idp.accounts_file)
            if a["username"] == "sec-victim"
        )
        fn = lambda t: forger.sign(t, sub=victim["sub"])  # noqa: E731
    elif kind == "missing":
        fn = lambda t: None  # noqa: E731
    else:
        fn = _forgeries(forger, sec)[kind]
    log = sec.stack.state_dir / "logs" / "hub.log"
    seen = log.stat().st_size
    s, r, n = _login_with(sec, fn)
    assert n >= 1, "the front did not see the token response"
    with open(log, "rb") as f:
        f.seek(seen)
        new_lines = f.read().decode(errors="replace")
    reason = "userinfo subject" if kind == "other-subject" else "Refused an ID token"
    if kind != "missing":
        assert reason in new_lines, "the refusal did not come from the ID-token checks"
    assert_clean_page(r)
    assert r.status_code == 403, f"HTTP {r.status_code} at {r.url}"
    assert not logged_in(s)
    assert s.get(sec.url + "hub/api/user", timeout=30).status_code == 403
