"""A small client of the JupyterHub REST API for the workshop tools (admin token).

Where the token comes from, in order: ``--token``, ``$CSCALE_HUB_TOKEN``, the file
``<data_dir>/secrets/admin_api_token`` (written by the launcher when it provides an admin
service token). The hub URL: ``--hub-url``, ``$CSCALE_HUB_URL``, ``<data_dir>/runtime/stack.json``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from cscale_extensions.workshop.model import WorkshopError

TOKEN_ENV = "CSCALE_HUB_TOKEN"
URL_ENV = "CSCALE_HUB_URL"
TOKEN_FILE = "admin_api_token"


def resolve(
    data_dir: Path, hub_url: str | None = None, token: str | None = None
) -> tuple[str, str]:
    """The hub URL and admin token to use (see the module docstring)."""
    url = hub_url or os.environ.get(URL_ENV)
    if not url:
        try:
            url = json.loads((Path(data_dir) / "runtime" / "stack.json").read_text())["url"]
        except (OSError, ValueError, KeyError):
            raise WorkshopError(
                f"no hub URL: pass --hub-url, set ${URL_ENV}, or run this where the stack's "
                f"data dir ({data_dir}) is"
            ) from None
    token = token or os.environ.get(TOKEN_ENV)
    if not token:
        path = Path(data_dir) / "secrets" / TOKEN_FILE
        try:
            token = path.read_text().strip()
        except OSError:
            raise WorkshopError(
                f"no admin API token: pass --token or set ${TOKEN_ENV} (a token of a hub admin, "
                "made on the hub's Token page)"
            ) from None
    return url if url.endswith("/") else url + "/", token


class HubAPI:
    """``/hub/api`` with an admin token; raises WorkshopError with the hub's message on errors."""

    def __init__(self, hub_url: str, token: str, timeout: float = 30):
        self.base = hub_url.rstrip("/") + "/hub/api/"
        self.s = httpx.Client(headers={"Authorization": f"token {token}"})
        self.timeout = timeout
        self._token = token

    def clone(self) -> HubAPI:
        """The same hub and token with its own HTTP session (one per thread)."""
        return HubAPI(self.base[: -len("hub/api/")], self._token, self.timeout)

    def request(
        self, method: str, path: str, ok: tuple[int, ...] = (200, 201, 202, 204), **kw
    ) -> httpx.Response:
        try:
            r = self.s.request(method, self.base + path, timeout=self.timeout, **kw)
        except httpx.HTTPError as exc:
            raise WorkshopError(f"the hub at {self.base} is not reachable: {exc}") from None
        if r.status_code not in ok:
            try:
                msg = r.json().get("message") or r.reason_phrase
            except ValueError:
                msg = r.text[:200] or r.reason_phrase
            if r.status_code == 403:
                msg += " (the token needs to be a hub admin's)"
            raise WorkshopError(f"{method} {path}: HTTP {r.status_code}: {msg}")
        return r

    def check_admin(self) -> dict[str, Any]:
        me = self.request("GET", "user").json()
        if "admin:users" not in me.get("scopes", []) and not me.get("admin"):
            raise WorkshopError(f"the token of {me.get('name')!r} is not an admin token")
        return me

    def info(self) -> dict[str, Any]:
        return self.request("GET", "info").json()

    # users
    def user(self, name: str) -> dict[str, Any] | None:
        r = self.request("GET", f"users/{quote(name)}", ok=(200, 404))
        return r.json() if r.status_code == 200 else None

    def ensure_users(self, names: list[str]) -> None:
        missing = [n for n in names if self.user(n) is None]
        if missing:
            self.request("POST", "users", json={"usernames": missing}, ok=(201, 409))

    def spawn(self, name: str) -> tuple[int, str]:
        """Ask for ``name``'s default server: the HTTP status (201 started, 202 pending, 400
        already running, 429 too many spawns at once, other: failed) and the hub's message."""
        try:
            r = self.s.post(f"{self.base}users/{quote(name)}/server", timeout=self.timeout)
        except httpx.HTTPError as exc:
            return 599, f"the hub did not answer: {exc}"
        try:
            message = r.json().get("message") or r.reason_phrase
        except ValueError:
            message = r.reason_phrase or ""
        return r.status_code, message

    def stop(self, name: str) -> int:
        return self.request("DELETE", f"users/{quote(name)}/server", ok=(202, 204, 400)).status_code

    def wait_stopped(self, names: list[str], timeout: float = 120) -> list[str]:
        """Wait until none of ``names`` has a server; return those that still have one."""
        deadline = time.monotonic() + timeout
        left = list(names)
        while left and time.monotonic() < deadline:
            left = [n for n in left if (u := self.user(n)) and u.get("servers", {}).get("")]
            if left:
                time.sleep(0.5)
        return left

    def token_for(self, name: str, note: str, expires_in: int = 3600) -> str:
        body = {"note": note, "expires_in": expires_in, "scopes": [f"access:servers!user={name}"]}
        return self.request("POST", f"users/{quote(name)}/tokens", json=body).json()["token"]

    # groups
    def ensure_group(self, group: str, users: list[str], properties: dict[str, Any]) -> None:
        r = self.request("GET", f"groups/{quote(group)}", ok=(200, 404))
        if r.status_code == 404:
            self.request("POST", f"groups/{quote(group)}", json={"users": []}, ok=(201, 409))
        self.request("PUT", f"groups/{quote(group)}/properties", json=properties)
        self.add_to_group(group, users)

    def add_to_group(self, group: str, users: list[str]) -> None:
        if users:
            self.request("POST", f"groups/{quote(group)}/users", json={"users": users})

    def group(self, group: str) -> dict[str, Any] | None:
        r = self.request("GET", f"groups/{quote(group)}", ok=(200, 404))
        return r.json() if r.status_code == 200 else None
