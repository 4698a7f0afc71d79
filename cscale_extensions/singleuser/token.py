"""The user's OIDC access token, for data access from inside a user server.

The hub keeps the user's tokens (auth state) and refreshes the access token with the refresh
token before it expires. :func:`access_token` asks the hub for the current one with the
server's own API token, at the hub's access-token endpoint
(:mod:`cscale_extensions.hub.tokenapi`), which hands out the access token and nothing else:
the refresh and ID tokens never leave the hub. On the local stack ``$OIDC_ACCESS_TOKEN`` also
holds the token as it was when the server started (it may have expired since); Kubernetes
pods get no such variable (it would be a literal in the pod spec).

    from cscale_extensions.singleuser.token import access_token
    headers = {"Authorization": f"Bearer {access_token()}"}
"""

from __future__ import annotations

import os
from urllib.parse import quote

import httpx


class TokenUnavailable(RuntimeError):
    """No access token can be had (not in a hub server, or the login must be renewed)."""


def access_token(timeout: float = 10) -> str:
    """The user's current access token, from the hub (refreshed there when near expiry)."""
    api = os.environ.get("JUPYTERHUB_API_URL")
    token = os.environ.get("JUPYTERHUB_API_TOKEN")
    user = os.environ.get("JUPYTERHUB_USER")
    if not api or not token or not user:
        raise TokenUnavailable("not running in a JupyterHub user server (JUPYTERHUB_* unset)")
    r = httpx.get(
        f"{api.rstrip('/')}/cscale/users/{quote(user, safe='')}/access-token",
        headers={"Authorization": f"token {token}"},
        timeout=timeout,
    )
    if r.status_code in (401, 403):
        raise TokenUnavailable(
            f"the hub refused to give out the access token ({_message(r)}); log in to the hub again"
        )
    if r.status_code == 404:
        raise TokenUnavailable("the hub holds no access token for you; log out and in again")
    r.raise_for_status()
    value = r.json().get("access_token")
    if not value:
        raise TokenUnavailable("the hub holds no access token for you; log out and in again")
    return value


def _message(r: httpx.Response) -> str:
    try:
        return str(r.json().get("message") or r.reason_phrase)
    except ValueError:
        return r.reason_phrase or str(r.status_code)
