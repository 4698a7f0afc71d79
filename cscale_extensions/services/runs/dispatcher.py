"""The runs service's work loop: fire schedules, dispatch queued runs, follow running ones.

One asyncio task. Every tick it (1) turns due schedules into queued runs, (2) starts queued
runs of each user while the user has fewer than ``max_concurrent_per_user`` active ones,
(3) reads ``status.json`` of every active run from the user's server and records progress;
a finished run's output and log are copied into the state directory. All of it is driven
by the database, so a restarted service picks up exactly where the previous one stopped:
queued runs stay queued, running executors (detached in the user servers) are followed
again, and a run whose executor vanished (stale heartbeat, server gone) becomes ``lost``.

One user cannot stall the others: each active run is followed in a task of its own (at most
one at a time per run, bounded by :data:`FOLLOW_TIMEOUT`), which the tick does not wait for;
what it reads from the user's server is untrusted (:mod:`.untrusted`: size-capped, validated),
and a status file that is not the executor's fails that run with a message saying so. A
schedule whose next firing cannot be computed is parked, not retried at every tick. Ended
runs older than ``runs.retention_days`` leave the database (the files in the user's home stay).

Runs on a Slurm site (``site`` of a run, see :mod:`.sites` and :mod:`.slurmjobs`) take the
same path with these differences: the queued runs of one submission (a sweep, or one run) are
submitted together as one batch job or job array by the user's launcher kernel, outside the
per-user concurrency limit (the site's scheduler queues them); following one also asks Slurm
(``squeue``) about its job, so a job waiting in the queue is not taken for an executor that
never started, a job Slurm ended without a status is recorded with Slurm's state, a cancel
reaches ``scancel``, and a user server stopped meanwhile (culled) is started again to read
the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from sqlalchemy import exc as sa_exc

import cscale_extensions.services.runs.executor as ex
from cscale_extensions.compute.slurm import SlurmError
from cscale_extensions.services.runs.cronrules import NEVER, next_fire
from cscale_extensions.services.runs.sites import Site, SiteError, Sites
from cscale_extensions.services.runs.slurmjobs import (
    JobState,
    SlurmControl,
    ended_at_time_limit,
    job_name,
    parse_submitted,
    submit_code,
    submit_request,
    task_refs,
)
from cscale_extensions.services.runs.store import ACTIVE, TERMINAL, Store, db_error_line
from cscale_extensions.services.runs.untrusted import (
    STATUS_MAX_BYTES,
    BadStatus,
    parse_status,
    plausible_finish,
)
from cscale_extensions.services.runs.userserver import Gone, ServerError, TooLarge, UserServers

log = logging.getLogger("cscale.runs")
MAX_ATTEMPTS = 3
#: seconds a user's launcher kernel is kept after their last run ended (saves a kernel start)
LAUNCHER_IDLE = 120.0
#: seconds one follow-up of a run may take (a slow or hostile server delays only its own run)
FOLLOW_TIMEOUT = 45.0
#: seconds between two passes of the retention clean-up
PURGE_EVERY = 600.0
#: consecutive invalid status reads that fail a run (one torn read is forgiven)
BAD_STATUS_READS = 2
#: seconds without a heartbeat after which a run whose Slurm job ended is over
ENDED_JOB_QUIET = 3 * ex.HEARTBEAT_SECONDS
#: seconds a batch run stopped by Slurm's signal waits for Slurm to say why (walltime, scancel)
SLURM_REASON_WAIT = 60.0
__all__ = ["Dispatcher", "next_fire", "run_dir"]


def run_dir(run_id: str) -> str:
    """The run's directory, relative to the user's home."""
    return f"runs/{run_id}"


class Dispatcher:
    def __init__(
        self,
        store: Store,
        servers: UserServers,
        state_dir: Path,
        settings: dict[str, Any],
        sites: Sites | None = None,
    ):
        self.store = store
        self.servers = servers
        self.sites = sites or Sites(None)
        self.slurm = SlurmControl()
        #: sites whose runs are batch jobs: outside the per-user concurrency limit
        self.batch_sites = self.sites.batch
        self.outputs = state_dir / "outputs"
        self.outputs.mkdir(parents=True, exist_ok=True)
        self.limit = int(settings["max_concurrent_per_user"])
        self.queue_limit = int(settings.get("max_queued_per_user") or 1000)
        self.poll = float(settings["poll_interval"])
        self.heartbeat_timeout = float(settings["heartbeat_timeout"])
        self.dispatch_timeout = float(settings["server_start_timeout"]) + 120
        self.retention = float(settings.get("retention_days") or 0) * 86400
        self.max_output = int(settings.get("max_output_bytes") or 64 * 1024 * 1024)
        self._last_purge = 0.0
        self._following: set[str] = set()
        self._bad_reads: dict[str, int] = {}
        self._idle_since: dict[str, float] = {}
        self._tasks: set[asyncio.Task] = set()
        self._stop = asyncio.Event()
        self.wake = asyncio.Event()

    # files kept by the service
    def output_path(self, run_id: str) -> Path:
        return self.outputs / f"{run_id}.ipynb"

    def log_path(self, run_id: str) -> Path:
        return self.outputs / f"{run_id}.log"

    def forget(self, run_id: str) -> None:
        """Remove the service's own copies of a deleted run's output and log (never the
        user's files: those are in their home, out of the service's reach)."""
        for path in (self.output_path(run_id), self.log_path(run_id)):
            path.unlink(missing_ok=True)

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
        self.purge_ended()

    # retention
    def purge_ended(self, now: float | None = None) -> int:
        """Remove runs ended more than ``retention_days`` ago (every PURGE_EVERY s)."""
        now = time.time() if now is None else now
        if not self.retention or now - self._last_purge < PURGE_EVERY:
            return 0
        self._last_purge = now
        removed = 0
        while ids := self.store.delete_ended_before(now - self.retention):
            for run_id in ids:
                self.forget(run_id)
            removed += len(ids)
        if removed:
            log.info(
                "retention: removed %d run(s) ended over %g days ago",
                removed,
                self.retention / 86400,
            )
        return removed

    # schedules
    def _fire_schedules(self) -> None:
        now = time.time()
        for s in self.store.list_schedules(due_before=now, with_notebook=True):
            try:
                self._fire(s, now)
            except (sa_exc.OperationalError, sa_exc.InterfaceError):
                raise
            except Exception:  # one schedule's problem is not everyone's
                log.exception("schedule %s of %s: parked after an error", s["id"], s["owner"])
                self.store.update_schedule(s["id"], next_fire=NEVER)

    def _fire(self, s: dict[str, Any], now: float) -> None:
        following = next_fire(s["cron"], now)
        if following == NEVER:
            log.warning(
                "schedule %s of %s never fires again (%r): parked", s["id"], s["owner"], s["cron"]
            )
            self.store.update_schedule(s["id"], next_fire=NEVER)
            return
        if self.store.count_unfinished(s["owner"]) >= self.queue_limit:
            self.store.update_schedule(s["id"], next_fire=following)
            log.warning(
                "schedule %s of %s skipped: %d runs queued or executing is the limit",
                s["id"],
                s["owner"],
                self.queue_limit,
            )
            return
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
                    "site": s.get("site"),
                    "schedule_id": s["id"],
                }
            ]
        )[0]
        self.store.update_schedule(s["id"], last_fire=now, last_run=run["id"], next_fire=following)
        log.info("schedule %s of %s fired run %s", s["id"], s["owner"], run["id"])

    # dispatch
    def _dispatch_queued(self) -> None:
        active = self.store.count_active(except_sites=self.batch_sites)
        batches: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
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
            if run["site"] and self.sites.get(run["site"]) is None:
                self.store.update_run(
                    run["id"],
                    expect=("queued",),
                    state="failed",
                    finished=time.time(),
                    message=f"the compute site {run['site']!r} is not configured any more "
                    "(compute.sites); submit the run again for another site",
                )
                continue
            if run["site"] in self.batch_sites:  # one submission = one job (array)
                key = (user, run["site"], run["sweep_id"] or run["id"])
                batches.setdefault(key, []).append(run)
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
        for (_user, site, _group), runs in batches.items():
            claimed = [
                run["id"]
                for run in runs
                if self.store.update_run(
                    run["id"],
                    expect=("queued",),
                    state="dispatching",
                    dispatched=time.time(),
                    attempts=run["attempts"] + 1,
                )
            ]
            if claimed:
                self._spawn(self._dispatch_batch(self.sites.all[site], claimed))

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _site_refusal(self, user: str, site: str | None) -> str | None:
        """Why ``user`` may no longer run on ``site`` (None: they may). Checked again when a
        queued run is dispatched: a schedule fires, or a run waited, after the owner lost the
        VO the site is open to. ServerError when the hub cannot be asked (dispatch retried)."""
        entry = self.sites.get(site)
        if entry is None or entry.settings.get("vos") is None:
            return None
        model = await self.servers.user_model(user)
        groups = (model or {}).get("groups")
        groups = [g for g in groups if isinstance(g, str)] if isinstance(groups, list) else []
        try:
            self.sites.choose(site, groups)
        except SiteError as exc:
            return str(exc)
        return None

    def _refuse(self, run: dict[str, Any], refusal: str) -> None:
        """Fail a dispatching ``run`` whose owner may no longer use its site (nothing ran)."""
        what = (
            f"schedule {run['schedule_id']} fired, but its owner"
            if run["schedule_id"]
            else "the run's owner"
        )
        self.store.update_run(
            run["id"],
            expect=("dispatching",),
            state="failed",
            finished=time.time(),
            message=f"not submitted: {what} may no longer run on the compute site "
            f"{run['site']!r}, checked when it was due. {refusal} (compute.sites)",
            error={"cell": None, "ename": "SiteRefused", "evalue": refusal},
        )
        log.warning("run %s of %s not submitted: %s", run["id"], run["owner"], refusal)

    async def _dispatch(self, run_id: str) -> None:
        run = self.store.get_run(run_id, with_notebook=True)
        user = run["owner"]
        spec = {k: run[k] for k in ex.SPEC_KEYS}
        try:
            refusal = await self._site_refusal(user, run["site"])
            if refusal:
                self._refuse(run, refusal)
                return
            await self.servers.ensure_server(user)
            d = run_dir(run_id)
            await self.servers.prepare_dir(user, d)
            await self.servers.write_text(user, f"{d}/{ex.SPEC}", json.dumps(spec))
            await self.servers.launch(user, d)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._dispatch_failed(run, exc)
            return
        self.store.update_run(
            run_id, expect=("dispatching",), state="running", started=time.time(), message=""
        )
        log.info("run %s of %s launched", run_id, user)

    def _dispatch_failed(self, run: dict[str, Any], exc: Exception) -> None:
        """Queue ``run`` again after a failed dispatch, or fail it after MAX_ATTEMPTS."""
        known = isinstance(exc, ServerError | SlurmError)
        msg = str(exc) if known else f"{type(exc).__name__}: {exc}"
        log.warning("dispatch of run %s failed: %s", run["id"], msg)
        if run["attempts"] < MAX_ATTEMPTS:
            self.store.update_run(
                run["id"], expect=("dispatching",), state="queued", message=f"retrying: {msg}"
            )
        else:
            self.store.update_run(
                run["id"],
                expect=("dispatching",),
                state="failed",
                finished=time.time(),
                message=f"could not start: {msg}",
            )

    async def _dispatch_batch(self, site: Site, run_ids: list[str]) -> None:
        """Submit runs of one submission on a Slurm site: one job, or one job array."""
        runs = [self.store.get_run(i, with_notebook=True) for i in run_ids]
        user = runs[0]["owner"]
        timeout = max(float(r["timeout"] or 0) for r in runs)
        name = job_name(runs)
        request = submit_request(site, [run_dir(r["id"]) for r in runs], name, timeout)
        try:
            refusal = await self._site_refusal(user, site.name)
            if refusal:
                for run in runs:
                    self._refuse(run, refusal)
                return
            await self.servers.ensure_server(user)
            for run in runs:
                spec = {k: run[k] for k in ex.SPEC_KEYS}
                spec["walltime"] = site.job_minutes(timeout) * 60
                d = run_dir(run["id"])
                await self.servers.prepare_dir(user, d)
                await self.servers.write_text(user, f"{d}/{ex.SPEC}", json.dumps(spec))
            # a retry (the answer of an earlier sbatch lost, or a restart mid-submission)
            # adopts what that sbatch queued instead of queueing the runs a second time
            job = await self._queued_before(site, user, name) if runs[0]["attempts"] > 1 else None
            if job is None:

                async def before_again() -> str | None:
                    found = await self._queued_before(site, user, name)
                    return None if found is None else f"submitted {found}"

                answer = await self.servers.run_launcher(user, submit_code(request), before_again)
                job = parse_submitted(answer)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            for run in runs:
                self._dispatch_failed(run, exc)
            return
        for run, ref in zip(runs, task_refs(job, len(runs)), strict=True):
            self.store.update_run(
                run["id"],
                expect=("dispatching",),
                state="running",
                site_job=ref,
                message=f"submitted to {site.name} as Slurm job {ref}",
            )
        log.info("runs %s of %s: Slurm job %s on %s", run_ids, user, job, site.name)

    async def _queued_before(self, site: Site, user: str, name: str) -> str | None:
        """The job an earlier submission of this batch queued (None: there is none): the
        oldest of the user's jobs called ``name``; any later one is a duplicate, cancelled."""
        found = await self.slurm.named(site, user, name)
        if not found:
            return None
        if found[1:]:
            log.warning("duplicate Slurm jobs %s of %s (%s): cancelled", found[1:], user, name)
            await self.slurm.cancel(site, user, found[1:])
        log.warning("Slurm job %s of %s (%s) adopted: its submission's answer was lost",
                    found[0], user, name)
        return found[0]

    # follow
    async def _follow_active(self) -> None:
        """Start a follow-up of every running run that has none in flight (not awaited:
        one slow or hostile server cannot hold up the tick, nor the other users' runs)."""
        runs = self.store.list_runs(states=("running",))
        if not runs:
            await self._retire_launchers()
            return
        for run in runs:
            if run["id"] not in self._following:
                self._following.add(run["id"])
                self._spawn(self._follow_isolated(run))
        busy = {r["owner"] for r in self.store.list_runs(states=("queued", *ACTIVE))}
        now = time.monotonic()
        for user in {r["owner"] for r in runs} - busy:
            self._idle_since.setdefault(user, now)
        for user in busy:
            self._idle_since.pop(user, None)

    async def _follow_isolated(self, run: dict[str, Any]) -> None:
        """One follow-up of one run; whatever goes wrong stays with that run."""
        try:
            await asyncio.wait_for(self._follow(run), FOLLOW_TIMEOUT)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            log.warning(
                "following run %s of %s: no answer in %g s", run["id"], run["owner"], FOLLOW_TIMEOUT
            )
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
            log.warning(
                "following run %s: run database unavailable: %s", run["id"], db_error_line(exc)
            )
        except Exception:
            log.exception("following run %s of %s failed; trying again", run["id"], run["owner"])
        finally:
            self._following.discard(run["id"])

    async def _retire_launchers(self) -> None:
        """Shut down the launcher kernel of users without runs for LAUNCHER_IDLE seconds."""
        now = time.monotonic()
        for user, since in list(self._idle_since.items()):
            if now - since > LAUNCHER_IDLE:
                del self._idle_since[user]
                if not self.store.list_runs(owner=user, states=("queued", *ACTIVE), limit=1):
                    await self.servers.shutdown_kernel(user)

    async def _follow(self, run: dict[str, Any]) -> None:
        site = self.sites.get(run["site"])
        if site is not None and site.slurm is not None:
            await self._follow_batch(run, site)
            return
        user, run_id = run["owner"], run["id"]
        d = run_dir(run_id)
        try:
            if not await self.servers.known(user):
                raise Gone("server not running")
            if run["cancel_requested"] and not run["cancel_sent"]:
                await self.servers.write_text(user, f"{d}/{ex.CANCEL}", "cancelled by its owner\n")
                self.store.update_run(run_id, cancel_sent=True, message="cancelling")
            text = await self.servers.read_text(user, f"{d}/{ex.STATUS}", STATUS_MAX_BYTES)
        except Gone:
            if not await self._server_alive(user):
                self._finish_lost(run, "the user's runs server stopped while the run was active")
            return
        except TooLarge:
            await self._bad_status(run, f"it is larger than {STATUS_MAX_BYTES} bytes", final=True)
            return
        except ServerError as exc:
            log.warning("following run %s: %s", run_id, exc)
            return
        now = time.time()
        if text is None:
            if now - (run["started"] or now) > self.heartbeat_timeout:
                self._finish_lost(run, "the executor never started (no status.json)")
            return
        await self._record(run, text, now)

    async def _follow_batch(self, run: dict[str, Any], site: Site) -> None:
        """Follow a run on a Slurm site: its job in Slurm, then its status as for every run."""
        user, run_id, ref = run["owner"], run["id"], run["site_job"]
        d = run_dir(run_id)
        try:
            if run["cancel_requested"] and not run["cancel_sent"]:
                with contextlib.suppress(ServerError):  # a running executor stops cleanly
                    if await self.servers.known(user):
                        await self.servers.write_text(
                            user, f"{d}/{ex.CANCEL}", f"cancelled by its owner (scancel {ref})\n"
                        )
                await self.slurm.cancel(site, user, [ref])
                self.store.update_run(
                    run_id, cancel_sent=True, message=f"cancelling (scancel {ref})"
                )
            job = await self.slurm.state(site, user, ref)
        except SlurmError as exc:
            log.warning("following run %s on %s: %s", run_id, site.name, exc)
            return
        try:
            if not await self.servers.known(user):  # e.g. culled while the job waited
                await self.servers.ensure_server(user)
            text = await self.servers.read_text(user, f"{d}/{ex.STATUS}", STATUS_MAX_BYTES)
        except TooLarge:
            await self._bad_status(run, f"it is larger than {STATUS_MAX_BYTES} bytes", final=True)
            return
        except ServerError as exc:
            log.warning("following run %s: %s", run_id, exc)
            return
        if text is not None:
            await self._record(run, text, time.time(), job)
        elif not job.ended:
            waiting = f"Slurm job {ref} on {site.name}: {job.state.lower()}"
            if job.reason and job.reason != "None":
                waiting += f" ({job.reason})"
            if run["message"] != waiting and not run["cancel_requested"]:
                self.store.update_run(run_id, expect=("running",), message=waiting)
        elif run["cancel_requested"]:
            self._finish_lost(run, f"cancelled before it started (scancel {ref})", "cancelled")
        else:
            self._finish_lost(
                run,
                f"the Slurm job {ref} ended ({job.state}) before the executor wrote a status; "
                "Slurm's own log of it is in ~/runs/.slurm/",
            )

    async def _record(
        self, run: dict[str, Any], text: str, now: float, job: JobState | None = None
    ) -> None:
        """Record what the status file ``text`` says (``job``: Slurm's view of the run)."""
        user, run_id = run["owner"], run["id"]
        try:
            status = parse_status(text)
        except BadStatus as exc:
            await self._bad_status(run, str(exc))
            return
        self._bad_reads.pop(run_id, None)
        changes = {"cell": status.cell, "cells": status.cells, "pid": status.pid}
        if job is not None and run["started"] is None:  # a batch run starts when Slurm runs it
            changes["started"] = min(status.started or now, now)
        if status.state in TERMINAL:
            state, message = status.state, status.message
            # stopped by Slurm's SIGTERM: Slurm, not the executor's guess, says why (walltime
            # or scancel) once the job has ended, a few seconds later
            if (
                job is not None
                and status.state in ("cancelled", "timeout")
                and not job.ended
                and now - plausible_finish(status, now) < SLURM_REASON_WAIT
            ):
                self.store.update_run(run_id, expect=("running",), **changes)
                return
            if job is not None and state != "succeeded" and ended_at_time_limit(job):
                site = run["site"]
                state = "timeout"
                message = (
                    f"Slurm ended the job {run['site_job']} at its time limit ({job.state}, "
                    f"reason {job.reason or 'TimeLimit'}): the walltime of the run's job is its "
                    f"timeout plus a margin, at most compute.sites.{site}.limits.walltime. The "
                    "output notebook keeps the cells run until then."
                )
            await self._collect(user, run_id)
            self.store.update_run(
                run_id,
                expect=("running",),
                state=state,
                finished=plausible_finish(status, now),
                error=status.error.model_dump() if status.error else None,
                message=message,
                **changes,
            )
            log.info("run %s of %s: %s", run_id, user, state)
            self.wake.set()
            return
        # read after the job ended and no longer heartbeating: this status is its last (a fresh
        # heartbeat is an executor of an earlier submission of the same run, e.g. one re-queued
        # after a restart, whose second job found the claim taken and ended at once)
        if job is not None and job.ended and now - status.heartbeat > ENDED_JOB_QUIET:
            await self._collect(user, run_id)
            state = "timeout" if job.state in ("TIMEOUT", "DEADLINE") else "lost"
            self._finish_lost(
                run,
                f"Slurm ended the job {run['site_job']} ({job.state}) before the executor "
                "recorded the end of the run",
                state,
                **changes,
            )
            return
        if now - status.heartbeat > self.heartbeat_timeout:
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

    async def _bad_status(self, run: dict[str, Any], reason: str, final: bool = False) -> None:
        """A status file the executor did not write: fail this run (after a second bad read,
        or at once when ``final``), ask its executor to stop, keep what output there is."""
        run_id, user = run["id"], run["owner"]
        seen = self._bad_reads.get(run_id, 0) + 1
        if not final and seen < BAD_STATUS_READS:
            self._bad_reads[run_id] = seen
            return
        self._bad_reads.pop(run_id, None)
        d = run_dir(run_id)
        with contextlib.suppress(ServerError):
            await self.servers.write_text(user, f"{d}/{ex.CANCEL}", "invalid status file\n")
        await self._collect(user, run_id)
        message = (
            f"the run's status file ~/{d}/{ex.STATUS} is not valid: {reason}. The executor "
            "writes that file, so something else changed it; the run was stopped and is no "
            "longer followed (its output so far is kept)"
        )
        if self.store.update_run(
            run_id,
            expect=("running",),
            state="failed",
            finished=time.time(),
            message=message,
            error={"cell": None, "ename": "InvalidStatusFile", "evalue": reason},
        ):
            log.warning("run %s of %s failed: invalid status file: %s", run_id, user, reason)
        self.wake.set()

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
        """Copy output notebook and log into the state dir (best effort; what is larger than
        ``runs.max_output_bytes`` stays in the user's home only)."""
        d = run_dir(run_id)
        for name, target in (
            (ex.OUTPUT, self.output_path(run_id)),
            ("log.txt", self.log_path(run_id)),
        ):
            try:
                text = await self.servers.read_text(user, f"{d}/{name}", self.max_output)
            except TooLarge:
                log.warning(
                    "run %s: %s is larger than runs.max_output_bytes (%d); not copied, it is "
                    "in the user's home",
                    run_id,
                    name,
                    self.max_output,
                )
                continue
            except ServerError as exc:
                log.warning("collecting %s of run %s: %s", name, run_id, exc)
                continue
            if text is not None:
                tmp = target.with_suffix(".tmp")
                tmp.write_text(text)
                tmp.replace(target)
