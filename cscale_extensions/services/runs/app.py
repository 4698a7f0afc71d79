"""The runs service's REST API (FastAPI), mounted under the hub service prefix.

Callers authenticate with a hub API token (``Authorization: token …`` or ``Bearer …``),
checked against the hub by :class:`jupyterhub.services.auth.HubAuth`; the token must carry
``access:services!service=runs``. A user sees and controls only their own runs and
schedules (others' are 404); hub admins see and control all. What one user may submit is
bounded before anything is stored (:mod:`.limits`: rate, sweep size from the grid's shape,
parameter and body size; :mod:`.cronrules`: schedules that fire, and not too often). A run,
sweep or schedule may name a compute ``site`` (:mod:`.sites`): one of the user's VOs must be
allowed there (the user's hub groups, read with the service's token), and on a Slurm site the
timeout must fit the site's walltime limit; both refusals are 403/422 with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from jupyterhub.services.auth import HubAuth
from sqlalchemy import exc as sa_exc
from tornado.web import HTTPError as TornadoHTTPError

from cscale_extensions.services.runs.cronrules import CronRefused, check_schedule
from cscale_extensions.services.runs.dispatcher import Dispatcher, run_dir
from cscale_extensions.services.runs.limits import (
    BodyLimit,
    SubmissionRate,
    human,
    json_size,
    sweep_size,
)
from cscale_extensions.services.runs.models import RunRequest, ScheduleRequest, SweepRequest
from cscale_extensions.services.runs.sites import Site, SiteError, Sites
from cscale_extensions.services.runs.store import (
    ACTIVE,
    STATES,
    TERMINAL,
    Store,
    db_error_line,
    engine_for,
    new_id,
)
from cscale_extensions.services.runs.userserver import ServerError, TooLarge, UserServers

log = logging.getLogger("cscale.runs")
PUBLIC_RUN_KEYS = (
    "id",
    "owner",
    "state",
    "name",
    "created",
    "dispatched",
    "started",
    "finished",
    "path",
    "parameters",
    "timeout",
    "kernel_name",
    "cwd",
    "sweep_id",
    "schedule_id",
    "rerun_of",
    "cell",
    "cells",
    "error",
    "message",
    "cancel_requested",
    "site",
    "site_job",
)


def public_run(run: dict[str, Any]) -> dict[str, Any]:
    out = {k: run.get(k) for k in PUBLIC_RUN_KEYS}
    out["progress"] = {"cell": run["cell"], "cells": run["cells"]}
    out["run_dir"] = run_dir(run["id"])
    return out


def public_schedule(s: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in s.items() if k != "notebook"}


class Caller(dict):
    @property
    def name(self) -> str:
        return self["name"]

    @property
    def admin(self) -> bool:
        return bool(self["admin"])


async def caller(request: Request) -> Caller:
    """The hub user behind the request's token (401/403 otherwise)."""
    hub_auth: HubAuth = request.app.state.hub_auth
    servers: UserServers = request.app.state.servers
    header = request.headers.get("authorization", "")
    match = hub_auth.auth_header_pat.match(header)
    tok = match.group(1).strip() if match else request.query_params.get("token", "")
    if not tok:
        raise HTTPException(401, "a hub API token is required (Authorization: token …)")
    try:
        model = await hub_auth.user_for_token(tok, sync=False)
    except TornadoHTTPError as exc:
        raise HTTPException(
            502, f"could not check the token with the hub: {exc.log_message}"
        ) from exc
    if not model:
        raise HTTPException(401, "invalid or expired token")
    if model.get("kind", "user") != "user":
        raise HTTPException(403, "only user tokens may use the runs service")
    if not hub_auth.check_scopes(hub_auth.access_scopes, model):
        raise HTTPException(403, "the token lacks the scope access:services!service=runs")
    admin = model.get("admin")
    if admin is None:
        try:
            full = await servers.user_model(model["name"])
        except ServerError as exc:
            raise HTTPException(502, f"could not look the user up at the hub: {exc}") from exc
        admin = bool(full and full.get("admin"))
    return Caller(name=model["name"], admin=admin)


