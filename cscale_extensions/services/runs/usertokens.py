"""Per-user tokens the runs service shows to a user's ``runs`` server, never its own.

Why: whatever a user's server receives, the user can capture (their own
``~/.jupyter/jupyter_server_config.py`` is loaded by it and may log request headers). The
service's own hub token may start and inspect every user's servers and mint tokens for them,
so it goes to the hub API only. Towards a user's server the service authenticates with a
token *of that user* whose only scope is ``access:servers!server=<user>/<server name>``:
captured, it opens nothing but the server the user owns already, and it expires.

Each token is minted through the hub (``POST /hub/api/users/<name>/tokens``, which needs the
``tokens`` scope on the user; the hub checks that the scopes asked for are the user's own),
lives :data:`LIFETIME` seconds, is kept in memory only, and is replaced once less than
:data:`RENEW_BEFORE` seconds remain. The replaced token is deleted at the hub straight away
(best effort; if that fails it simply expires), so a user's token list shows at most one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from urllib.parse import quote

import httpx

log = logging.getLogger("cscale.runs")

#: seconds a minted token is valid
LIFETIME = 20 * 60
#: renew when fewer seconds than this remain (longer than any single request or launch)
RENEW_BEFORE = 5 * 60
NOTE = "runs service: access to your 'runs' server only (renewed automatically)"


class TokenError(RuntimeError):
    """The hub would not mint a token for the user."""


@dataclass
class _Minted:
    token: str
    token_id: str
    renew_at: float  # time.monotonic()


class UserTokens:
    """Mints, caches and renews the per-user server tokens (see the module docstring)."""

    def __init__(
        self,
        hub: httpx.AsyncClient,
        hub_api_url: str,
        server_name: str,
        lifetime: int = LIFETIME,
        renew_before: int = RENEW_BEFORE,
    ):
        self.hub = hub  # authenticated with the service's own token, for the hub API only
        self.hub_api = hub_api_url.rstrip("/")
        self.server_name = server_name
        self.lifetime = lifetime
        self.renew_before = min(renew_before, lifetime // 2)
        self._tokens: dict[str, _Minted] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def scope(self, user: str) -> str:
        return f"access:servers!server={user}/{self.server_name}"

    async def get(self, user: str) -> str:
        """A valid token for ``user``'s server (minted when there is none or it is old)."""
        current = self._tokens.get(user)
        if current and time.monotonic() < current.renew_at:
            return current.token
        async with self._locks.setdefault(user, asyncio.Lock()):
            current = self._tokens.get(user)
            if current and time.monotonic() < current.renew_at:
                return current.token
            fresh = await self._mint(user)
            self._tokens[user] = fresh
            if current is not None:
                await self._delete(user, current.token_id)
            return fresh.token

    async def discard(self, user: str, token: str) -> None:
        """Forget (and delete) ``token`` after the server refused it; the next get mints anew."""
        current = self._tokens.get(user)
        if current and current.token == token:
            del self._tokens[user]
            await self._delete(user, current.token_id)

    async def close(self) -> None:
        """Delete every token this service minted and still holds (at shutdown)."""
        held, self._tokens = self._tokens, {}
        for user, minted in held.items():
            await self._delete(user, minted.token_id)

    async def _mint(self, user: str) -> _Minted:
        body = {"scopes": [self.scope(user)], "expires_in": self.lifetime, "note": NOTE}
        try:
            r = await self.hub.post(
                f"{self.hub_api}/users/{quote(user, safe='')}/tokens", json=body
            )
        except httpx.HTTPError as exc:
            raise TokenError(f"cannot reach the hub API to get a token for {user}: {exc}") from exc
        if r.status_code != 201:
            raise TokenError(
                f"the hub would not issue a token for {user}'s {self.server_name!r} server: "
                f"{r.status_code} {_message(r)}"
            )
        data = r.json()
        log.debug("minted a %d s token for %s's %s server", self.lifetime, user, self.server_name)
        return _Minted(
            data["token"], data["id"], time.monotonic() + self.lifetime - self.renew_before
        )

    async def _delete(self, user: str, token_id: str) -> None:
        with contextlib.suppress(httpx.HTTPError):
            r = await self.hub.delete(
                f"{self.hub_api}/users/{quote(user, safe='')}/tokens/{token_id}"
            )
            if r.status_code not in (204, 404):
                log.info("could not delete the old token of %s: HTTP %d", user, r.status_code)


def _message(r: httpx.Response) -> str:
    try:
        return r.json().get("message", r.text[:200])
    except ValueError:
        return r.text[:200]
