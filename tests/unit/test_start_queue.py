"""The hub's start queue (cscale_extensions.hub.startqueue) on its own: arrival order, at most
N holders, cancellation, and a start that holds its slot until its server answers HTTP.

The spawner here is a stand-in (``StandInSpawner``: the mixin plus the three things it reads
of a JupyterHub spawner, ``server``, ``poll`` and ``http_timeout``); the server it waits for is
a real HTTP server on a loopback port that starts listening late.
"""

from __future__ import annotations

import asyncio
import socket
from types import SimpleNamespace

import pytest
from aiohttp import web
from tornado.web import HTTPError

from cscale_extensions.hub.startqueue import QueuedStart, StartQueue, queue_for


def run(coro):
    return asyncio.run(coro)


def test_at_most_n_hold_a_slot_in_arrival_order_and_each_knows_how_many_are_ahead():
    async def main():
        q = StartQueue(2)
        entered: list[int] = []
        holding, most = 0, 0
        ahead: dict[int, int] = {}
        gates = {i: asyncio.Event() for i in range(6)}

        async def start(i: int):
            nonlocal holding, most
            async with q.slot(lambda t: ahead.__setitem__(i, q.ahead(t))):
                entered.append(i)
                holding += 1
                most = max(most, holding)
                await gates[i].wait()
                holding -= 1

        tasks = []
        for i in range(6):
            tasks.append(asyncio.create_task(start(i)))
            await asyncio.sleep(0)  # arrive one after the other
        await asyncio.sleep(0.01)
        assert entered == [0, 1] and ahead == {2: 2, 3: 3, 4: 4, 5: 5}
        for i in (1, 0, 2, 3, 4, 5):  # the first to finish need not be the first to start
            gates[i].set()
            await asyncio.sleep(0.01)
        await asyncio.gather(*tasks)
        assert entered == [0, 1, 2, 3, 4, 5] and most == 2 and q.busy == 0

    run(main())


def test_a_cancelled_waiter_or_holder_gives_its_place_to_the_next():
    async def main():
        q = StartQueue(1)
        order: list[str] = []
        release = asyncio.Event()

        async def start(name: str, hold: bool):
            async with q.slot(lambda t: None):
                order.append(name)
                if hold:
                    await release.wait()

        holder = asyncio.create_task(start("holder", True))
        await asyncio.sleep(0)
        waiter = asyncio.create_task(start("waiter", False))
        await asyncio.sleep(0)
        last = asyncio.create_task(start("last", False))
        await asyncio.sleep(0.01)
        waiter.cancel()  # gave up while queued (start_timeout)
        await asyncio.sleep(0.01)
        holder.cancel()  # cancelled while starting: its slot must pass on
        await asyncio.gather(holder, waiter, last, return_exceptions=True)
        assert order == ["holder", "last"] and q.busy == 0

    run(main())


class StandInSpawner(QueuedStart):
    """The parts of a JupyterHub spawner the mixin uses; ``exit_status`` is what poll says."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.server = SimpleNamespace(base_url="/user/u/", keyfile=None, certfile=None,
                                      cafile=None)
        self.http_timeout = 10
        self.start_timeout = 30
        self.exit_status = None
        self._log_name = "u"

    async def poll(self):
        return self.exit_status


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_start_holds_its_slot_until_its_server_answers():
    async def main():
        port = _free_port()
        sp = StandInSpawner(start_concurrency=1)
        other = StandInSpawner(start_concurrency=1)
        events: list[str] = []
        runner = web.AppRunner(web.Application(), shutdown_timeout=0.5)

        async def listen_late():
            await asyncio.sleep(1.0)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            events.append("listening")

        async def first():
            url = await sp.queued(lambda: asyncio.sleep(0, f"http://127.0.0.1:{port}"))
            events.append("first returned")
            return url

        async def second():
            await asyncio.sleep(0.1)
            progress = other.progress()
            got = asyncio.create_task(other.queued(lambda: _record(events, port)))
            msgs = [e["message"] async for e in _take(progress, 2)]
            await got
            return msgs

        late = asyncio.create_task(listen_late())
        url, msgs = await asyncio.gather(first(), second())
        await late
        await runner.cleanup()
        assert url == f"http://127.0.0.1:{port}"
        # the second start began only after the first server answered
        assert events == ["listening", "first returned", "second started"]
        assert msgs[0].startswith("Waiting to start: 1 server start(s) ahead of yours")
        assert msgs[1] == "Starting your server"
        assert queue_for(1).busy == 0

    run(main())


async def _record(events: list[str], port: int) -> str:
    events.append("second started")
    return f"http://127.0.0.1:{port}"


async def _take(gen, n: int):
    got = 0
    async for e in gen:
        yield e
        got += 1
        if got == n:
            return


def test_a_server_that_exits_or_stays_silent_fails_its_start_with_a_clear_message():
    async def main():
        port = _free_port()  # nothing listens there
        dead = StandInSpawner(start_concurrency=1)
        dead.exit_status = 1
        with pytest.raises(HTTPError) as exc:
            await dead.queued(lambda: asyncio.sleep(0, f"http://127.0.0.1:{port}"))
        assert exc.value.status_code == 503
        assert "stopped while starting (exit status 1)" in exc.value.jupyterhub_message
        silent = StandInSpawner(start_concurrency=1)
        silent.http_timeout = 1
        with pytest.raises(HTTPError) as exc:
            await silent.queued(lambda: asyncio.sleep(0, f"http://127.0.0.1:{port}"))
        assert "did not answer within 1 seconds" in exc.value.jupyterhub_message
        assert queue_for(1).busy == 0  # both gave their slot back

    run(main())


def test_no_queue_when_start_concurrency_is_zero():
    async def main():
        sp = StandInSpawner(start_concurrency=0)
        # returns at once: nothing waits for an answer at this (unreachable) address
        assert await sp.queued(lambda: asyncio.sleep(0, "http://127.0.0.1:9")) == "http://127.0.0.1:9"
        assert [e async for e in sp.progress()] == []

    run(main())
