"""OpenID Connect discovery for the hub: fetched without blocking, cached, failures backed off.

The hub learns the identity provider's endpoints from ``<issuer>/.well-known/openid-configuration``.
A blocking fetch would stall every request of the hub's event loop while EGI Check-in is slow,
and an uncached failure would hammer the provider on every sign-in while it is down. Here the
document is fetched with tornado's asynchronous client, one fetch at a time (concurrent callers
share it), kept for ``max_age`` seconds, and after a failure no new fetch is tried for a delay
that doubles with each consecutive failure (``backoff_initial`` up to ``backoff_max``). While it
cannot be had, a document fetched earlier is still served (endpoints rarely move); without one,
:class:`DiscoveryUnavailable` says when to try again, which the hub turns into a 503 page with
``Retry-After``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

log = logging.getLogger(__name__)


class DiscoveryUnavailable(Exception):
    """No discovery document could be had; ``retry_after`` seconds until the next try."""

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Discovery:
    """The discovery document of one issuer (see the module docstring)."""

    def __init__(
        self,
        issuer: str,
        *,
        timeout: float = 10.0,
        max_age: float = 3600.0,
        backoff_initial: float = 2.0,
        backoff_max: float = 300.0,
        client: AsyncHTTPClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.url = self.issuer + "/.well-known/openid-configuration"
        self.timeout = timeout
        self.max_age = max_age
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._client = client
        self._clock = clock
        self._doc: dict[str, Any] | None = None
        self._fetched_at = 0.0
        self._failures = 0
        self._retry_at = 0.0
        self._last_error = ""
        self._inflight: asyncio.Future[dict[str, Any]] | None = None

    def cached(self) -> dict[str, Any] | None:
        """The last document fetched (however old), without fetching."""
        return self._doc

    async def get(self) -> dict[str, Any]:
        """A current document, a stale one while the issuer fails, else DiscoveryUnavailable."""
        now = self._clock()
        if self._doc is not None and now - self._fetched_at < self.max_age:
            return self._doc
        if now < self._retry_at:
            if self._doc is not None:
                return self._doc
            raise DiscoveryUnavailable(self._last_error, math.ceil(self._retry_at - now))
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._fetch())
        return await asyncio.shield(self._inflight)

    async def _fetch(self) -> dict[str, Any]:
        try:
            doc = await self._download()
        except (HTTPClientError, OSError, ValueError) as exc:
            self._failures += 1
            delay = min(self.backoff_max, self.backoff_initial * 2 ** (self._failures - 1))
            self._retry_at = self._clock() + delay
            self._last_error = f"OIDC discovery at {self.url} failed: {exc}"
            log.warning("%s; next try in %.0f s", self._last_error, delay)
            if self._doc is not None:
                return self._doc
            raise DiscoveryUnavailable(self._last_error, math.ceil(delay)) from None
        finally:
            self._inflight = None
        self._doc, self._fetched_at = doc, self._clock()
        self._failures, self._retry_at = 0, 0.0
        return doc

    async def _download(self) -> dict[str, Any]:
        client = self._client or AsyncHTTPClient()
        resp = await client.fetch(
            self.url, connect_timeout=self.timeout, request_timeout=self.timeout
        )
        doc = json.loads(resp.body)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        if str(doc.get("issuer", "")).rstrip("/") != self.issuer:
            raise ValueError(f"names issuer {doc.get('issuer')!r}, expected {self.issuer!r}")
        return doc
