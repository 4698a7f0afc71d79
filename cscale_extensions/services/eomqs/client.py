"""The outgoing HTTP client of EO-MQS: one pooled (keep-alive) aiohttp session for all sites.

Each federated search sends one request per site, so the client's own cost per request is on
the critical path. aiohttp costs ~0.15 ms of CPU per small JSON request on this kind of machine,
httpx ~1 ms (measured side by side); connections to every site are kept alive and reused.

A site's credentials (``federation.sites[].headers``) are ``credentials`` of a request: sent
to the origin (scheme, host, port) the request is for and to nothing else, also when that
origin redirects elsewhere (aiohttp drops only ``Authorization`` and cookies on such a
redirect, not an ``X-Api-Key``).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit
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


MAX_REDIRECTS = 10
_REDIRECTS = (301, 302, 303, 307, 308)


def origin(url: str) -> tuple[str, str]:
    """(scheme, host:port) of an absolute URL, lower-cased: what credentials are bound to."""
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


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
        credentials: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """(status, body) of one request; ``body`` is sent as JSON, ``params`` added to the
        query string, ``credentials`` (headers) only to the origin of ``url``. Raises
        :class:`RequestTimeout` or :class:`RequestFailed`."""
        assert self._session is not None, "HttpClient.start() was not awaited"
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params)
        data = None
        if body is not None:
            data = _dumps(body)
            headers = {**headers, "Content-Type": "application/json"}
        limit = aiohttp.ClientTimeout(total=timeout)
        try:
            if not credentials:  # the common case: aiohttp follows redirects itself
                async with self._session.request(
                    method, url, data=data, headers=headers, timeout=limit, allow_redirects=True
                ) as resp:
                    return resp.status, await resp.read()
            return await self._with_credentials(method, url, data, headers, credentials, limit)
        except TimeoutError:
            raise RequestTimeout(f"no answer within {timeout:g} s") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise RequestFailed(f"{type(exc).__name__}: {exc}"[:200]) from None

    async def _with_credentials(
        self,
        method: str,
        url: str,
        data: bytes | None,
        headers: dict[str, str],
        credentials: dict[str, str],
        limit: aiohttp.ClientTimeout,
    ) -> tuple[int, bytes]:
        """Follow redirects here, adding ``credentials`` only while at the first origin."""
        assert self._session is not None
        home = origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            sent = {**headers, **credentials} if origin(url) == home else headers
            async with self._session.request(
                method, url, data=data, headers=sent, timeout=limit, allow_redirects=False
            ) as resp:
                location = resp.headers.get("Location")
                if resp.status not in _REDIRECTS or not location:
                    return resp.status, await resp.read()
            url = urljoin(url, location)
            if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                method, data = "GET", None
                headers = {k: v for k, v in headers.items() if k != "Content-Type"}
        raise RequestFailed(f"more than {MAX_REDIRECTS} redirects")
