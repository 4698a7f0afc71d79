"""``GET /hub/api/cscale/users/<name>/access-token``: a user's current OIDC access token, only.

Why: code in a user server needs the user's access token to reach data sites
(:func:`cscale_extensions.singleuser.token.access_token`). JupyterHub's only way to hand it out was the
user model with ``admin:auth_state``, which is the *whole* auth state: the refresh token (a
long-lived credential that mints new access tokens) and the ID token included. A server's
token is held by everything the user runs, so it should carry no more than the short-lived
access token. This endpoint answers with that and its expiry, refreshing it first (the
authenticator's ``refresh_user``, i.e. the refresh token stays in the hub) when it is about
to expire.

Authorisation: the caller's hub token must carry the custom scope :data:`SCOPE` for the user
(``custom:oidc-access-token!user``, in the ``user`` and ``server`` roles). Nothing else gets
it. Registered with ``JupyterHub.extra_handlers`` like the workshop materials endpoint
(:mod:`cscale_extensions.workshop.hub`); on the hub's own port, which servers reach already.
"""

from __future__ import annotations

import json
import time
from typing import Any

from jupyterhub.apihandlers.base import APIHandler
from tornado import web

#: the custom scope that lets a token read (only) the current access token of a user
SCOPE = "custom:oidc-access-token"
#: below the hub prefix (``/hub/``): under the hub API, so ``$JUPYTERHUB_API_URL`` + ``cscale/…``
ROUTE = r"/api/cscale/users/([^/]+)/access-token"
#: refresh when fewer seconds than this remain (the authenticator's own margin if it has one)
DEFAULT_MARGIN = 60.0


def scope_definitions() -> dict[str, dict[str, Any]]:
    """The ``JupyterHub.custom_scopes`` entry of :data:`SCOPE`."""
    return {
        SCOPE: {
            "description": "Read the user's current OIDC access token (not the refresh or ID "
            "token), refreshed by the hub when it is about to expire.",
        }
    }


class AccessTokenHandler(APIHandler):
    """The current access token of a user and its expiry, as JSON."""

    async def get(self, user_name: str) -> None:
        if self.current_user is None:
            raise web.HTTPError(403, "a hub API token is required")
        user = self.find_user(user_name)
        if user is None or not self.get_scope_filter(SCOPE)(user, kind="user"):
            # the same answer for "no such user" and "not yours": names are not disclosed
            raise web.HTTPError(403, f"this token may not read the access token of {user_name}")
        state = await user.get_auth_state() or {}
        margin = float(getattr(self.authenticator, "refresh_margin", DEFAULT_MARGIN))
        expires_at = state.get("expires_at")
        if state.get("refresh_token") and (
            expires_at is None or float(expires_at) - time.time() < margin
        ):
            if await self.refresh_auth(user, force=True) is None:
                raise web.HTTPError(403, "the login has expired; log in to the hub again")
            state = await user.get_auth_state() or {}
        token = state.get("access_token")
        if not token:
            raise web.HTTPError(
                404, "the hub holds no access token for this user; log out and in again"
            )
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.write(
            json.dumps(
                {
                    "access_token": token,
                    "token_type": "Bearer",
                    "expires_at": state.get("expires_at"),
                }
            )
        )


def configure(c) -> None:
    """Define :data:`SCOPE` and register the endpoint on the JupyterHub config ``c``."""
    scopes = dict(c.JupyterHub.custom_scopes) if "custom_scopes" in c.JupyterHub else {}
    scopes.update(scope_definitions())
    c.JupyterHub.custom_scopes = scopes
    handlers = list(c.JupyterHub.extra_handlers) if "extra_handlers" in c.JupyterHub else []
    c.JupyterHub.extra_handlers = [h for h in handlers if h[0] != ROUTE] + [
        (ROUTE, AccessTokenHandler)
    ]
