"""``cscale-hub workshop create|prewarm|status|end|tick|list|capacity``."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cscale_extensions import config as settings
from cscale_extensions.localstack.oidc.accounts import AccountError, list_accounts
from cscale_extensions.workshop import model
from cscale_extensions.workshop.hubapi import HubAPI, resolve
from cscale_extensions.workshop.model import WorkshopError


@dataclass
class Ctx:
    cfg: dict[str, Any]  # the settings the running hub uses (runtime/config.json) when known
    data_dir: Path
    embedded: bool
    args: argparse.Namespace

    @property
    def root(self) -> Path:
        return model.workshops_dir(self.cfg, self.data_dir)

    def dir(self, name: str) -> Path:
        return model.workshop_dir(self.cfg, self.data_dir, name)

    def hub(self) -> tuple[HubAPI, str]:
        url, token = resolve(self.data_dir, self.args.hub_url, self.args.token)
        api = HubAPI(url, token)
        api.check_admin()
        return api, url

    @property
    def accounts_file(self) -> Path | None:
        if not self.embedded:
            return None
        from cscale_extensions.localstack.oidc.embedded import accounts_path

        return (
            Path(self.args.accounts_file)
            if self.args.accounts_file
            else accounts_path(self.cfg, self.data_dir)
        )

    @property
    def homes(self) -> Path:
        return self.data_dir / "homes"


def context(args: argparse.Namespace) -> Ctx:
    from cscale_extensions.localstack.launcher import default_data_dir

    operator = settings.load(args.config)
    data_dir = Path(args.data_dir or operator["platform"]["data_dir"] or default_data_dir())
    cfg = operator
    resolved = data_dir / "runtime" / "config.json"
    if resolved.exists():
        cfg = settings.deep_merge(settings.defaults(), json.loads(resolved.read_text()))
    return Ctx(cfg=cfg, data_dir=data_dir, embedded=not operator["auth"]["issuer"], args=args)


def _env_pairs(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise WorkshopError(f"--env {item!r}: use NAME=VALUE")
        out[key] = value
    return out


def cmd_create(ctx: Ctx) -> int:
    from cscale_extensions.workshop.create import create

    a = ctx.args
    profile = {
        k: v
        for k, v in {
            "mem_limit": a.mem_limit,
            "cpu_limit": a.cpu_limit,
            "default_url": a.default_url,
            "environment": _env_pairs(a.env),
        }.items()
        if v
    }
    participants = [p.strip() for p in (a.participants or "").split(",") if p.strip()] or None
    if not ctx.embedded and not participants:
        participants = []
    try:
        api, url = ctx.hub()
    except WorkshopError as exc:
        if not a.offline:
            raise
        print(f"note: {exc}; the hub group is made at the first prewarm/status", file=sys.stderr)
        api, url = None, a.hub_url or "(the hub's URL)"
    directory = ctx.dir(a.name)
    ws, passwords = create(
        ctx.cfg,
        directory,
        a.name,
        n_users=a.users,
        start=a.start,
        end=a.end,
        materials_source=a.materials,
        profile=profile,
        embedded=ctx.embedded,
        accounts_file=ctx.accounts_file,
        api=api,
        hub_url=url,
        usernames=participants,
    )
    print(
        f"workshop {ws.name}: {len(ws.users)} participants, hub group {ws.group!r}, state in {directory}"
    )
    if ws.materials:
        print(
            f"  materials: {ws.materials} -> {directory / 'materials'} (read-only); each participant gets "
            f"a writable copy in ~/{ctx.cfg['workshop']['materials_target'].replace('{workshop}', ws.name)}"
        )
    if passwords:
        print(
            f"  accounts: {ws.users[0]} … {ws.users[-1]}; passwords in {directory / 'accounts.csv'} and "
            f"the printable {directory / 'accounts.html'}"
        )
    else:
        print(
            "  federated login: participants need these entitlements (ask the VO managers to add them "
            f"to VO {ws.vo} and its subgroup {ws.group}):"
        )
        for e in ws.entitlements:
            print(f"    {e}")
    if ws.end:
        print(
            f"  ends {ws.end}: run `cscale-hub workshop tick` every minute (cron) or `workshop status` "
            "after that time to stop, export and disable"
        )
    return 0


def _load(ctx: Ctx, name: str) -> tuple[Path, model.Workshop]:
    directory = ctx.dir(name)
    return directory, model.load(directory)


def _sync_group(api: HubAPI, ws: model.Workshop) -> None:
    """Make the cohort's hub group hold every participant (also those not logged in yet)."""
    api.ensure_users(ws.users)
    group = api.group(ws.group)
    members = set((group or {}).get("users", []))
    if group is None:
        api.ensure_group(ws.group, ws.users, {"workshop": ws.name})
    else:
        api.add_to_group(ws.group, [u for u in ws.users if u not in members])


