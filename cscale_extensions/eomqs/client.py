"""The outgoing HTTP client of EO-MQS: one pooled (keep-alive) aiohttp session for all sites.

Each federated search sends one request per site, so the client's own cost per request is on
the critical path. aiohttp costs ~0.15 ms of CPU per small JSON request on this kind of machine,
httpx ~1 ms (measured side by side); connections to every site are kept alive and reused.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlencode
from urllib.request import getproxies

import aiohttp

try:  # orjson serialises request bodies several times faster; json is the fallback
    from orjson import dumps as _dumps
except ImportError:  # pragma: no cover
    import json

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


def _uses_environment() -> bool:
    """Whether proxies (``HTTP_PROXY``, ``NO_PROXY`` ...) or a netrc file are configured. aiohttp
    reads them on every request when asked to (~0.3 ms each here), so only when there are any."""
    netrc = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    return bool(getproxies()) or os.path.isfile(netrc)


class RequestTimeout(Exception):
    """No complete answer within the timeout."""


class RequestFailed(Exception):
    """The request could not be made or its answer could not be read (connection errors)."""


class HttpClient:
    """Pooled HTTP/1.1 keep-alive connections, at most ``max_connections`` open at once."""

    def __init__(self, max_connections: int):
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the session (inside the running event loop)."""
        connector = aiohttp.TCPConnector(
            limit=self.max_connections,
            limit_per_host=0,
            keepalive_timeout=60,
            # the system resolver (getaddrinfo: /etc/hosts, search domains of Kubernetes), not
            # c-ares, which aiohttp picks when aiodns happens to be installed
            resolver=aiohttp.ThreadedResolver(),
        )
        # no cookies: the session serves every user's searches
        self._session = aiohttp.ClientSession(
            connector=connector, trust_env=_uses_environment(), cookie_jar=aiohttp.DummyCookieJar()
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        timeout: float,
        body: Any = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """(status, body) of one request; ``body`` is sent as JSON, ``params`` added to the
        query string. Raises :class:`RequestTimeout` or :class:`RequestFailed`."""
        assert self._session is not None, "HttpClient.start() was not awaited"
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params)
        data = None
        if body is not None:
            data = _dumps(body)
            headers = {**headers, "Content-Type": "application/json"}
        try:
            async with self._session.request(
                method,
                url,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=True,
            ) as resp:
                return resp.status, await resp.read()
        except TimeoutError:
            raise RequestTimeout(f"no answer within {timeout:g} s") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise RequestFailed(f"{type(exc).__name__}: {exc}"[:200]) from None
