"""Local server starts in arrival order, a few at a time, each until its server answers.

Why: on one machine a server start is CPU work (seconds of imports and extension loading).
JupyterHub lets ``concurrent_spawn_limit`` starts run at once; on 2 cores twenty starts share
the CPU, each takes about twenty times as long as alone, they all finish together, and past
``spawner.http_timeout`` they all fail ("Server at … didn't respond in 60 seconds": 40 of 50
participants of a cold 50-user storm, ``bench/workshop_storm.py``, 2026-12-02). Starting them
``start_concurrency`` at a time in arrival order keeps the machine's throughput, gives the first
arrivals their server in seconds, and no start times out: the others wait in the queue, and their
spawn page says how many starts are ahead of theirs.

A start holds its slot from the spawner's first step (home, notebooks, certificate) until the
server answers HTTP, or fails, or is cancelled; so the hub's own wait after ``Spawner.start``
returns finds it up. The wait in the queue counts against ``spawner.start_timeout`` (JupyterHub
times ``Spawner.start``), and ``hub.concurrent_spawn_limit`` bounds how many wait: at most that
many × one start's time ÷ ``start_concurrency``. The queue is per hub process and in memory;
Kubernetes (KubeSpawner) has none: the cluster's scheduler places pods.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from jupyterhub.utils import AnyTimeoutError, url_path_join, wait_for_http_server
from traitlets import Integer
from traitlets.config import LoggingConfigurable

from cscale_extensions.hub.usererror import user_error
from cscale_extensions.tlscache import make_ssl_context


def default_concurrency() -> int:
    """The cores this process may run on: starts are CPU-bound."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class StartQueue:
    """At most ``slots`` holders at once; the others wait first come, first served."""

    def __init__(self, slots: int):
        self.slots = slots
        self.busy = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    def ahead(self, ticket: asyncio.Future[None]) -> int:
        """Starts before ``ticket``'s: those running and those queued earlier."""
        try:
            return self.busy + self._waiting.index(ticket)
        except ValueError:
            return 0

    @asynccontextmanager
    async def slot(self, on_ticket: Callable[[asyncio.Future[None]], None]) -> AsyncIterator[None]:
        if self.busy < self.slots and not self._waiting:
            self.busy += 1
        else:
            ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.append(ticket)
            on_ticket(ticket)
            try:
                await ticket  # resolved by a leaving holder, which passed its slot on
            except asyncio.CancelledError:
                if ticket in self._waiting:
                    self._waiting.remove(ticket)
                elif not ticket.cancelled():  # handed the slot just as it was cancelled
                    self._leave()
                raise
        try:
            yield
        finally:
            self._leave()

    def _leave(self) -> None:
        while self._waiting:
            nxt = self._waiting.popleft()
            if not nxt.done():
                nxt.set_result(None)  # the slot passes on: busy stays the same
                return
        self.busy -= 1


#: one queue per event loop (the hub has one; tests may run several)
_QUEUES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StartQueue] = (
    weakref.WeakKeyDictionary()
)


def queue_for(slots: int) -> StartQueue:
    loop = asyncio.get_running_loop()
    q = _QUEUES.get(loop)
    if q is None or q.slots != slots:
        q = _QUEUES[loop] = StartQueue(slots)
    return q


class QueuedStart(LoggingConfigurable):
    """Spawner mixin: ``queued(start)`` runs a local start in the hub's start queue."""

    start_concurrency = Integer(
        0,
        min=0,
        config=True,
        help="Server starts that run at once in this hub, the others queued in arrival order, "
        "each until its server answers HTTP (spawner.start_concurrency). 0: no queue (every "
        "start at once, JupyterHub's behaviour).",
    )
    _ticket: asyncio.Future[None] | None = None
    _queue: StartQueue | None = None
    #: where this spawner's start is: idle, queued (waiting for a slot), starting (holds one)
    _start_state = "idle"

    async def queued(self, start: Callable[[], Awaitable[str]]) -> str:
        if self.start_concurrency <= 0:
            return await start()
        self._queue = queue_for(self.start_concurrency)
        try:
            async with self._queue.slot(self._queued):
                self._ticket, self._start_state = None, "starting"
                url = await start()
                await self._until_answering(url)
                return url
        finally:
            self._ticket, self._queue, self._start_state = None, None, "idle"

    def _queued(self, ticket: asyncio.Future[None]) -> None:
        self._ticket, self._start_state = ticket, "queued"
        assert self._queue is not None
        self.log.info(
            "start of %s queued behind %d (start_concurrency %d)",
            self._log_name,
            self._queue.ahead(ticket),
            self.start_concurrency,
        )

    async def _until_answering(self, url: str) -> None:
        """Return once the new server answers (as JupyterHub's own check: any status below
        500 at its ``api``), raise a clear error if its process ends or it stays silent for
        ``http_timeout`` seconds."""
        server = self.server
        target = url_path_join(url, server.base_url, "api")
        ssl = make_ssl_context(server.keyfile, server.certfile, cafile=server.cafile)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.http_timeout
        while True:
            status = await self.poll()
            if status is not None:
                raise user_error(
                    503,
                    f"Your server stopped while starting (exit status {status}); "
                    "the operator will find details in the hub log.",
                )
            left = deadline - loop.time()
            if left <= 0:
                raise user_error(
                    503,
                    f"Your server did not answer within {self.http_timeout} seconds of its "
                    "start; the machine may be busy: try again in a minute.",
                )
            try:
                await wait_for_http_server(target, timeout=min(2.0, left), ssl_context=ssl)
                return
            except AnyTimeoutError:
                continue

    async def progress(self):
        """The spawn page's events while this start waits in the queue (JupyterHub stops
        reading them when the start ends)."""
        if self.start_concurrency <= 0:
            return
        shown = None
        for _ in range(int(self.start_timeout * 2) + 1):
            q, ticket = self._queue, self._ticket
            if self._start_state == "queued" and q is not None and ticket is not None:
                n = q.ahead(ticket)
                if n != shown:
                    shown = n
                    yield {
                        "progress": 5,
                        "message": f"Waiting to start: {n} server start(s) ahead of yours "
                        f"(this hub starts {q.slots} at a time)",
                    }
            elif self._start_state == "starting" or shown is not None:
                break
            await asyncio.sleep(0.5)
        if shown is not None:
            yield {"progress": 20, "message": "Starting your server"}
