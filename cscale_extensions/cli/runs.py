"""``cscale-hub run`` and ``cscale-hub runs …``: the runs service from a terminal or a script.

Where the service is: ``$CSCALE_RUNS_URL`` (set in user servers), else ``--hub-url`` /
``$CSCALE_HUB_URL`` + ``services/runs/``. The token: ``--token``, ``$CSCALE_HUB_TOKEN``, or
``$JUPYTERHUB_API_TOKEN`` (inside a user server). A token made on the hub's token page with
the scope ``access:services!service=runs`` is enough for scripts outside the hub.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from cscale_extensions.compute import DEFAULT_SITE_ENV

TERMINAL = ("succeeded", "failed", "cancelled", "timeout", "lost")


class CliError(RuntimeError):
    pass


class RunsClient:
    """Thin HTTP client of the runs API."""

    def __init__(self, url: str, token: str, timeout: float = 60.0):
        self.url = url if url.endswith("/") else url + "/"
        self.http = httpx.Client(headers={"Authorization": f"token {token}"}, timeout=timeout)

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            r = self.http.request(method, self.url + path.lstrip("/"), **kw)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the runs service at {self.url}: {exc}") from exc
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text[:300]
            if isinstance(detail, list):  # validation errors
                detail = "; ".join(
                    f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail
                )
            raise CliError(f"{r.status_code}: {detail}")
        return r

    def json(self, method: str, path: str, **kw: Any) -> Any:
        return self.request(method, path, **kw).json()


def client_from(args: argparse.Namespace) -> RunsClient:
    token = (
        args.token or os.environ.get("CSCALE_HUB_TOKEN") or os.environ.get("JUPYTERHUB_API_TOKEN")
    )
    if not token:
        raise CliError(
            "no token: give --token or set $CSCALE_HUB_TOKEN (inside a user server "
            "$JUPYTERHUB_API_TOKEN is used)"
        )
    hub = args.hub_url
    if hub:
        url = hub.rstrip("/") + "/services/runs/"
    elif os.environ.get("CSCALE_RUNS_URL"):
        url = os.environ["CSCALE_RUNS_URL"]
    elif os.environ.get("CSCALE_HUB_URL"):
        url = os.environ["CSCALE_HUB_URL"].rstrip("/") + "/services/runs/"
    else:
        raise CliError("where is the hub? give --hub-url or set $CSCALE_HUB_URL")
    return RunsClient(url, token)


def parse_value(text: str) -> Any:
    """A parameter value as YAML (numbers, booleans, lists …), else the string itself."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_sweep(path: str) -> dict[str, Any]:
    """A sweep file: a list of parameter sets, or {parameter_sets: [...], grid: {...}}."""
    data = yaml.safe_load(Path(path).read_text())
    if isinstance(data, list):
        return {"parameter_sets": data}
    if isinstance(data, dict) and ({"parameter_sets", "grid"} & data.keys()):
        return {k: data[k] for k in ("parameter_sets", "grid") if k in data}
    raise CliError(
        f"{path}: expected a list of parameter sets or a mapping with "
        "'parameter_sets' and/or 'grid'"
    )


def bar(cell: int, cells: int, width: int = 30) -> str:
    done = int(width * cell / cells) if cells else 0
    return "[" + "#" * done + "." * (width - done) + "]"


def show_progress(runs: list[dict[str, Any]], stream) -> None:
    if len(runs) == 1:
        r = runs[0]
        line = f"{r['id']} {bar(r['cell'], r['cells'])} cell {r['cell']}/{r['cells']} {r['state']}"
    else:
        ended = sum(r["state"] in TERMINAL for r in runs)
        states: dict[str, int] = {}
        for r in runs:
            states[r["state"]] = states.get(r["state"], 0) + 1
        summary = " ".join(f"{k}={v}" for k, v in sorted(states.items()))
        line = f"{bar(ended, len(runs))} {ended}/{len(runs)} runs ended  {summary}"
    stream.write("\r" + line.ljust(100))
    stream.flush()


def wait(
    client: RunsClient, ids: list[str], interval: float = 1.0, stream=sys.stderr
) -> list[dict]:
    while True:
        runs = [client.json("GET", f"runs/{i}") for i in ids]
        show_progress(runs, stream)
        if all(r["state"] in TERMINAL for r in runs):
            stream.write("\n")
            return runs
        time.sleep(interval)