User = Annotated[Caller, Depends(caller)]


async def submitter(request: Request, user: User) -> Caller:
    """The caller of a request that creates runs or schedules, within their submission rate."""
    rate: SubmissionRate = request.app.state.rate
    wait = rate.check(user.name)
    if wait:
        raise HTTPException(
            429,
            f"too many submissions: {user.name} made {rate.limit} in the last minute and the "
            f"limit per user is {rate.limit} a minute (runs.max_submissions_per_minute); try "
            f"again in {wait:.0f} s",
            headers={"Retry-After": str(int(wait + 0.999))},
        )
    return user


Submitter = Annotated[Caller, Depends(submitter)]


def create_app(
    settings: dict[str, Any],
    state_dir: Path,
    prefix: str,
    hub_api_url: str,
    proxy_url: str,
    token: str,
    compute: dict[str, Any] | None = None,
) -> FastAPI:
    """The API app; ``compute`` is the ``compute`` settings section (its ``sites``)."""
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    sites = Sites(compute)
    store = Store(engine_for(settings.get("db_url"), state_dir))
    try:
        store.ensure_schema()
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
        log.warning(
            "the run database is unavailable at start-up (%s); starting anyway: requests are "
            "answered 503 until it is back",
            db_error_line(exc),
        )
    hub_auth = HubAuth(api_token=token, api_url=hub_api_url, cache_max_age=60)
    if not hub_auth.access_scopes:
        hub_auth.access_scopes = {"access:services!service=runs"}
    servers = UserServers(
        hub_api_url,
        proxy_url,
        token,
        settings["server_name"],
        float(settings["server_start_timeout"]),
    )
    dispatcher = Dispatcher(store, servers, state_dir, settings, sites)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(dispatcher.run_forever())
        try:
            yield
        finally:
            await dispatcher.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await servers.close()

    app = FastAPI(
        title="C-SCALE Hub runs",
        version="1",
        description="Parameterised headless notebook runs, sweeps and schedules, executed "
        "with papermill as the submitting user in their own server.",
        openapi_url=f"{prefix}/openapi.json",
        docs_url=f"{prefix}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.hub_auth = hub_auth
    app.state.servers = servers
    app.state.dispatcher = dispatcher
    app.state.rate = SubmissionRate(int(settings["max_submissions_per_minute"]))
    body_limit = int(settings["max_notebook_bytes"]) + int(settings["max_parameters_bytes"])
    app.add_middleware(
        BodyLimit,
        limit=body_limit + 64 * 1024,
        names="runs.max_notebook_bytes + runs.max_parameters_bytes + 64 KiB",
    )

    @app.exception_handler(sa_exc.OperationalError)
    @app.exception_handler(sa_exc.InterfaceError)
    async def _database_down(request: Request, exc: Exception):
        log.warning(
            "the run database is unavailable (%s %s): %s",
            request.method,
            request.url.path,
            db_error_line(exc),
        )
        return JSONResponse(
            {
                "detail": "the runs service cannot reach its database right now; nothing was "
                "changed by this request and runs already recorded are kept. Try again shortly."
            },
            status_code=503,
            headers={"Retry-After": "10"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error of the runs service"}, status_code=500)

    def own_run(run_id: str, user: Caller, with_notebook: bool = False) -> dict[str, Any]:
        run = store.get_run(run_id, with_notebook=with_notebook)
        if run is None or (run["owner"] != user.name and not user.admin):
            raise HTTPException(404, f"no run {run_id}")
        return run

    def own_schedule(sid: str, user: Caller) -> dict[str, Any]:
        s = store.get_schedule(sid)
        if s is None or (s["owner"] != user.name and not user.admin):
            raise HTTPException(404, f"no schedule {sid}")
        return s

    def within_parameter_limit(req: RunRequest) -> None:
        limit = settings["max_parameters_bytes"]
        size = json_size(req.parameters)
        if isinstance(req, SweepRequest):
            size += json_size(req.parameter_sets or []) + json_size(req.grid or {})
        if size > limit:
            raise HTTPException(
                413,
                f"the parameters are {size} bytes of JSON and the limit is {limit} "
                "(runs.max_parameters_bytes); put large inputs in a file in your home and pass "
                "its path as a parameter",
            )

    async def user_groups(user: Caller) -> list[str]:
        try:
            model = await servers.user_model(user.name)
        except ServerError as exc:
            raise HTTPException(502, f"could not look the user up at the hub: {exc}") from exc
        groups = (model or {}).get("groups")
        return [g for g in groups if isinstance(g, str)] if isinstance(groups, list) else []

    async def site_for(name: str | None, user: Caller) -> Site | None:
        """The site a submission of ``user`` targets (None: no sites configured)."""
        groups = [] if sites.open_to_all else await user_groups(user)
        try:
            return sites.choose(name, groups)
        except SiteError as exc:
            raise HTTPException(exc.status, f"{exc} (compute.sites)") from None

    def run_fields(req: RunRequest, owner: str, site: Site | None = None) -> dict[str, Any]:
        within_parameter_limit(req)
        if req.notebook is not None:
            size = len(json.dumps(req.notebook))
            if size > settings["max_notebook_bytes"]:
                raise HTTPException(
                    413,
                    f"notebook of {size} bytes exceeds the limit of "
                    f"{settings['max_notebook_bytes']}",
                )
        timeout = settings["default_timeout"] if req.timeout is None else req.timeout
        longest = site.longest_timeout() if site and site.slurm else 0
        if longest and req.timeout is None:
            timeout = min(timeout or longest, longest)
        elif longest and (timeout == 0 or timeout > longest):
            raise HTTPException(
                422,
                f"on the compute site {site.name!r} a run's timeout must be between 1 and "
                f"{longest:g} seconds: its jobs' walltime limit is {site.walltime:g} s "
                f"(compute.sites.{site.name}.limits.walltime), less a margin for the job itself",
            )
        cap = settings["max_timeout"]
        if cap and (timeout == 0 or timeout > cap):
            raise HTTPException(422, f"timeout must be between 1 and {cap} seconds")
        return {
            "owner": owner,
            "name": req.name,
            "notebook": req.notebook,
            "path": req.path,
            "parameters": req.parameters,
            "timeout": timeout,
            "kernel_name": req.kernel_name,
            "cwd": req.cwd,
            "site": site.name if site else None,
        }

    def within_queue_limit(owner: str, adding: int) -> None:
        limit = settings["max_queued_per_user"]
        waiting = store.count_unfinished(owner)
        if waiting + adding > limit:
            raise HTTPException(
                429,
                f"too many runs: {owner} has {waiting} run(s) queued or executing and the limit "
                f"per user is {limit} (runs.max_queued_per_user); wait for some to end or cancel "
                "them (POST /runs/<id>/cancel), then submit again",
            )

    r = APIRouter(prefix=prefix)

    @r.get("/health", summary="Liveness and queue size (no authentication)")
    async def health() -> dict[str, Any]:
        return {"ok": True, "active": sum(store.count_active().values())}

    @r.get("/sites", summary="The compute sites you may run on")
    async def list_sites(user: User) -> list[dict[str, Any]]:
        return sites.describe([] if sites.open_to_all else await user_groups(user))

    @r.post("/runs", status_code=201, summary="Submit a run")
    async def submit(req: RunRequest, user: Submitter) -> dict[str, Any]:
        fields = run_fields(req, user.name, await site_for(req.site, user))
        within_queue_limit(user.name, 1)
        run = store.add_runs([fields])[0]
        dispatcher.wake.set()
        return public_run(run)

    @r.post("/sweeps", status_code=201, summary="Submit one run per parameter set")
    async def sweep(req: SweepRequest, user: Submitter) -> dict[str, Any]:
        size, limit = sweep_size(req.parameter_sets, req.grid), settings["max_sweep"]
        if size > limit:  # from the grid's shape: expanding a huge grid would hang the service
            shape = " x ".join(str(len(v)) for v in (req.grid or {}).values()) or "none"
            raise HTTPException(
                413,
                f"the sweep would make {human(size)} runs (grid {shape}, "
                f"{len(req.parameter_sets or [])} parameter sets) and the limit is {limit} "
                "(runs.max_sweep); split it into smaller sweeps",
            )
        base = run_fields(req, user.name, await site_for(req.site, user))
        try:
            sets = req.expand()
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        within_queue_limit(user.name, len(sets))
        sweep_id = new_id()
        rows = [
            {
                **base,
                "parameters": p,
                "sweep_id": sweep_id,
                "name": req.name or f"sweep {sweep_id} #{i}",
            }
            for i, p in enumerate(sets)
        ]
        created = store.add_runs(rows)
        dispatcher.wake.set()
        return {"sweep_id": sweep_id, "runs": [public_run(x) for x in created]}

    @r.get("/sweeps/{sweep_id}", summary="The runs of a sweep and a count per state")
    async def get_sweep(sweep_id: str, user: User) -> dict[str, Any]:
        runs = [
            x
            for x in store.list_runs(sweep_id=sweep_id, oldest_first=True)
            if x["owner"] == user.name or user.admin
        ]
        if not runs:
            raise HTTPException(404, f"no sweep {sweep_id}")
        counts: dict[str, int] = {}
        for x in runs:
            counts[x["state"]] = counts.get(x["state"], 0) + 1
        return {"sweep_id": sweep_id, "counts": counts, "runs": [public_run(x) for x in runs]}

    @r.get("/runs", summary="List runs (your own; admins: all=true or user=NAME)")
    async def list_runs(
        user: User,
        state: Annotated[list[str] | None, Query()] = None,
        sweep_id: str | None = None,
        owner: Annotated[str | None, Query(alias="user")] = None,
        all: bool = False,  # noqa: A002 (query parameter name)
        limit: Annotated[int, Query(ge=1, le=10000)] = 200,
    ) -> list[dict[str, Any]]:
        bad = [s for s in state or [] if s not in STATES]
        if bad:
            raise HTTPException(422, f"unknown state(s) {bad}; known: {list(STATES)}")
        if (owner and owner != user.name or all) and not user.admin:
            raise HTTPException(403, "only admins may list other users' runs")
        who = None if all and not owner else (owner or user.name)
        runs = store.list_runs(
            owner=who, states=tuple(state) if state else None, sweep_id=sweep_id, limit=limit
        )
        return [public_run(x) for x in runs]

    @r.get("/runs/{run_id}", summary="One run, with progress (cell n of m)")
    async def get_run(run_id: str, user: User) -> dict[str, Any]:
        return public_run(own_run(run_id, user))

    @r.get(
        "/runs/{run_id}/output",
        summary="The executed notebook (also of failed runs)",
        responses={200: {"content": {"application/x-ipynb+json": {}}}},
    )
    async def output(run_id: str, user: User) -> Response:
        run = own_run(run_id, user)
        text = await _file(run, dispatcher.output_path(run_id), "output.ipynb")
        if text is None:
            raise HTTPException(
                404,
                f"run {run_id} has no output notebook (yet); one larger than "
                f"runs.max_output_bytes stays only in the owner's home, ~/{run_dir(run_id)}/",
            )
        return Response(text, media_type="application/x-ipynb+json")

    @r.get(
        "/runs/{run_id}/logs",
        summary="The executor's log (papermill and cell outputs)",
        response_class=PlainTextResponse,
    )
    async def logs(run_id: str, user: User) -> PlainTextResponse:
        run = own_run(run_id, user)
        text = await _file(run, dispatcher.log_path(run_id), "log.txt")
        return PlainTextResponse(text or "")

    async def _file(run: dict[str, Any], stored: Path, name: str) -> str | None:
        if stored.exists():
            return stored.read_text()
        if run["state"] not in ACTIVE:
            return None
        try:
            await servers.known(run["owner"])
            return await servers.read_text(
                run["owner"], f"{run_dir(run['id'])}/{name}", int(settings["max_output_bytes"])
            )
        except TooLarge as exc:
            raise HTTPException(
                413,
                f"the run's {name} is larger than runs.max_output_bytes; it is in the owner's "
                f"home at ~/{run_dir(run['id'])}/{name}",
            ) from exc
        except ServerError as exc:
            raise HTTPException(502, f"the user's runs server did not answer: {exc}") from exc

    @r.post("/runs/{run_id}/cancel", status_code=202, summary="Cancel a queued or active run")
    async def cancel(run_id: str, user: User) -> dict[str, Any]:
        run = own_run(run_id, user)
        if run["state"] in TERMINAL:
            raise HTTPException(409, f"run {run_id} already ended ({run['state']})")
        store.update_run(run_id, cancel_requested=True)
        store.update_run(
            run_id,
            expect=("queued",),
            state="cancelled",
            finished=time.time(),
            message="cancelled before it started",
        )
        dispatcher.wake.set()
        return public_run(store.get_run(run_id))

    @r.delete(
        "/runs/{run_id}",
        status_code=204,
        summary="Delete a queued or ended run's record (its files in your home stay)",
    )
    async def delete_run(run_id: str, user: User) -> Response:
        run = own_run(run_id, user)
        if run["state"] in ACTIVE:
            raise HTTPException(
                409,
                f"run {run_id} is {run['state']}: cancel it first (POST /runs/{run_id}/cancel) "
                "and delete it once it has ended",
            )
        if not store.delete_run(run_id, expect=("queued", *TERMINAL)):
            raise HTTPException(409, f"run {run_id} was just dispatched; cancel it first")
        dispatcher.forget(run_id)
        log.info("run %s of %s deleted by %s", run_id, run["owner"], user.name)
        return Response(status_code=204)

    @r.post("/runs/{run_id}/rerun", status_code=201, summary="Run an ended run again")
    async def rerun(run_id: str, user: Submitter) -> dict[str, Any]:
        run = own_run(run_id, user, with_notebook=True)
        if run["state"] not in TERMINAL:
            raise HTTPException(409, f"run {run_id} has not ended ({run['state']})")
        keys = ("owner", "name", "notebook", "path", "parameters", "timeout", "kernel_name", "cwd")
        if run["site"]:
            owner = Caller(name=run["owner"], admin=False)
            await site_for(run["site"], owner)  # still configured, still open to the owner
        within_queue_limit(run["owner"], 1)
        new = store.add_runs(
            [{**{k: run[k] for k in keys}, "site": run["site"], "rerun_of": run_id}]
        )[0]
        dispatcher.wake.set()
        return public_run(new)

    @r.post("/schedules", status_code=201, summary="Run a notebook on a cron schedule")
    async def add_schedule(req: ScheduleRequest, user: Submitter) -> dict[str, Any]:
        fields = run_fields(req, user.name, await site_for(req.site, user))
        try:
            first = await asyncio.to_thread(
                check_schedule, req.cron, float(settings["min_schedule_interval"])
            )
        except CronRefused as exc:
            raise HTTPException(400, str(exc)) from exc
        fields.pop("name")
        limit = settings["max_schedules_per_user"]
        if store.count_schedules(user.name) >= limit:
            raise HTTPException(
                429,
                f"too many schedules: the limit per user is {limit} "
                "(runs.max_schedules_per_user); delete one (DELETE /schedules/<id>) first",
            )
        s = store.add_schedule(
            {
                **fields,
                "name": req.name,
                "cron": req.cron,
                "next_fire": first,
            }
        )
        return public_schedule(s)

    @r.get("/schedules", summary="Your schedules (admins: all=true)")
    async def list_schedules(user: User, all: bool = False) -> list[dict[str, Any]]:  # noqa: A002
        if all and not user.admin:
            raise HTTPException(403, "only admins may list other users' schedules")
        return [public_schedule(s) for s in store.list_schedules(None if all else user.name)]

    @r.get("/schedules/{sid}", summary="One schedule")
    async def get_schedule(sid: str, user: User) -> dict[str, Any]:
        return public_schedule(own_schedule(sid, user))

    @r.delete("/schedules/{sid}", status_code=204, summary="Delete a schedule (its runs stay)")
    async def delete_schedule(sid: str, user: User) -> Response:
        own_schedule(sid, user)
        store.delete_schedule(sid)
        return Response(status_code=204)

    app.include_router(r)
    return app
