"""GenericOAuthenticator for EGI Check-in style providers: OIDC discovery, VO gating, admin roles.

Endpoints come from the issuer's discovery document, so switching from the embedded provider
to ``https://aai.egi.eu/auth/realms/egi`` is a change of ``auth.issuer`` only. A user is
admitted when an entitlement names one of ``vos`` (a subgroup of it counts); they become admin
with one of ``admin_roles`` held on such a VO itself, never in a subgroup (any VO manager can
create one), or with one of ``admin_entitlements``. Hub groups are the admitted VOs (never raw
URNs). The access token is refreshed with the refresh token before it expires, so the copy a
user server reads from the hub is always usable.

Each hub user is bound to one identity of the issuer: the first login records the issuer and
its ``sub`` in the user's auth state, and a later login that maps to the same hub name with
another ``sub`` is refused. Usernames are only a mapping from a claim, and two claims can map
to one name (``Alice``/``alice``; a literal ``x-dot-1a2b3c4d`` and the sanitised ``X.Dot``):
without the binding the second account would become the first one's hub user.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import hashlib
import hmac
import json
import re
import time
from typing import Any

from jupyterhub.utils import maybe_future
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthLoginHandler
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import Bool, Dict, Integer, List, Unicode, default

from cscale_extensions.compute import sitegroups
from cscale_extensions.config import entitlements
from cscale_extensions.hub.discovery import Discovery, DiscoveryUnavailable
from cscale_extensions.hub.idtoken import IdTokenError, allowed_algorithms, verify_id_token

_POSIX_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


#: set while oauthenticator's refresh_user checks the stored access token: a 401 from userinfo
#: then means "refresh me", not "refuse this sign-in"
_REFRESHING: contextvars.ContextVar[bool] = contextvars.ContextVar("cscale_refreshing", default=False)

class IdpUnavailable(web.HTTPError):
    """The identity provider did not answer (or answered 5xx): 503, try again later."""

    def __init__(self, retry_after: int = 30) -> None:
        super().__init__(
            503,
            "The identity provider is not reachable right now, so the sign-in cannot be "
            "completed. Please try again in a few minutes.",
        )
        # JupyterHub's error page sets an HTTPError's ``headers`` on the response
        self.headers = {"Retry-After": str(max(1, int(retry_after)))}


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

    async def get(self) -> None:
        # the authorize URL may come from discovery: fetched here without blocking the hub
        await self.authenticator.ensure_endpoints()
        return super().get()

    def authorize_redirect(self, *args: Any, **kwargs: Any) -> None:
        extra = dict(kwargs.get("extra_params") or {})
        if "openid" in (kwargs.get("scope") or []) and extra.get("state"):
            extra["nonce"] = request_nonce(_cookie_secret(self), extra["state"])
        kwargs["extra_params"] = extra
        super().authorize_redirect(*args, **kwargs)


# endpoint traits filled from the discovery document unless configured
_DISCOVERED = {
    "authorize_url": "authorization_endpoint",
    "token_url": "token_endpoint",
    "userdata_url": "userinfo_endpoint",
}


def posix_username(name: str) -> str:
    """A safe POSIX account name for a hub user: the case-folded name when already safe, else
    sanitised + a hash of the case-folded name (so case variants are one hub user).

    Idempotent: the result is safe, so mapping it again returns it unchanged.
    """
    folded = name.strip().casefold()
    if _POSIX_NAME.match(folded):
        return folded
    digest = hashlib.sha256(folded.encode()).hexdigest()[:8]
    clean = re.sub(r"[^a-z0-9_-]+", "-", folded).strip("-_") or "user"
    if not clean[0].isalpha():
        clean = "u-" + clean
    return f"{clean[:22]}-{digest}"


#: auth-state key of the identity a hub user is bound to: ``{"iss": <issuer>, "sub": <sub>}``
IDENTITY_KEY = "cscale_identity"


def identity_of(auth_state: dict | None) -> tuple[str, str] | None:
    """The (issuer, sub) recorded in ``auth_state``; None when none is (never logged in, or
    last logged in before bindings were recorded)."""
    record = (auth_state or {}).get(IDENTITY_KEY)
    if isinstance(record, dict) and record.get("iss") and record.get("sub"):
        return str(record["iss"]), str(record["sub"])
    return None


def identity_conflict(bound: tuple[str, str] | None, current: tuple[str, str] | None) -> bool:
    """True when a hub user bound to ``bound`` must not be entered with ``current``.

    An unbound user (None) takes the current identity; a bound one only accepts the same one.
    """
    return bound is not None and bound != current


def identity_refusal(name: str) -> str:
    """The 403 text for a sign-in whose identity is not the one ``name`` is bound to."""
    return (
        f"This hub account ({name}) belongs to another identity: it was first used by a "
        "different account of the identity provider than the one you signed in with, so "
        "the sign-in was refused. Sign in with the account you used before, or ask the "
        "operator of this hub if you think this is wrong."
    )


class CScaleAuthenticator(GenericOAuthenticator):
    """OIDC login admitting members of configured VOs (``eduperson_entitlement``)."""

    oidc_issuer = Unicode(
        "",
        config=True,
        help="OIDC issuer; authorize, token and userinfo URLs default from its discovery document.",
    )
    vos = List(Unicode(), config=True, help="VOs whose members are admitted; each is a hub group.")
    admin_roles = List(
        Unicode(),
        ["admin"],
        config=True,
        help="Roles that grant hub admin when held on one of vos itself (not in a subgroup).",
    )
    admin_entitlements = List(
        Unicode(),
        config=True,
        help="Full entitlement URNs that grant hub admin (and admission), compared exactly.",
    )
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
    site_groups = List(
        Dict(),
        config=True,
        help="POSIX groups of the Slurm sites (cscale_extensions.compute.sitegroups, as dicts): "
        "the user's account is put in those their VOs allow and out of the others at every "
        "sign-in, token refresh and hub start, so Slurm itself enforces the sites' VOs.",
    )
    #: the marker of the accounts the hub made (hub.spawner.ACCOUNT_MARKER; set by configure)
    account_marker = Unicode("cscale-hub user", config=True, help="Comment of hub-made accounts.")
    login_handler = NonceLoginHandler

    @default("http_client")
    def _http_client_default(self):
        return AsyncHTTPClient(force_instance=True, max_clients=self.http_max_connections)

    _discovery: Discovery | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # endpoints the operator set (config or arguments); the others come from discovery
        self._configured_endpoints = {t for t in _DISCOVERED if self.trait_has_value(t)}

    async def discovery_document(self) -> dict[str, Any]:
        """The issuer's discovery document (cached, backed off; hub/discovery.py); an
        unreachable issuer is IdpUnavailable (503 with Retry-After)."""
        if self._discovery is None:
            self._discovery = Discovery(
                self.oidc_issuer, timeout=self.discovery_timeout, client=self.http_client
            )
        try:
            return await self._discovery.get()
        except DiscoveryUnavailable as exc:
            self.log.warning("%s", exc)
            raise IdpUnavailable(exc.retry_after) from None

    async def ensure_endpoints(self) -> None:
        """Fill authorize/token/userinfo URLs the operator did not set from discovery."""
        if not self.oidc_issuer:
            return
        missing = [t for t in _DISCOVERED if t not in self._configured_endpoints]
        if not missing:
            return
        doc = await self.discovery_document()
        for trait in missing:
            value = str(doc.get(_DISCOVERED[trait], ""))
            if getattr(self, trait) != value:
                setattr(self, trait, value)

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

    def _entitlements(self, auth_state: dict) -> Any:
        return (auth_state.get(self.user_auth_state_key) or {}).get(self.entitlements_claim)

    def _roles_by_vo(self, auth_state: dict) -> dict[str, set[str]]:
        return entitlements.memberships(
            self._entitlements(auth_state),
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
        admin = entitlements.is_admin(
            self._entitlements(auth_model["auth_state"]),
            self.vos,
            self.admin_roles,
            self.admin_entitlements,
            namespace=self.entitlement_namespace,
            authority=self.entitlement_authority,
        )
        if admin:
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
        await self.ensure_endpoints()
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
        doc = await self.discovery_document()
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
        await self.ensure_endpoints()
        try:
            user_info = await super().token_to_user(token_info)
        except HTTPClientError as exc:
            if exc.code >= 500:  # 599: timeout or no answer
                self.log.warning("userinfo endpoint %s failed: %s", self.userdata_url, exc)
                raise IdpUnavailable() from None
            if exc.code == 401 and _REFRESHING.get():
                raise  # a stale access token: oauthenticator's refresh exchanges the refresh token
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

    def _issuer(self) -> str:
        return (self.oidc_issuer or self.token_url).rstrip("/")

    async def build_auth_state_dict(self, token_info: dict, user_info: dict) -> dict:
        """oauthenticator's auth state, plus when the access token expires and the identity
        (issuer, ``sub``) the sign-in is for."""
        sub = user_info.get("sub")
        if not isinstance(sub, str) or not sub:
            self.log.warning("userinfo from %s has no sub; sign-in refused", self.userdata_url)
            raise web.HTTPError(
                403,
                "The identity provider did not say which account signed in (no subject); "
                "log in again, and tell the operator of this hub if this persists.",
            )
        state = super().build_auth_state_dict(token_info, user_info)
        expires_in = token_info.get("expires_in")
        if isinstance(expires_in, int | float):
            state["expires_at"] = time.time() + float(expires_in)
        state[IDENTITY_KEY] = {"iss": self._issuer(), "sub": sub}
        return state

    async def authenticate(self, handler, data=None, **kwargs):
        """oauthenticator's sign-in, refused (403) when the hub user it maps to is bound to
        another identity; an existing user without a recorded identity takes this one."""
        model = await super().authenticate(handler, data, **kwargs)
        if model and handler is not None:
            user = handler.find_user(model["name"])
            if user is not None:
                await self._check_binding(model, identity_of(await user.get_auth_state()))
        if model and model.get("groups") is not None:
            await self.sync_site_groups(model["name"], model["groups"])
        return model

    async def add_user(self, user):
        """Also when the hub starts, for every user: their account's site groups from the
        VOs in the database (a user without any yet, e.g. signing in for the first time, is
        synchronised by the sign-in and the spawn instead)."""
        await maybe_future(super().add_user(user))
        names = [g.name for g in user.groups]
        if names:
            await self.sync_site_groups(user.name, names)

    async def sync_site_groups(self, name: str, groups: list[str] | None) -> None:
        """Put ``name``'s account in the Slurm sites' POSIX groups its VOs ``groups`` allow
        (None: in none); see :mod:`cscale_extensions.compute.sitegroups`."""
        if not self.site_groups:
            return
        site_groups = [sitegroups.SiteGroup.from_dict(d) for d in self.site_groups]
        await asyncio.to_thread(
            sitegroups.sync_quietly, name, groups, site_groups, self.account_marker, self.log
        )

    async def _check_binding(self, model: dict, bound: tuple[str, str] | None) -> None:
        """Raise the 403 page when the sign-in ``model`` is not the identity ``bound``."""
        current = identity_of(model.get("auth_state"))
        name = model["name"]
        if not identity_conflict(bound, current):
            if bound is None and current is not None:
                self.log.info(
                    "Hub user %s had no recorded identity; bound to sub %r of %s at this sign-in",
                    name,
                    current[1],
                    current[0],
                )
            return
        user_info = model["auth_state"].get(self.user_auth_state_key) or {}
        claim = self.username_claim if isinstance(self.username_claim, str) else "sub"
        self.log.warning(
            "Refused a sign-in as hub user %s: it is bound to sub %r of %s, this sign-in is "
            "sub %r of %s (%s %r). If the person's identity really changed, see 'Identity "
            "binding' in docs/security.md.",
            name,
            bound[1],
            bound[0],
            current[1] if current else None,
            current[0] if current else None,
            claim,
            str(user_info.get(claim, ""))[:80],
        )
        raise web.HTTPError(403, identity_refusal(name))

    async def refresh_user(self, user, handler=None, **kwargs):
        """Refresh, then re-check admission: a user who left every admitted VO (or whose
        account the IdP disabled, or whose tokens name another identity than the recorded
        one) must log in again, and is refused there. While the IdP does not answer, the
        current auth is kept (checked again at the next refresh)."""
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
        if isinstance(model, dict):
            bound = identity_of(await user.get_auth_state())
            if identity_conflict(bound, identity_of(model.get("auth_state"))):
                self.log.warning(
                    "Refreshed tokens of %s name another identity than the recorded one; "
                    "login required",
                    user.name,
                )
                return False
        if isinstance(model, dict) and not await self.check_allowed(model["name"], model):
            self.log.warning(
                "%s is no longer a member of an admitted VO; login required", user.name
            )
            await self.sync_site_groups(user.name, None)
            return False
        if isinstance(model, dict) and model.get("groups") is not None:
            await self.sync_site_groups(user.name, model["groups"])
        return model

    async def _refresh_tokens(self, user, handler=None, **kwargs):
        """Refresh proactively: when the access token expires within ``refresh_margin``,
        exchange the refresh token first, instead of waiting for userinfo to fail."""
        auth_state = await user.get_auth_state() if self.enable_auth_state else None
        if auth_state and not auth_state.get("token_response"):
            # e.g. only the identity binding, set by the operator to re-bind the user
            self.log.info("%s has no tokens in its auth state; login required", user.name)
            return False
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
        reset = _REFRESHING.set(True)
        try:
            return await super().refresh_user(user, handler, **kwargs)
        finally:
            _REFRESHING.reset(reset)
