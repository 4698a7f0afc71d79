"""GenericOAuthenticator for EGI Check-in style providers: OIDC discovery, VO gating, admin roles.

Endpoints come from the issuer's discovery document, so switching from the embedded provider
to ``https://aai.egi.eu/auth/realms/egi`` is a change of ``auth.issuer`` only. A user is
admitted when an entitlement names one of ``vos``; they become admin with one of
``admin_roles`` in such a VO. Hub groups are the admitted VOs (never raw URNs). The access
token is refreshed with the refresh token before it expires, so the copy a user server reads
from the hub is always usable.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
import urllib.request
from functools import cache
from typing import Any

from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthLoginHandler
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import Bool, Integer, List, Unicode, default

from .. import entitlements
from .idtoken import IdTokenError, allowed_algorithms, verify_id_token

_POSIX_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class IdpUnavailable(web.HTTPError):
    """The identity provider did not answer (or answered 5xx): 503, try again later."""

    def __init__(self) -> None:
        super().__init__(
            503,
            "The identity provider is not reachable right now, so the sign-in cannot be "
            "completed. Please try again in a few minutes.",
        )


def _oauth_error(exc: HTTPClientError) -> str:
    """The OAuth ``error`` code of a refused token request ("refused" when unreadable)."""
    try:
        return str(json.loads(exc.response.body).get("error") or "refused")[:60]
    except (AttributeError, TypeError, ValueError):
        return "refused"


def request_nonce(secret: bytes, state: str) -> str:
    """The OIDC ``nonce`` of the authorization request carrying ``state``.

    Derived from the OAuth state with the hub's cookie secret, so the callback can recompute
    it (the state itself is checked against the browser's state cookie first): an ID token
    minted for another authorization request, e.g. injected or replayed, does not match.
    """
    mac = hmac.new(secret, b"cscale-oidc-nonce:" + state.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def _cookie_secret(handler) -> bytes:
    secret = handler.settings.get("cookie_secret") or b""
    return secret.encode() if isinstance(secret, str) else bytes(secret)


class NonceLoginHandler(OAuthLoginHandler):
    """OAuthenticator's login handler, adding an OIDC ``nonce`` bound to the request's state."""

    def authorize_redirect(self, *args: Any, **kwargs: Any) -> None:
        extra = dict(kwargs.get("extra_params") or {})
        if "openid" in (kwargs.get("scope") or []) and extra.get("state"):
            extra["nonce"] = request_nonce(_cookie_secret(self), extra["state"])
        kwargs["extra_params"] = extra
        super().authorize_redirect(*args, **kwargs)


@cache
def discover(issuer: str, timeout: float = 10.0) -> dict[str, Any]:
    """The issuer's OpenID Connect discovery document (fetched once per process)."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            doc = json.load(resp)
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"OIDC discovery failed for {url}: {exc}") from exc
    if doc.get("issuer", "").rstrip("/") != issuer.rstrip("/"):
        raise RuntimeError(
            f"OIDC discovery at {url} names issuer {doc.get('issuer')!r}, expected {issuer!r}"
        )
    return doc


def posix_username(name: str) -> str:
    """A safe POSIX account name for a hub user: unchanged when already safe, else sanitised + hash."""
    lowered = name.strip().lower()
    if _POSIX_NAME.match(lowered):
        return lowered
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    clean = re.sub(r"[^a-z0-9_-]+", "-", lowered).strip("-_") or "user"
    if not clean[0].isalpha():
        clean = "u-" + clean
    return f"{clean[:22]}-{digest}"