def _request_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"parameters": {n: parse_value(v) for n, v in args.parameters or []}}
    if args.in_home:
        body["path"] = args.notebook
    else:
        try:
            body["notebook"] = json.loads(Path(args.notebook).read_text())
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read the notebook {args.notebook}: {exc}") from exc
    for key in ("timeout", "kernel_name", "cwd", "name", "site"):
        value = getattr(args, key, None)
        if value is not None:
            body[key] = value
    if "site" not in body and os.environ.get(DEFAULT_SITE_ENV):
        body["site"] = os.environ[DEFAULT_SITE_ENV]  # the site chosen when the server started
    return body


def cmd_run(args: argparse.Namespace) -> int:
    client = client_from(args)
    body = _request_body(args)
    if args.cron:
        if args.sweep:
            raise CliError("--cron and --sweep cannot be combined")
        s = client.json("POST", "schedules", json={**body, "cron": args.cron})
        print(f"schedule {s['id']}: {s['cron']}, next at {time.ctime(s['next_fire'])}")
        return 0
    if args.sweep:
        out = client.json("POST", "sweeps", json={**body, **load_sweep(args.sweep)})
        ids = [r["id"] for r in out["runs"]]
        print(f"sweep {out['sweep_id']}: {len(ids)} runs{_on(out['runs'][0])}")
    else:
        run = client.json("POST", "runs", json=body)
        ids = [run["id"]]
        print(f"run {ids[0]}{_on(run)}")
    if not args.wait:
        return 0
    runs = wait(client, ids)
    out_dir = Path(args.output_dir or ".")
    failed = 0
    for r in runs:
        target = out_dir / f"{Path(args.notebook).stem}.{r['id']}.ipynb"
        try:
            target.write_bytes(client.request("GET", f"runs/{r['id']}/output").content)
            where = str(target)
        except CliError:
            where = "no output"
        print(f"{r['id']} {r['state']} {r['message'] or ''} -> {where}".rstrip())
        failed += r["state"] != "succeeded"
    return 1 if failed else 0


def _on(run: dict[str, Any]) -> str:
    return f" on {run['site']}" if run.get("site") else ""


