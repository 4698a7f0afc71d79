"""The runs service's work loop: fire schedules, dispatch queued runs, follow running ones.

One asyncio task. Every tick it (1) turns due schedules into queued runs, (2) starts queued
runs of each user while the user has fewer than ``max_concurrent_per_user`` active ones,
(3) reads ``status.json`` of every active run from the user's server and records progress;
a finished run's output and log are copied into the state directory. All of it is driven
by the database, so a restarted service picks up exactly where the previous one stopped:
queued runs stay queued, running executors (detached in the user servers) are followed
again, and a run whose executor vanished (stale heartbeat, server gone) becomes ``lost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from croniter import croniter
from sqlalchemy import exc as sa_exc

from . import executor as ex
from .store import ACTIVE, TERMINAL, Store, db_error_line
from .userserver import Gone, ServerError, UserServers

log = logging.getLogger("cscale.runs")
MAX_ATTEMPTS = 3
#: seconds a user's launcher kernel is kept after their last run ended (saves a kernel start)
LAUNCHER_IDLE = 120.0


def next_fire(cron: str, after: float) -> float:
    return croniter(cron, datetime.fromtimestamp(after)).get_next(float)


def run_dir(run_id: str) -> str:
    """The run's directory, relative to the user's home."""
    return f"runs/{run_id}"


class Dispatcher:
    def __init__(
        self, store: Store, servers: UserServers, state_dir: Path, settings: dict[str, Any]
    ):
        self.store = store
        self.servers = servers
        self.outputs = state_dir / "outputs"
        self.outputs.mkdir(parents=True, exist_ok=True)
        self.limit = int(settings["max_concurrent_per_user"])
        self.queue_limit = int(settings.get("max_queued_per_user") or 1000)
        self.poll = float(settings["poll_interval"])
        self.heartbeat_timeout = float(settings["heartbeat_timeout"])
        self.dispatch_timeout = float(settings["server_start_timeout"]) + 120
        self._idle_since: dict[str, float] = {}
        self._tasks: set[asyncio.Task] = set()
        self._stop = asyncio.Event()
        self.wake = asyncio.Event()

    # files kept by the service
    def output_path(self, run_id: str) -> Path:
        return self.outputs / f"{run_id}.ipynb"

    def log_path(self, run_id: str) -> Path:
        return self.outputs / f"{run_id}.log"

    async def run_forever(self) -> None:
        recovered = False
        while not self._stop.is_set():
            try:
                if not recovered:  # also when the database was down at start-up
                    self._recover()
                    recovered = True
                await self.tick()
            except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
                # the database is down: executors go on in the users' servers and write
                # their status there; following them resumes when the database is back
                log.warning("run database unavailable, retrying: %s", db_error_line(exc))
            except Exception:
                log.exception("runs dispatcher tick failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.poll)
            self.wake.clear()

    async def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _recover(self) -> None:
        """After a restart: dispatches cut off mid-way are tried again (the claim file makes
        that safe); running runs are simply followed again."""
        for run in self.store.list_runs(states=("dispatching",)):
            self.store.update_run(
                run["id"],
                expect=("dispatching",),
                state="queued",
                message="re-queued after a service restart",
            )

    async def tick(self) -> None:
        self._fire_schedules()
        await self._follow_active()
        self._dispatch_queued()

    # schedules
    def _fire_schedules(self) -> None:
        now = time.time()
        for s in self.store.list_schedules(due_before=now, with_notebook=True):
            if self.store.count_unfinished(s["owner"]) >= self.queue_limit:
                self.store.update_schedule(s["id"], next_fire=next_fire(s["cron"], now))
                log.warning(
                    "schedule %s of %s skipped: %d runs queued or executing is the limit",
                    s["id"],
                    s["owner"],
                    self.queue_limit,
                )
                continue
            run = self.store.add_runs(
                [
                    {
                        "owner": s["owner"],
                        "name": s["name"] or f"schedule {s['id']}",
                        "notebook": s["notebook"],
                        "path": s["path"],
                        "parameters": s["parameters"],
                        "timeout": s["timeout"],
                        "kernel_name": s["kernel_name"],
                        "cwd": s["cwd"],
                        "schedule_id": s["id"],
                    }
                ]
            )[0]
            self.store.update_schedule(
                s["id"], last_fire=now, last_run=run["id"], next_fire=next_fire(s["cron"], now)
            )
            log.info("schedule %s of %s fired run %s", s["id"], s["owner"], run["id"])

    # dispatch
    def _dispatch_queued(self) -> None:
        active = self.store.count_active()
        for run in self.store.list_runs(states=("queued",), oldest_first=True):
            user = run["owner"]
            if run["cancel_requested"]:
                self.store.update_run(
                    run["id"],
                    expect=("queued",),
                    state="cancelled",
                    finished=time.time(),
                    message="cancelled before it started",
                )
                continue
            if active.get(user, 0) >= self.limit:
                continue
            if not self.store.update_run(
                run["id"],
                expect=("queued",),
                state="dispatching",
                dispatched=time.time(),
                attempts=run["attempts"] + 1,
            ):
                continue
            active[user] = active.get(user, 0) + 1
            self._spawn(self._dispatch(run["id"]))

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch(self, run_id: str) -> None:
        run = self.store.get_run(run_id, with_notebook=True)
        user = run["owner"]
        spec = {
            k: run[k]
            for k in ("id", "notebook", "path", "parameters", "timeout", "kernel_name", "cwd")
        }
        try:
            await self.servers.ensure_server(user)
            d = run_dir(run_id)
            await self.servers.prepare_dir(user, d)
            await self.servers.write_text(user, f"{d}/{ex.SPEC}", json.dumps(spec))
            await self.servers.launch(user, d)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            msg = str(exc) if isinstance(exc, ServerError) else f"{type(exc).__name__}: {exc}"
            log.warning("dispatch of run %s failed: %s", run_id, msg)
            if run["attempts"] < MAX_ATTEMPTS:
                self.store.update_run(
                    run_id, expect=("dispatching",), state="queued", message=f"retrying: {msg}"
                )
            else:
                self.store.update_run(
                    run_id,
                    expect=("dispatching",),
                    state="failed",
                    finished=time.time(),
                    message=f"could not start: {msg}",
                )
            return
        self.store.update_run(
            run_id, expect=("dispatching",), state="running", started=time.time(), message=""
        )
        log.info("run %s of %s launched", run_id, user)

    # follow
    async def _follow_active(self) -> None:
        runs = self.store.list_runs(states=("running",))
        if not runs:
            await self._retire_launchers()
            return
        await asyncio.gather(*(self._follow(r) for r in runs))
        busy = {r["owner"] for r in self.store.list_runs(states=("queued", *ACTIVE))}
        now = time.monotonic()
        for user in {r["owner"] for r in runs} - busy:
            self._idle_since.setdefault(user, now)
        for user in busy:
            self._idle_since.pop(user, None)

    async def _retire_launchers(self) -> None:
        """Shut down the launcher kernel of users without runs for LAUNCHER_IDLE seconds."""
        now = time.monotonic()
        for user, since in list(self._idle_since.items()):
            if now - since > LAUNCHER_IDLE:
                del self._idle_since[user]
                if not self.store.list_runs(owner=user, states=("queued", *ACTIVE), limit=1):
                    await self.servers.shutdown_kernel(user)

    async def _follow(self, run: dict[str, Any]) -> None:
        user, run_id = run["owner"], run["id"]
        d = run_dir(run_id)
        try:
            if not await self.servers.known(user):
                raise Gone("server not running")
            if run["cancel_requested"] and not run["cancel_sent"]:
                await self.servers.write_text(user, f"{d}/{ex.CANCEL}", "cancel requested\n")
                self.store.update_run(run_id, cancel_sent=True, message="cancelling")
            text = await self.servers.read_text(user, f"{d}/{ex.STATUS}")
        except Gone:
            if not await self._server_alive(user):
                self._finish_lost(run, "the user's runs server stopped while the run was active")
            return
        except ServerError as exc:
            log.warning("following run %s: %s", run_id, exc)
            return
        now = time.time()
        if text is None:
            if now - (run["started"] or now) > self.heartbeat_timeout:
                self._finish_lost(run, "the executor never started (no status.json)")
            return
        try:
            status = json.loads(text)
        except ValueError:
            return  # caught mid-write by a non-atomic writer; next tick
        state = status.get("state", "running")
        changes = {
            "cell": int(status.get("cell") or 0),
            "cells": int(status.get("cells") or 0),
            "pid": status.get("pid"),
        }
        if state in TERMINAL:
            await self._collect(user, run_id)
            self.store.update_run(
                run_id,
                expect=("running",),
                state=state,
                finished=status.get("finished") or now,
                error=status.get("error"),
                message=status.get("message", ""),
                **changes,
            )
            log.info("run %s of %s: %s", run_id, user, state)
            self.wake.set()
            return
        if now - float(status.get("heartbeat") or 0) > self.heartbeat_timeout:
            await self._collect(user, run_id)
            self._finish_lost(run, "the executor stopped reporting (crashed or killed)", **changes)
            return
        if (
            run["timeout"]
            and now - (run["started"] or now) > run["timeout"] + self.heartbeat_timeout
        ):
            self._finish_lost(run, "the executor did not stop at its timeout", state="timeout")
            return
        self.store.update_run(run_id, expect=("running",), **changes)

    async def _server_alive(self, user: str) -> bool:
        try:
            return await self.servers.refresh_url(user)
        except Exception:
            return True  # hub unreachable (restarting?): decide later

    def _finish_lost(
        self, run: dict[str, Any], message: str, state: str = "lost", **changes
    ) -> None:
        self.store.update_run(
            run["id"],
            expect=("running",),
            state=state,
            finished=time.time(),
            message=message,
            **changes,
        )
        log.warning("run %s of %s: %s (%s)", run["id"], run["owner"], state, message)
        self.wake.set()

    async def _collect(self, user: str, run_id: str) -> None:
        """Copy output notebook and log into the state dir (best effort)."""
        d = run_dir(run_id)
        for name, target in (
            (ex.OUTPUT, self.output_path(run_id)),
            ("log.txt", self.log_path(run_id)),
        ):
            try:
                text = await self.servers.read_text(user, f"{d}/{name}")
            except ServerError as exc:
                log.warning("collecting %s of run %s: %s", name, run_id, exc)
                continue
            if text is not None:
                tmp = target.with_suffix(".tmp")
                tmp.write_text(text)
                tmp.replace(target)