def cmd_prewarm(ctx: Ctx) -> int:
    from cscale_extensions.workshop import rate
    from cscale_extensions.workshop.prewarm import prewarm

    directory, ws = _load(ctx, ctx.args.name)
    if ws.ended:
        raise WorkshopError(f"workshop {ws.name} ended at {ws.ended}")
    api, _ = ctx.hub()
    _sync_group(api, ws)
    w = ctx.cfg["workshop"]
    parallel = ctx.args.parallel or w["prewarm_parallel"]
    if parallel is not None and parallel < 1:
        raise WorkshopError("--parallel must be at least 1")
    users = ws.users[: ctx.args.limit] if ctx.args.limit else ws.users
    known = None if parallel else rate.load_cost(ctx.root)
    if parallel:
        how = f"{parallel} at a time"
    elif known:
        how = "at this machine's measured rate"
    else:
        how = "measuring this machine's rate (one start per core until then)"
    print(f"prewarming {len(users)} servers of {ws.name}, {how}", flush=True)
    result = prewarm(
        api,
        users,
        parallel=parallel,
        retries=w["prewarm_retries"],
        retry_delay=w["prewarm_retry_delay"],
        timeout=ctx.cfg["spawner"]["start_timeout"] + 30,
        concurrent_spawn_limit=ctx.cfg["hub"]["concurrent_spawn_limit"],
        memory_fraction=w["capacity_memory_fraction"],
        log=lambda line: print(line, flush=True),
        known_cost=known,
        on_measured=lambda cost: rate.save_cost(ctx.root, cost, "workshop prewarm"),
    )
    ws = model.load(directory)
    ws.prewarm.update(result)
    model.save(directory, ws)
    return 0 if all(r["state"] == "ready" for r in result.values()) else 1


def _end(ctx: Ctx, directory: Path, ws: model.Workshop, api: HubAPI | None) -> int:
    from cscale_extensions.workshop.end import end_workshop

    print(f"ending workshop {ws.name}")
    end_workshop(ctx.cfg, directory, ws, api=api, homes=ctx.homes, accounts_file=ctx.accounts_file)
    ws = model.load(directory)
    print(
        f"workshop {ws.name} ended; archives in {directory / 'exports'}"
        if ws.ended
        else f"workshop {ws.name}: some steps failed (see above); run `workshop end {ws.name}` again"
    )
    return 0 if ws.ended else 1


def cmd_status(ctx: Ctx) -> int:
    from cscale_extensions.workshop.status import cohort_status, render, summary

    directory, ws = _load(ctx, ctx.args.name)
    api, _ = ctx.hub()
    if ws.end_due():
        print(f"the scheduled end {ws.end} has passed")
        _end(ctx, directory, ws, api)
        ws = model.load(directory)
    if not ws.ended:
        _sync_group(api, ws)
    disabled = set()
    if ctx.accounts_file:
        with contextlib.suppress(AccountError):
            disabled = {
                r["username"] for r in list_accounts(ctx.accounts_file) if r.get("disabled")
            }
    rows = cohort_status(api, ws, disabled)
    if ctx.args.json:
        print(
            json.dumps(
                {"workshop": ws.name, "ended": ws.ended, "end": ws.end, "participants": rows},
                indent=1,
            )
        )
    else:
        print(
            f"workshop {ws.name}"
            + (f" (ended {ws.ended})" if ws.ended else f" (ends {ws.end or 'when ended'})")
        )
        print(render(rows))
        print(summary(rows))
    return 0


def cmd_end(ctx: Ctx) -> int:
    directory, ws = _load(ctx, ctx.args.name)
    if ctx.args.at:
        ws.end = model.parse_time(ctx.args.at)
        model.save(directory, ws)
        print(
            f"workshop {ws.name} will end at {ws.end} (at the first `workshop tick` or `workshop status` after it)"
        )
        return 0
    try:
        api, _ = ctx.hub()
    except WorkshopError as exc:
        if not ctx.args.offline:
            raise
        print(f"note: {exc}; servers are not stopped", file=sys.stderr)
        api = None
    return _end(ctx, directory, ws, api)


def cmd_tick(ctx: Ctx) -> int:
    due = [(d, w) for d, w in model.all_workshops(ctx.root) if w.end_due()]
    if not due:
        return 0
    api, _ = ctx.hub()
    return max(_end(ctx, d, w, api) for d, w in due)


def cmd_list(ctx: Ctx) -> int:
    for _d, w in model.all_workshops(ctx.root):
        state = f"ended {w.ended}" if w.ended else f"ends {w.end or '-'}"
        print(f"{w.name:<24} {len(w.users):>4} participants  starts {w.start or '-'}  {state}")
    return 0