class CScaleAuthenticator(GenericOAuthenticator):
    """OIDC login admitting members of configured VOs (``eduperson_entitlement``)."""

    oidc_issuer = Unicode(
        "",
        config=True,
        help="OIDC issuer; authorize, token and userinfo URLs default from its discovery document.",
    )
    vos = List(Unicode(), config=True, help="VOs whose members are admitted; each is a hub group.")
    admin_roles = List(Unicode(), ["admin"], config=True, help="VO roles that grant hub admin.")
    entitlements_claim = Unicode(
        "eduperson_entitlement", config=True, help="Claim with entitlements."
    )
    entitlement_namespace = Unicode(
        "urn:mace:egi.eu:group", config=True, help="Entitlement namespace."
    )
    entitlement_authority = Unicode(
        "aai.egi.eu", allow_none=True, config=True, help="Required #authority of entitlements."
    )
    enrollment_url = Unicode(
        "", config=True, help="Where to apply for VO membership; {vo} is replaced by the VO name."
    )
    subgroup_prefixes = List(
        Unicode(),
        config=True,
        help="VO subgroups whose name starts with one of these become hub groups too (e.g. "
        "'workshop-': a cohort's subgroup entitlement keeps its members in the workshop group at "
        "every login; with manage_groups the IdP is the source of every group).",
    )
    refresh_margin = Integer(
        600,
        config=True,
        help="Refresh the access token when it expires within this many seconds.",
    )
    discovery_timeout = Integer(10, config=True, help="Seconds to wait for the discovery document.")
    posix_usernames = Bool(
        True, config=True, help="Normalise usernames to safe POSIX account names."
    )
    verify_id_tokens = Bool(
        True,
        config=True,
        help="Verify every ID token (issuer JWKS signature, iss, aud, exp); a login without one "
        "is refused when the scopes include openid.",
    )
    id_token_leeway = Integer(60, config=True, help="Seconds of clock skew allowed on ID tokens.")
    http_max_connections = Integer(
        100,
        config=True,
        help="Requests to the issuer made at once (tornado's shared client allows 10; queued "
        "requests count against their timeout, which fails sign-ins during a login storm).",
    )
    login_handler = NonceLoginHandler

    @default("http_client")
    def _http_client_default(self):
        return AsyncHTTPClient(force_instance=True, max_clients=self.http_max_connections)

    def _discovered(self, key: str) -> str:
        if not self.oidc_issuer:
            return ""
        return discover(self.oidc_issuer, self.discovery_timeout).get(key, "")

    @default("authorize_url")
    def _authorize_url_default(self):
        return self._discovered("authorization_endpoint")

    @default("token_url")
    def _token_url_default(self):
        return self._discovered("token_endpoint")

    @default("userdata_url")
    def _userdata_url_default(self):
        return self._discovered("userinfo_endpoint")

    @default("logout_redirect_url")
    def _logout_redirect_url_default(self):
        return ""

    @default("manage_groups")
    def _manage_groups_default(self):
        return True

    @default("enable_auth_state")
    def _enable_auth_state_default(self):
        return True

    @default("auth_refresh_strict")
    def _auth_refresh_strict_default(self):
        # access follows the IdP: once tokens cannot be refreshed (account disabled, VO left,
        # refresh token revoked) API tokens stop working too, not only browser sessions
        return True

    @default("custom_403_message")
    def _custom_403_default(self):
        return self.refusal_message()

    def refusal_message(self) -> str:
        vos = " or ".join(f"'{vo}'" for vo in self.vos) or "(none configured)"
        msg = f"Access to this hub requires membership of the virtual organisation {vos}."
        if self.enrollment_url and self.vos:
            links = ", ".join(self.enrollment_url.format(vo=vo) for vo in self.vos)
            msg += f" Apply to join at {links}, then log in again."
        else:
            msg += " Ask the VO's managers to add you, then log in again."
        return msg

    def normalize_username(self, username: str) -> str:
        username = super().normalize_username(username)
        return posix_username(username) if self.posix_usernames else username

    def _roles_by_vo(self, auth_state: dict) -> dict[str, set[str]]:
        user_info = auth_state.get(self.user_auth_state_key) or {}
        return entitlements.memberships(
            user_info.get(self.entitlements_claim),
            namespace=self.entitlement_namespace,
            authority=self.entitlement_authority,
        )

    async def get_user_groups(self, auth_state: dict) -> set[str]:
        admitted = entitlements.admitted_vos(self._roles_by_vo(auth_state), self.vos)
        user_info = auth_state.get(self.user_auth_state_key) or {}
        cohorts = entitlements.subgroups(
            user_info.get(self.entitlements_claim),
            admitted,
            self.subgroup_prefixes,
            namespace=self.entitlement_namespace,
            authority=self.entitlement_authority,
        )
        return set(admitted) | cohorts

    async def update_auth_model(self, auth_model: dict) -> dict:
        roles = self._roles_by_vo(auth_model["auth_state"])
        if entitlements.is_admin(roles, self.vos, self.admin_roles):
            auth_model["admin"] = True
        elif auth_model["admin"] is None:
            auth_model["admin"] = False
        return auth_model

    async def check_allowed(self, username: str, auth_model: dict | None) -> bool:
        if auth_model is None:
            return True
        if auth_model.get("admin"):
            return True
        groups = set(auth_model.get("groups") or ())
        return bool(groups & set(self.vos)) or username in self.allowed_users

    async def get_token_info(self, handler, params):
        """The token response, with its ID token verified (403 when it does not verify).

        A refused code (expired, used, forged) is a 403 page, an unreachable IdP a 503 page."""
        try:
            token_info = await super().get_token_info(handler, params)
        except HTTPClientError as exc:
            if exc.code >= 500:  # 599: no answer at all
                self.log.warning("Token endpoint %s failed: %s", self.token_url, exc)
                raise IdpUnavailable() from None
            self.log.info("Token endpoint %s refused the request: %s", self.token_url, exc)
            raise web.HTTPError(
                403,
                f"The identity provider refused the sign-in ({_oauth_error(exc)}). The sign-in "
                "link may have expired or been used already: please log in again.",
            ) from None
        except OSError as exc:
            self.log.warning("Token endpoint %s unreachable: %s", self.token_url, exc)
            raise IdpUnavailable() from None
        if not (self.verify_id_tokens and self.oidc_issuer):
            return token_info
        id_token = token_info.get("id_token")
        if not id_token:
            if params.get("grant_type") == "authorization_code" and "openid" in self.scope:
                raise web.HTTPError(
                    403, "The identity provider returned no ID token; log in again."
                )
            return token_info  # refresh responses need not carry one
        doc = discover(self.oidc_issuer, self.discovery_timeout)
        try:
            algorithms = allowed_algorithms(doc)
            claims = await asyncio.to_thread(
                verify_id_token,
                id_token,
                issuer=doc["issuer"],
                client_id=self.client_id,
                jwks_uri=doc.get("jwks_uri", ""),
                algorithms=algorithms,
                leeway=self.id_token_leeway,
                timeout=self.discovery_timeout,
            )
        except IdTokenError as exc:
            self.log.warning("Refused an ID token from %s: %s", self.token_url, exc)
            raise web.HTTPError(
                403,
                f"The sign-in could not be verified ({exc}). Log in again; if this "
                "persists, tell the operator of this hub.",
            ) from None
        if params.get("grant_type") == "authorization_code":
            state = handler.get_state_url() if hasattr(handler, "get_state_url") else ""
            expected = request_nonce(_cookie_secret(handler), state) if state else None
            if expected is None or not hmac.compare_digest(
                str(claims.get("nonce", "")), expected
            ):
                self.log.warning("Refused an ID token from %s: nonce mismatch", self.token_url)
                raise web.HTTPError(
                    403,
                    "The sign-in could not be verified (the ID token was not issued for this "
                    "sign-in). Log in again.",
                )
        token_info["id_token_claims"] = claims
        return token_info

    async def token_to_user(self, token_info):
        """userinfo, checked to be about the subject of the verified ID token.

        An unreachable or failing userinfo endpoint is a 503 page, a refused one a 403 page."""
        try:
            user_info = await super().token_to_user(token_info)
        except HTTPClientError as exc:
            if exc.code >= 500:  # 599: timeout or no answer
                self.log.warning("userinfo endpoint %s failed: %s", self.userdata_url, exc)
                raise IdpUnavailable() from None
            self.log.info("userinfo endpoint %s refused the request: %s", self.userdata_url, exc)
            raise web.HTTPError(
                403, "The identity provider refused to describe this sign-in; log in again."
            ) from None
        except OSError as exc:
            self.log.warning("userinfo endpoint %s unreachable: %s", self.userdata_url, exc)
            raise IdpUnavailable() from None
        claims = token_info.get("id_token_claims")
        if claims and user_info.get("sub") != claims.get("sub"):
            self.log.warning(
                "userinfo subject %r differs from the ID token's %r",
                user_info.get("sub"),
                claims.get("sub"),
            )
            raise web.HTTPError(403, "The identity provider's answers do not match; log in again.")
        return user_info

    async def build_auth_state_dict(self, token_info: dict, user_info: dict) -> dict:
        state = super().build_auth_state_dict(token_info, user_info)
        expires_in = token_info.get("expires_in")
        if isinstance(expires_in, int | float):
            state["expires_at"] = time.time() + float(expires_in)
        return state

    async def refresh_user(self, user, handler=None, **kwargs):
        """Refresh, then re-check admission: a user who left every admitted VO (or whose
        account the IdP disabled) must log in again, and is refused there. While the IdP
        does not answer, the current auth is kept (checked again at the next refresh)."""
        try:
            model = await self._refresh_tokens(user, handler, **kwargs)
        except (IdpUnavailable, OSError) as exc:
            self.log.warning("Cannot refresh %s, the IdP is unreachable (%s)", user.name, exc)
            return True
        except HTTPClientError as exc:
            if exc.code < 500:
                raise
            self.log.warning("Cannot refresh %s, the IdP is unreachable (%s)", user.name, exc)
            return True
        if isinstance(model, dict) and not await self.check_allowed(model["name"], model):
            self.log.warning(
                "%s is no longer a member of an admitted VO; login required", user.name
            )
            return False
        return model

    async def _refresh_tokens(self, user, handler=None, **kwargs):
        """Refresh proactively: when the access token expires within ``refresh_margin``,
        exchange the refresh token first, instead of waiting for userinfo to fail."""
        auth_state = await user.get_auth_state() if self.enable_auth_state else None
        if auth_state and auth_state.get("refresh_token"):
            expires_at = auth_state.get("expires_at")
            if expires_at is not None and expires_at - time.time() < self.refresh_margin:
                self.log.info("Access token of %s expires soon; refreshing it", user.name)
                params = self.build_refresh_token_request_params(auth_state["refresh_token"])
                try:
                    token_info = await self.get_token_info(handler, params)
                except IdpUnavailable:
                    raise
                except Exception as exc:
                    self.log.info(
                        "Refreshing tokens of %s failed (%s); login required", user.name, exc
                    )
                    return False
                token_info.setdefault("refresh_token", auth_state["refresh_token"])
                try:
                    return await self._token_to_auth_model(token_info)
                except Exception as exc:
                    self.log.error(
                        "Fresh token of %s does not work (%s); login required", user.name, exc
                    )
                    return False
        return await super().refresh_user(user, handler, **kwargs)
