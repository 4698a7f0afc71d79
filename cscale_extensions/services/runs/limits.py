"""Limits on what one user may submit to the runs service, checked before anything is stored.

Why: one participant of a workshop could submit 23 runs a second, store 32 MiB of parameters
per run, or send a 1.4 KB sweep whose grid expands to a million parameter sets (the expansion
itself blocked the event loop for everyone before the size check). Here:

- :class:`SubmissionRate`: submissions per user in a sliding minute
  (``runs.max_submissions_per_minute``); beyond it 429 with ``Retry-After``;
- :func:`sweep_size`: the number of parameter sets from the grid's shape, without expanding it;
- :func:`json_size`: bytes of a value as JSON (for ``runs.max_parameters_bytes``);
- :class:`BodyLimit`: an ASGI middleware that stops keeping a request body once it is larger
  than the service accepts (413), chunked or not, so a huge body never sits in memory (the
  rest is read and dropped, up to 64 MiB, so that the answer passes the hub's proxy).

The rate is kept in memory of the service process (one process serves the API); a restart
forgets it, which only gives a user one fresh minute.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

WINDOW = 60.0
#: most bytes of a refused body still read (and dropped) so that the 413 gets through a proxy
DRAIN_MAX = 64 * 1024 * 1024


class SubmissionRate:
    """Sliding one-minute window of submission times per user."""

    def __init__(self, per_minute: int, clock=time.monotonic):
        self.limit = per_minute
        self.clock = clock
        self._seen: dict[str, deque[float]] = {}

    def check(self, user: str) -> float:
        """Record a submission of ``user``; 0 if allowed, else seconds until one is."""
        now = self.clock()
        seen = self._seen.setdefault(user, deque())
        while seen and now - seen[0] >= WINDOW:
            seen.popleft()
        if len(seen) >= self.limit:
            return max(1.0, WINDOW - (now - seen[0]))
        seen.append(now)
        if len(self._seen) > 10_000:  # forget users idle for a minute
            for name in [u for u, q in self._seen.items() if not q or now - q[-1] >= WINDOW]:
                del self._seen[name]
        return 0.0


def sweep_size(parameter_sets: list | None, grid: dict[str, list] | None) -> int:
    """How many runs a sweep would make: computed from the grid's shape, not by expanding it."""
    n = len(parameter_sets or [])
    if grid:
        n += math.prod(len(values) for values in grid.values())
    return n


def json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")))


def human(n: float) -> str:
    return f"{n:,.0f}" if n < 1e15 else f"{n:.3g}"


class BodyLimit:
    """Refuse (413) request bodies larger than ``limit`` bytes, counting what is read."""

    def __init__(self, app: ASGIApp, limit: int, names: str):
        self.app = app
        self.limit = limit
        self.names = names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            if int(declared) <= self.limit + DRAIN_MAX:
                await self._drain(receive)
            await self._refuse(send)
            return
        seen = 0
        refused = False

        async def counted() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # answer now; the app sees the client go away
                    refused = True
                    if message.get("more_body"):
                        await self._drain(receive)
                    await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:  # the app's answer to a body cut off is dropped
                await send(message)

        try:
            await self.app(scope, counted, guarded_send)
        except Exception:
            if not refused:  # else: the app tripped over the cut-off body; 413 is sent
                raise

    @staticmethod
    async def _drain(receive: Receive) -> None:
        """Read and drop the rest of the body (up to DRAIN_MAX): a proxy in front (the hub's
        configurable-http-proxy) turns an answer that comes while it is still sending the
        body into a 503 of its own, so the 413 would never reach the client."""
        dropped = 0
        while dropped <= DRAIN_MAX:
            message = await receive()
            if message["type"] != "http.request":
                return
            dropped += len(message.get("body", b""))
            if not message.get("more_body"):
                return

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {
                "detail": f"the request body is larger than {self.limit} bytes, the most the "
                f"runs service reads ({self.names}); nothing was stored"
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