def cmd_sites(args: argparse.Namespace) -> int:
    for site in client_from(args).json("GET", "sites"):
        limit = f"timeout <= {site['max_timeout']:g} s" if site.get("max_timeout") else ""
        mark = "*" if site.get("default") else " "
        print(f"{mark} {site['name']:<12} {site['kind']:<8} {limit:<22} {site['description']}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.all:
        params["all"] = "true"
    if args.state:
        params["state"] = args.state
    runs = client_from(args).json("GET", "runs", params=params)
    for r in runs:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"]))
        print(
            f"{r['id']}  {r['owner']:<12} {r['state']:<11} {r['cell']:>3}/{r['cells']:<3} "
            f"{created}  {r.get('site') or '-':<8} {r['name'] or r['path'] or ''}"
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    print(json.dumps(client_from(args).json("GET", f"runs/{args.id}"), indent=2))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    client = client_from(args)
    seen = 0
    while True:
        text = client.request("GET", f"runs/{args.id}/logs").text
        sys.stdout.write(text[seen:])
        sys.stdout.flush()
        seen = len(text)
        if not args.follow or client.json("GET", f"runs/{args.id}")["state"] in TERMINAL:
            return 0
        time.sleep(1)


def cmd_output(args: argparse.Namespace) -> int:
    content = client_from(args).request("GET", f"runs/{args.id}/output").content
    Path(args.output or f"{args.id}.ipynb").write_bytes(content)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    client = client_from(args)
    for run_id in args.ids:
        print(f"{run_id}: {client.json('POST', f'runs/{run_id}/cancel')['state']}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    client = client_from(args)
    for run_id in args.ids:
        client.request("DELETE", f"runs/{run_id}")
        print(f"{run_id}: deleted (its files in your home, ~/runs/{run_id}/, stay)")
    return 0


def cmd_rerun(args: argparse.Namespace) -> int:
    print(f"run {client_from(args).json('POST', f'runs/{args.id}/rerun')['id']}")
    return 0


def cmd_schedules(args: argparse.Namespace) -> int:
    for s in client_from(args).json("GET", "schedules"):
        print(
            f"{s['id']}  {s['cron']:<20} next {time.ctime(s['next_fire'])}  "
            f"last run {s['last_run'] or '-'}  {s['name'] or s['path'] or ''}"
        )
    return 0


def cmd_unschedule(args: argparse.Namespace) -> int:
    client_from(args).request("DELETE", f"schedules/{args.id}")
    return 0


def _connection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hub-url", help="public hub URL (default $CSCALE_HUB_URL)")
    p.add_argument(
        "--token", help="hub API token (default $CSCALE_HUB_TOKEN or $JUPYTERHUB_API_TOKEN)"
    )


def _guard(func):
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except CliError as exc:
            print(f"cscale-hub: {exc}", file=sys.stderr)
            return 2

    return run


def add_run_parsers(subparsers) -> None:
    p = subparsers.add_parser("run", help="run a notebook headless with parameters (papermill)")
    p.add_argument(
        "notebook", help="local .ipynb to upload (or, with --in-home, a path in your home)"
    )
    p.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        dest="parameters",
        metavar=("NAME", "VALUE"),
        help="a parameter (value parsed as YAML)",
    )
    p.add_argument("--sweep", metavar="PARAMS.yaml", help="one run per parameter set in this file")
    p.add_argument("--cron", help="do not run now: run on this cron schedule")
    p.add_argument("--wait", action="store_true", help="follow progress and fetch the output")
    p.add_argument("--output-dir", help="where --wait puts output notebooks (default .)")
    p.add_argument("--in-home", action="store_true", help="NOTEBOOK is a path in your hub home")
    p.add_argument(
        "--timeout", type=float, help="seconds the run may take (default: the service's)"
    )
    p.add_argument("--kernel", dest="kernel_name")
    p.add_argument("--cwd", help="working directory in your home")
    p.add_argument("--name", help="a label for listings")
    p.add_argument(
        "--site",
        help="compute site to run on (`cscale-hub runs sites`; default: the one chosen when "
        f"your server started (${DEFAULT_SITE_ENV}), else the platform's); on a "
        "Slurm site a run is a batch job, a sweep one job array",
    )
    _connection(p)
    p.set_defaults(func=_guard(cmd_run))

    runs = subparsers.add_parser("runs", help="list, follow, cancel runs and schedules")
    sub = runs.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    q = sub.add_parser("list", help="your runs (newest first)")
    q.add_argument("--all", action="store_true", help="every user's runs (admins)")
    q.add_argument("--state", action="append")
    q.add_argument("--limit", type=int, default=50)
    q.set_defaults(func=_guard(cmd_list))
    for name, func, hlp in (
        ("show", cmd_show, "one run as JSON"),
        ("rerun", cmd_rerun, "run again"),
    ):
        q = sub.add_parser(name, help=hlp)
        q.add_argument("id")
        q.set_defaults(func=_guard(func))
    q = sub.add_parser("logs", help="the executor log of a run")
    q.add_argument("id")
    q.add_argument("--follow", "-f", action="store_true")
    q.set_defaults(func=_guard(cmd_logs))
    q = sub.add_parser("output", help="download the executed notebook")
    q.add_argument("id")
    q.add_argument("-o", "--output")
    q.set_defaults(func=_guard(cmd_output))
    q = sub.add_parser("cancel", help="cancel runs")
    q.add_argument("ids", nargs="+")
    q.set_defaults(func=_guard(cmd_cancel))
    q = sub.add_parser(
        "delete", help="delete queued or ended runs from the service (files in your home stay)"
    )
    q.add_argument("ids", nargs="+")
    q.set_defaults(func=_guard(cmd_delete))
    q = sub.add_parser("sites", help="the compute sites you may run on (* = default)")
    q.set_defaults(func=_guard(cmd_sites))
    q = sub.add_parser("schedules", help="your schedules")
    q.set_defaults(func=_guard(cmd_schedules))
    q = sub.add_parser("unschedule", help="delete a schedule")
    q.add_argument("id")
    q.set_defaults(func=_guard(cmd_unschedule))
    for action in sub.choices.values():
        _connection(action)
