"""Start a cohort's servers ahead of time at the machine's rate, with retries, progress and ETA.

Without an explicit parallelism it uses the last start measured on this machine (``known_cost``,
from ``workshop capacity`` or an earlier prewarm: :func:`cscale_extensions.workshop.rate.load_cost`)
and starts at the rule's parallelism at once. Without one it starts with one start per core (each has about a core to
itself, so the first one to be ready is measured as if alone: wall time, CPU and memory of its
processes until they are idle, :func:`cscale_extensions.workshop.rate.settle`), then raises the
number of starts in flight to :func:`~cscale_extensions.workshop.rate.parallelism` (enough to
keep every core busy, within the hub's concurrent_spawn_limit less one slot for arrivals, and
the memory budget). Nothing waits for the measurement: a first server started alone would cost
a whole start time before the others begin. Each worker has its own HTTP session and drives
one spawn at a time: JupyterHub's ``POST …/server`` itself waits up to ``slow_spawn_timeout`` (10 s) for the
server, so spawns asked for one after another from a single loop are, in effect, serial (the
first version did that, and took twice the cold storm's time). A refused spawn (HTTP 429, the
hub's limit) waits ``retry_delay`` and is tried again without counting as an attempt; a failed
one is retried ``retries`` times after ``retry_delay`` seconds. Every finished server prints a
progress line with the count, the starts in flight and the ETA at the rate seen so far.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import psutil

from cscale_extensions.workshop import rate
from cscale_extensions.workshop.hubapi import HubAPI


def failure_reason(api: HubAPI, name: str) -> str | None:
    """The hub's message for ``name``'s last failed spawn (from the progress API), if any."""
    try:
        with api.s.stream("GET", f"{api.base}users/{quote(name)}/server/progress",
                          timeout=5) as r:
            if r.status_code != 200:
                return None
            for line in r.iter_lines():
                if line and line.startswith("data:"):
                    event = json.loads(line[5:])
                    return event.get("message") if event.get("failed") else None
    except Exception:
        return None
    return None


def _server(api: HubAPI, name: str) -> dict[str, Any] | None:
    model = api.user(name) or {}
    return model.get("servers", {}).get("")


class _Schedule:
    """The users still to start, each not before a time (retries wait), shared by the workers;
    at most ``limit`` of them are being started at once (raised once a start is measured)."""

    def __init__(self, users: list[tuple[float, str]], limit: int = 1 << 30):
        self._seq = itertools.count()
        self._heap = [(when, next(self._seq), u) for when, u in users]
        heapq.heapify(self._heap)
        self._active = 0
        self.limit = limit
        self._cond = threading.Condition()

    def set_limit(self, limit: int) -> None:
        with self._cond:
            self.limit = max(1, limit)
            self._cond.notify_all()

    def take(self) -> str | None:
        """The next user due; None once nothing is queued or being started."""
        with self._cond:
            while True:
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now and self._active < self.limit:
                    self._active += 1
                    return heapq.heappop(self._heap)[2]
                if not self._heap and self._active == 0:
                    return None
                due = self._heap and self._heap[0][0] > now and self._active < self.limit
                self._cond.wait(self._heap[0][0] - now if due else None)

    def finish(self, retry_at: float | None = None, name: str = "") -> None:
        with self._cond:
            self._active -= 1
            if retry_at is not None:
                heapq.heappush(self._heap, (retry_at, next(self._seq), name))
            self._cond.notify_all()


class Prewarm:
    """One prewarm run (see the module docstring); :meth:`run` returns the per-user result."""

    def __init__(
        self,
        api: HubAPI,
        users: list[str],
        *,
        parallel: int | None,
        retries: int,
        retry_delay: float,
        timeout: float,
        concurrent_spawn_limit: int,
        memory_fraction: float,
        log: Callable[[str], None],
        known_cost: rate.StartCost | None = None,
    ):
        self.api, self.users, self.parallel = api, users, parallel
        self.retries, self.retry_delay, self.timeout = retries, retry_delay, timeout
        self.spawn_limit, self.memory_fraction, self.log = (
            concurrent_spawn_limit,
            memory_fraction,
            log,
        )
        self.result: dict[str, dict[str, Any]] = {
            u: {"state": "queued", "attempts": 0, "seconds": None, "error": None} for u in users
        }
        self.cost: rate.StartCost | None = known_cost if parallel is None else None
        self.measured = False  # whether this run measured self.cost itself
        self._measuring = parallel is None and known_cost is None  # until one start is measured
        self._schedule: _Schedule | None = None
        self._measurer: threading.Thread | None = None
        self._lock = threading.Lock()
        self._inflight = 0
        self._finished = 0
        self._t0 = time.monotonic()

    # one attempt of one user, by the calling worker's own session
    def _attempt(self, api: HubAPI, name: str) -> float | None:
        """Start ``name``'s server once; return when to try again (None: done, either way)."""
        r = self.result[name]
        t = time.monotonic()
        code, message = api.spawn(name)
        if code == 429:  # the hub's concurrent_spawn_limit: not an attempt, just later
            return time.monotonic() + self.retry_delay
        with self._lock:
            r["attempts"] += 1
            r["state"] = "starting"
            self._inflight += 1
        try:
            if code not in (201, 202, 400):
                reason = message or failure_reason(api, name) or f"the hub answered HTTP {code}"
                return self._fail(name, reason)
            while True:
                server = _server(api, name)
                if server and server.get("ready"):
                    seconds = 0.0 if code == 400 else round(time.monotonic() - t, 2)
                    self._done(name, "ready", seconds, "already running" if code == 400 else None)
                    with self._lock:
                        first, self._measuring = self._measuring and code != 400, False
                    if first:  # in its own thread: this worker goes on with the next start
                        self._measurer = threading.Thread(
                            target=self._measure, args=(server, seconds), daemon=True
                        )
                        self._measurer.start()
                    return None
                if not server or not server.get("pending"):
                    reason = failure_reason(api, name) or "the server stopped while starting"
                    return self._fail(name, reason)
                if time.monotonic() - t > self.timeout:
                    api.stop(name)
                    return self._fail(name, f"not ready within {self.timeout:.0f}s")
                time.sleep(0.5)
        finally:
            with self._lock:
                self._inflight -= 1

    def _measure(self, server: dict[str, Any], wall: float) -> None:
        """The first real start sets the parallelism for the rest (module docstring)."""
        pid = rate.server_pid(server)
        if pid is not None:
            cpu, pss = rate.settle(pid)
            self.cost = rate.StartCost(wall=wall, cpu=cpu, pss_mib=pss)
            self.measured = True
        parallel = self._rule(len(self.users) - self._finished)
        if self._schedule is not None:
            self._schedule.set_limit(parallel)
        self._say(parallel, "one start measured")

    def _rule(self, remaining: int) -> int:
        return rate.parallelism(
            remaining=remaining,
            cores=os.cpu_count() or 1,
            concurrent_spawn_limit=self.spawn_limit,
            cost=self.cost,
            mem_available_mib=psutil.virtual_memory().available / rate.MIB,
            memory_fraction=self.memory_fraction,
        )

    def _say(self, parallel: int, what: str) -> None:
        if self.cost is not None:
            self.log(
                f"  {what}: {self.cost.wall:.1f}s, {self.cost.cpu:.1f} CPU-s, "
                f"{self.cost.pss_mib:.0f} MiB; {os.cpu_count() or 1} cores -> {parallel} at a time"
            )
        else:
            self.log(f"  servers not on this machine: {parallel} at a time (the spawn limit)")

    def _progress(self) -> str:
        """``[done/total, starting, ETA]``, called under the lock by the one just finished
        (still counted in flight until its attempt returns, so not counted here)."""
        total = len(self.users)
        first = 1.0 / self.cost.wall if self.cost and self.cost.wall else None
        eta = rate.eta(self._finished, total, time.monotonic() - self._t0, first)
        starting = max(0, self._inflight - 1)
        return f"[{self._finished}/{total}, {starting} starting, {rate.format_eta(eta)}]"

    def _done(self, name: str, state: str, seconds: float | None, note: str | None) -> None:
        with self._lock:
            self.result[name].update(state=state, seconds=seconds, error=None)
            self._finished += 1
            line = f"  {name}: {note or f'ready after {seconds:.1f}s'} {self._progress()}"
        self.log(line)

    def _fail(self, name: str, reason: str) -> float | None:
        r = self.result[name]
        with self._lock:
            r["error"] = reason
            if r["attempts"] <= self.retries:
                r["state"] = "retrying"
                line = f"  {name}: failed ({reason}); will retry"
                again: float | None = time.monotonic() + self.retry_delay
            else:
                r["state"] = "failed"
                self._finished += 1
                line = f"  {name}: FAILED after {r['attempts']} attempt(s): {reason} {self._progress()}"
                again = None
        self.log(line)
        return again

    def _worker(self, schedule: _Schedule) -> None:
        api = self.api.clone()
        while (name := schedule.take()) is not None:
            again = None
            try:
                again = self._attempt(api, name)
            except Exception as exc:  # the hub went away mid-run: count it, keep the others going
                again = self._fail(name, f"{type(exc).__name__}: {exc}")
            finally:
                schedule.finish(again, name)

    def run(self) -> dict[str, dict[str, Any]]:
        self.api.ensure_users(self.users)
        n = len(self.users)
        bound = rate.spawn_slots(self.spawn_limit)
        if self.parallel is None and self.cost is not None:  # measured before: the rule at once
            start = workers = self._rule(n)
            self._say(start, "last start measured on this machine")
        elif self.parallel is None:  # one per core until measured, then the rule's number
            start, workers = min(os.cpu_count() or 1, bound), min(n, bound)
        else:
            start = workers = min(self.parallel, self.spawn_limit or self.parallel, n)
        self._schedule = _Schedule([(0.0, u) for u in self.users], limit=max(1, start))
        threads = [
            threading.Thread(target=self._worker, args=(self._schedule,), daemon=True)
            for _ in range(max(1, workers))
        ]
        for w in threads:
            w.start()
        for w in threads:
            w.join()
        if self._measurer is not None:
            self._measurer.join()
        ready = sum(1 for r in self.result.values() if r["state"] == "ready")
        self.log(f"prewarm: {ready}/{n} ready in {time.monotonic() - self._t0:.1f}s")
        return self.result


def prewarm(
    api: HubAPI,
    users: list[str],
    *,
    parallel: int | None = None,
    retries: int = 2,
    retry_delay: float = 5,
    timeout: float = 300,
    concurrent_spawn_limit: int = 0,
    memory_fraction: float = 0.8,
    log: Callable[[str], None] = print,
    known_cost: rate.StartCost | None = None,
    on_measured: Callable[[rate.StartCost], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Start every user's default server; returns ``{user: {state, attempts, seconds, error}}``
    where state is ``ready`` or ``failed``. ``parallel`` None: from ``known_cost`` or measured
    (module docstring), and ``on_measured`` gets what this run measured; an explicit value is
    still capped by ``concurrent_spawn_limit`` (0: no limit)."""
    run = Prewarm(
        api,
        users,
        parallel=parallel,
        retries=retries,
        retry_delay=retry_delay,
        timeout=timeout,
        concurrent_spawn_limit=concurrent_spawn_limit,
        memory_fraction=memory_fraction,
        log=log,
        known_cost=known_cost,
    )
    result = run.run()
    if run.measured and run.cost is not None and on_measured is not None:
        on_measured(run.cost)
    return result
