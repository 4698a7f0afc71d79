"""The runs service's per-user server tokens, minted by a real hub (see runs/usertokens.py).

What a user's server is shown must be a token of that user, scoped to their ``runs`` server
only, renewed before it expires, and the replaced one must stop working at once.
"""

from __future__ import annotations

import asyncio

import httpx
import requests

from cscale_extensions.services.runs import SERVICE_SCOPES
from cscale_extensions.services.runs.usertokens import UserTokens


def _whoami(minihub, token: str) -> requests.Response:
    return requests.get(
        minihub.api_url + "/user", headers={"Authorization": f"token {token}"}, timeout=10
    )


def test_service_role_opens_no_user_server_itself():
    """The service's own token may mint tokens, not reach servers (no access:servers)."""
    assert not any(s.startswith("access:servers") for s in SERVICE_SCOPES)


def test_tokens_are_the_users_own_scoped_renewed_and_replaced(minihub):
    async def scenario() -> tuple[str, str]:
        auth = {"Authorization": f"token {minihub.runs_token}"}
        async with httpx.AsyncClient(headers=auth, timeout=30) as hub:
            tokens = UserTokens(hub, minihub.api_url, "runs", lifetime=6, renew_before=3)
            first = await tokens.get("carol")
            assert await tokens.get("carol") == first  # cached, not minted per request
            me = _whoami(minihub, first).json()
            assert me["kind"] == "user" and me["name"] == "carol"
            identify = {f"read:users:{f}!user=carol" for f in ("name", "groups")}  # every token
            assert set(me["scopes"]) - identify == {"access:servers!server=carol/runs"}
            await asyncio.sleep(3.5)  # past the renewal point, before the expiry
            second = await tokens.get("carol")
            assert second != first
            assert _whoami(minihub, first).status_code == 403  # deleted when replaced
            assert _whoami(minihub, second).status_code == 200
            await tokens.close()
            return first, second

    _, second = asyncio.run(scenario())
    assert _whoami(minihub, second).status_code == 403  # deleted at shutdown
