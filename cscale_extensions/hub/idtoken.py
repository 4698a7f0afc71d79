"""Verify OpenID Connect ID tokens: signature against the issuer's JWKS, ``iss``, ``aud``, ``exp``.

oauthenticator takes the token response as it comes; :func:`verify_id_token` is what the
authenticator runs on every ``id_token`` it receives, so a token endpoint (or anything in
between) cannot hand the hub an identity the issuer did not sign for this client.
"""

from __future__ import annotations

import threading
from typing import Any

import jwt

#: asymmetric algorithms only: an HMAC "signature" keyed with a public key proves nothing
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
REQUIRED_CLAIMS = ("iss", "aud", "exp", "iat", "sub")

_clients: dict[str, jwt.PyJWKClient] = {}
_lock = threading.Lock()


class IdTokenError(ValueError):
    """The ID token is not one the issuer made for this client (reason in the message)."""


def jwks_client(jwks_uri: str, timeout: float = 10.0) -> jwt.PyJWKClient:
    """A cached JWKS client for ``jwks_uri`` (keys refetched when an unknown ``kid`` shows up)."""
    with _lock:
        client = _clients.get(jwks_uri)
        if client is None:
            client = jwt.PyJWKClient(jwks_uri, cache_keys=True, lifespan=3600, timeout=timeout)
            _clients[jwks_uri] = client
        return client


def allowed_algorithms(discovery: dict[str, Any]) -> list[str]:
    """The issuer's advertised ID-token algorithms that are asymmetric (RS256 when none listed)."""
    listed = discovery.get("id_token_signing_alg_values_supported") or ["RS256"]
    algs = [a for a in listed if a in ASYMMETRIC_ALGORITHMS]
    if not algs:
        raise IdTokenError(f"the issuer offers no asymmetric ID-token algorithm ({listed})")
    return algs


def verify_id_token(
    id_token: str,
    *,
    issuer: str,
    client_id: str,
    jwks_uri: str,
    algorithms: list[str] | tuple[str, ...] = ("RS256",),
    leeway: float = 60.0,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """The claims of ``id_token`` once verified; raise :class:`IdTokenError` otherwise.

    Checks: a signature by a key of ``jwks_uri`` with one of ``algorithms``; ``iss`` equals
    ``issuer`` (trailing "/" ignored); ``aud`` contains ``client_id`` and, when it names
    several audiences, ``azp`` is ``client_id``; ``exp`` and ``iat`` present, ``exp`` not past.
    """
    if not isinstance(id_token, str) or id_token.count(".") != 2:
        raise IdTokenError("the ID token is not a signed JWT")
    try:
        header = jwt.get_unverified_header(id_token)
    except jwt.PyJWTError as exc:
        raise IdTokenError(f"the ID token header is unreadable: {exc}") from exc
    alg = header.get("alg")
    if alg not in algorithms:
        raise IdTokenError(
            f"the ID token is signed with {alg!r}; accepted: {', '.join(algorithms)}"
        )
    try:
        key = jwks_client(jwks_uri, timeout).get_signing_key_from_jwt(id_token)
    except jwt.PyJWKClientConnectionError as exc:
        raise IdTokenError(
            f"cannot fetch the issuer's signing keys from {jwks_uri}: {exc}"
        ) from exc
    except jwt.PyJWTError as exc:
        raise IdTokenError(f"no signing key of the issuer matches the ID token: {exc}") from exc
    try:
        claims = jwt.decode(
            id_token,
            key.key,
            algorithms=list(algorithms),
            audience=client_id,
            leeway=leeway,
            options={"require": list(REQUIRED_CLAIMS), "verify_iss": False},
        )
    except jwt.InvalidSignatureError as exc:
        raise IdTokenError("the ID token signature does not verify with the issuer's keys") from exc
    except jwt.ExpiredSignatureError as exc:
        raise IdTokenError("the ID token has expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise IdTokenError(f"the ID token is not meant for client {client_id!r}") from exc
    except jwt.PyJWTError as exc:
        raise IdTokenError(f"the ID token is invalid: {exc}") from exc
    if str(claims.get("iss", "")).rstrip("/") != issuer.rstrip("/"):
        raise IdTokenError(f"the ID token was issued by {claims.get('iss')!r}, not {issuer!r}")
    aud = claims["aud"]
    if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != client_id:
        raise IdTokenError(f"the ID token has several audiences and azp is not {client_id!r}")
    return claims
