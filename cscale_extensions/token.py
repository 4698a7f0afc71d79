"""The user's OIDC access token, for data access from inside a user server.

The hub keeps the user's tokens (auth state) and refreshes the access token with the refresh
token before it expires. :func:`access_token` asks the hub for the current one with the
server's own API token, so it is always usable; ``$OIDC_ACCESS_TOKEN`` holds the token as it
was when the server started (it may have expired since).

    from cscale_extensions.token import access_token
    headers = {"Authorization": f"Bearer {access_token()}"}
"""

from __future__ import annotations

import os

import requests


class TokenUnavailable(RuntimeError):
    """No access token can be had (not in a hub server, or the login must be renewed)."""


def access_token(timeout: float = 10) -> str:
    """The user's current access token, from the hub (refreshed there when near expiry)."""
    api = os.environ.get("JUPYTERHUB_API_URL")
    token = os.environ.get("JUPYTERHUB_API_TOKEN")
    user = os.environ.get("JUPYTERHUB_USER")
    if not api or not token or not user:
        raise TokenUnavailable("not running in a JupyterHub user server (JUPYTERHUB_* unset)")
    # /users/<name> (not /user) is where the hub includes auth_state
    r = requests.get(f"{api}/users/{user}", headers={"Authorization": f"token {token}"}, timeout=timeout)
    if r.status_code in (401, 403):
        raise TokenUnavailable("the hub refused the server's token; log in to the hub again")
    r.raise_for_status()
    state = r.json().get("auth_state") or {}
    if not state.get("access_token"):
        raise TokenUnavailable("the hub holds no access token for you; log out and in again")
    return state["access_token"]