def cmd_capacity(ctx: Ctx) -> int:
    from cscale_extensions.workshop.capacity import measure

    if ctx.args.users < 1:
        raise WorkshopError("--users must be at least 1")
    api, url = ctx.hub()
    probes = ctx.args.probes or ctx.cfg["workshop"]["capacity_probes"]
    cap = measure(
        api,
        url,
        ctx.args.users,
        probes=probes,
        cfg=ctx.cfg,
        workshops=ctx.root,
        log=lambda _m: None,
    )
    from cscale_extensions.workshop import rate

    v = cap.verdict()
    if cap.spawn_seconds and v["cpu_seconds_per_start"] > 0:  # prewarm's rate (workshop.rate)
        wall = sum(cap.spawn_seconds) / len(cap.spawn_seconds)
        cost = rate.StartCost(wall, v["cpu_seconds_per_start"], v["memory_per_server_mib"])
        rate.save_cost(ctx.root, cost, "workshop capacity")
    print(json.dumps(v, indent=1) if ctx.args.json else cap.report())
    return 0 if cap.verdict()["fits_memory"] and cap.verdict()["fits_cores"] else 3


def _run(fn):
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return fn(context(args))
        except (WorkshopError, AccountError, settings.ConfigError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return wrapper


def add_workshop_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``cscale-hub workshop …``."""
    parser = subparsers.add_parser(
        "workshop",
        help="training workshops: cohorts, prewarming, capacity",
        description="Run training workshops on the hub. See docs/workshops.md.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", "-c", help="platform settings (YAML) the stack was started with"
    )
    common.add_argument("--data-dir", help="the stack's data dir (default: as `cscale-hub up`)")
    common.add_argument(
        "--hub-url", help="hub URL (default: $CSCALE_HUB_URL or the stack's runtime/stack.json)"
    )
    common.add_argument(
        "--token",
        help="admin API token (default: $CSCALE_HUB_TOKEN or <data_dir>/secrets/admin_api_token)",
    )
    common.add_argument(
        "--accounts-file",
        help="accounts file of the embedded provider (default: from the settings)",
    )
    sub = parser.add_subparsers(dest="workshop_command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "create", parents=[common], help="create a cohort: accounts, login sheet, materials, group"
    )
    p.add_argument("name")
    p.add_argument(
        "--users", type=int, default=0, help="number of accounts to generate (embedded provider)"
    )
    p.add_argument(
        "--participants", help="comma-separated hub usernames instead (federated provider)"
    )
    p.add_argument("--start", help="start time, ISO 8601 (naive = UTC)")
    p.add_argument(
        "--end", help="end time, ISO 8601; honoured by `workshop tick` / `workshop status`"
    )
    p.add_argument(
        "--materials", help="local directory or local git repository given to every participant"
    )
    p.add_argument("--mem-limit", help="memory limit per server, e.g. 2G (enforced on Kubernetes)")
    p.add_argument(
        "--cpu-limit", type=float, help="CPU limit per server in cores (enforced on Kubernetes)"
    )
    p.add_argument("--default-url", help="page participants land on, e.g. /lab/tree/<name>")
    p.add_argument(
        "--env", action="append", help="NAME=VALUE for the cohort's servers (repeatable)"
    )
    p.add_argument(
        "--offline", action="store_true", help="create even when the hub is not reachable"
    )
    p.set_defaults(func=_run(cmd_create))

    p = sub.add_parser("prewarm", parents=[common], help="start the cohort's servers ahead of time")
    p.add_argument("name")
    p.add_argument(
        "--parallel",
        type=int,
        help="spawns at once (default workshop.prewarm_parallel; unset: measured)",
    )
    p.add_argument("--limit", type=int, help="only the first N participants")
    p.set_defaults(func=_run(cmd_prewarm))

    p = sub.add_parser("status", parents=[common], help="who is logged in, ready, failed and why")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run(cmd_status))

    p = sub.add_parser(
        "end", parents=[common], help="stop servers, export work, disable accounts (now or --at)"
    )
    p.add_argument("name")
    p.add_argument("--at", help="schedule the end at this time instead of now")
    p.add_argument(
        "--offline",
        action="store_true",
        help="export and disable even when the hub is not reachable",
    )
    p.set_defaults(func=_run(cmd_end))

    p = sub.add_parser(
        "tick", parents=[common], help="end the workshops whose end time has passed (for cron)"
    )
    p.set_defaults(func=_run(cmd_tick))

    p = sub.add_parser("list", parents=[common], help="list workshops")
    p.set_defaults(func=_run(cmd_list))

    p = sub.add_parser(
        "capacity", parents=[common], help="measure a server's cost here; do N users fit?"
    )
    p.add_argument("--users", type=int, required=True)
    p.add_argument(
        "--probes", type=int, help="servers to measure (default workshop.capacity_probes)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run(cmd_capacity))
    return parser
