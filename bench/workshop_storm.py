"""Login-storm benchmark for workshops (hubtraf-style, over HTTP, no browser).

N simulated participants arrive at a set rate. Each one logs in (the platform: the real
OpenID Connect flow against the embedded provider; the baseline: DummyAuthenticator's form),
asks for its server like the hub's spawn page does (POST the server API with the session
cookie, then follow the progress event stream until ready), gets an API token, starts a kernel
and executes a cell over the kernel websocket. The time from arrival to the cell's result is
"time to a ready kernel".

Two hubs run side by side in the same run, on free loopback ports:
- platform: `cscale-hub up` (proxy, hub, embedded OIDC provider, hub services) with a workshop
  cohort of N generated accounts;
- vanilla: a plain `jupyterhub` with a minimal config of this script: DummyAuthenticator,
  the same spawner class (SystemUserSpawner: one POSIX account per user, workflow notebooks
  copied in), the same concurrent_spawn_limit and start_timeout, no services.
Each hub is stormed cold (no server running) and pre-warmed (servers started beforehand by
`workshop prewarm`'s code at a safe rate; that prewarm's duration is reported too). Both
hubs get the same start_timeout and http_timeout (JupyterHub's default http_timeout of 30 s
fails most starts of a 20-user storm on 2 cores).

Prints p50 / p95 / max of the time to a ready kernel, failures, the platform/vanilla ratios,
and where a participant's seconds go: per phase (login with its HTTP round trips, wait for
the server, API token, first request through the proxy to the server, kernel start, first
execution), p50 / p95 each. For the cold case it prints the CPU bound: one participant's
server measured alone beforehand (its processes' CPU seconds to start, start a kernel and run
the cell, until idle), N x that / cores is the least time N cold starts can take on this
machine, and the measured p95 is given as a multiple of it. `workshop prewarm`'s time for N
(at its measured parallelism) is set beside the cold storm's time until all N servers were
ready.

``--write-docs docs/workshops.md`` replaces the block between the ``bench-workshop`` markers
there with this run's tables, with the commit and date (``make bench-workshop``); the figures
in the docs are never edited by hand. Needs root (system accounts). Usage:

    .venv/bin/python bench/workshop_storm.py [--users 10] [--rate 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

import requests
from cscale_testing import LocalStack, LoginRefused, oidc_login, xsrf_headers

from cscale_extensions.kernelclient import delete_kernel, run_in_kernel, start_kernel
from cscale_extensions.localstack.launcher import REPO_ROOT as REPO
from cscale_extensions.net import free_port
from cscale_extensions.workshop import rate
from cscale_extensions.workshop.hubapi import HubAPI
from cscale_extensions.workshop.prewarm import prewarm

CELL = "import sys\nprint(sum(range(1000)))"
VANILLA_CONFIG = """\
from cscale_extensions.hub.spawner import SystemUserSpawner

c = get_config()  # noqa: F821
c.JupyterHub.bind_url = "http://127.0.0.1:{port}/"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.auth_token = {proxy_token!r}
c.JupyterHub.db_url = "sqlite:///{dir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{dir}/cookie_secret"
c.JupyterHub.pid_file = "{dir}/jupyterhub.pid"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = SystemUserSpawner
c.SystemUserSpawner.homes_dir = "{dir}/homes"
c.Spawner.cmd = [{singleuser!r}]
c.Spawner.default_url = "/lab"
c.Spawner.notebooks_source = {notebooks!r}
c.Spawner.start_timeout = {start_timeout}
c.Spawner.http_timeout = {http_timeout}
c.JupyterHub.concurrent_spawn_limit = {spawn_limit}
c.JupyterHub.cleanup_servers = True
c.JupyterHub.services = [{{"name": "bench", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": "admin", "services": ["bench"]}}]
"""


class VanillaHub:
    """A plain JupyterHub (DummyAuthenticator, the platform's spawner class) in a subprocess."""

    def __init__(self, spawn_limit: int, start_timeout: int, http_timeout: int):
        self.dir = Path(tempfile.mkdtemp(prefix="cscale-vanilla-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.token = secrets.token_hex(32)
        self.url = f"http://127.0.0.1:{self.port}/"
        (self.dir / "jupyterhub_config.py").write_text(
            VANILLA_CONFIG.format(
                port=self.port,
                hub_port=free_port(),
                api_port=free_port(),
                dir=self.dir,
                chp=str(REPO / "node_modules" / ".bin" / "configurable-http-proxy"),
                proxy_token=secrets.token_hex(16),
                singleuser=str(Path(sys.executable).with_name("jupyterhub-singleuser")),
                notebooks=str(REPO / "workflow_notebooks"),
                start_timeout=start_timeout,
                http_timeout=http_timeout,
                spawn_limit=spawn_limit,
                token=self.token,
            )
        )
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> VanillaHub:
        log = open(self.dir / "hub.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("jupyterhub")),
                "-f",
                str(self.dir / "jupyterhub_config.py"),
            ],
            cwd=self.dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={
                **os.environ,
                "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            },
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"vanilla hub exited: {(self.dir / 'hub.log').read_text()[-2000:]}"
                )
            try:
                if requests.get(self.url + "hub/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError("vanilla hub not ready")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


#: how long a participant's browser waits for one page (browsers wait minutes; 30 s, the
#: first version of this client, cut off logins the hub was still answering under a storm)
PAGE_TIMEOUT = 120


def _spawn_refused_for_now(r: requests.Response) -> bool:
    """The login worked but its redirect to the spawn page got JupyterHub's 429 ("too many
    users trying to log in right now, try again in N seconds"): the participant is logged in
    and tries again later, as a person reloading that page would."""
    return r.status_code == 429 and "/hub/" in r.url


def form_login(s: requests.Session, hub_url: str, username: str, password: str) -> None:
    """DummyAuthenticator's login form (with its XSRF cookie), as a browser posts it."""
    s.get(urljoin(hub_url, "hub/login"), timeout=PAGE_TIMEOUT)
    xsrf = next((c.value for c in s.cookies if c.name == "_xsrf"), "")
    r = s.post(
        urljoin(hub_url, "hub/login"),
        data={"username": username, "password": password, "_xsrf": xsrf},
        timeout=PAGE_TIMEOUT,
    )
    if r.status_code >= 400 and not _spawn_refused_for_now(r):
        raise RuntimeError(f"login refused: HTTP {r.status_code}")


def platform_login(s: requests.Session, hub_url: str, username: str, password: str) -> None:
    """The real OIDC flow (embedded provider's login form), as a browser follows it."""
    try:
        oidc_login(hub_url, username, password, session=s, timeout=PAGE_TIMEOUT)
    except LoginRefused as exc:
        if not _spawn_refused_for_now(exc.response):
            raise


def wait_ready(s: requests.Session, hub_url: str, user: str, timeout: float) -> str | None:
    """Follow the spawn progress event stream until ready; return the server URL path, or
    None when no spawn is pending (the hub answers 400)."""
    r = s.get(
        urljoin(hub_url, f"hub/api/users/{quote(user)}/server/progress"),
        stream=True,
        timeout=timeout,
    )
    try:
        if r.status_code == 400:
            return None
        if r.status_code != 200:
            raise RuntimeError(f"progress: HTTP {r.status_code} {r.text[:200]}")
        for line in r.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                event = json.loads(line[5:])
                if event.get("failed"):
                    raise RuntimeError(event.get("message", "spawn failed"))
                if event.get("ready"):
                    return event["url"]
    finally:
        r.close()
    raise RuntimeError("progress stream ended before the server was ready")


#: the phases of a participant's arrival, in order (each one's seconds in ``phases``)
PHASES = ("login", "server", "token", "proxy", "kernel_start", "first_execution")


def participant(hub: str, hub_url: str, user: str, password: str, timeout: float) -> dict[str, Any]:
    """One participant's arrival: login → server → token → proxy → kernel → cell. ``login``,
    ``server`` and ``kernel`` are seconds since arrival (cumulative), ``phases`` each phase's
    own seconds, ``login_round_trips`` the HTTP requests of the login (redirects included)."""
    t0 = time.monotonic()
    out: dict[str, Any] = {"user": user, "ok": False, "phases": {}}
    phases = out["phases"]
    mark = t0
    stage = "login"

    def lap(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        phases[name] = now - mark
        mark = now

    s = requests.Session()
    trips = [0]
    s.hooks["response"].append(lambda r, *a, **k: trips.__setitem__(0, trips[0] + 1))
    try:
        (platform_login if hub == "platform" else form_login)(s, hub_url, user, password)
        out["login"] = time.monotonic() - t0
        out["login_round_trips"] = trips[0]
        lap("login")
        stage = "spawn"
        # the login's redirect already asked for the server (/hub/spawn), as in a browser;
        # ask explicitly only when nothing is pending (e.g. the hub said "too many spawns")
        # Under load the hub may answer "not starting" for a moment after that redirect (it
        # refreshes the user's tokens before marking the spawn pending): look again, as the
        # spawn page does, before asking for the server.
        deadline = time.monotonic() + timeout
        misses = 0
        while True:
            path = wait_ready(s, hub_url, user, timeout)
            if path:
                break
            misses += 1
            if time.monotonic() > deadline:
                raise RuntimeError("no server after the start timeout")
            if misses % 5:
                time.sleep(1)
                continue
            r = s.post(
                urljoin(hub_url, f"hub/api/users/{quote(user)}/server"),
                headers=xsrf_headers(s),
                timeout=PAGE_TIMEOUT,
            )
            out["spawn_posts"] = out.get("spawn_posts", 0) + 1
            if r.status_code not in (201, 202, 400, 429, 500):
                raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
            if r.status_code in (429, 500):  # too many spawns / the race above: look again
                time.sleep(2)
        out["not_starting"] = misses
        out["server"] = time.monotonic() - t0
        lap("server")
        stage = "token"
        r = s.post(
            urljoin(hub_url, f"hub/api/users/{quote(user)}/tokens"),
            json={"note": "storm", "expires_in": 3600},
            headers=xsrf_headers(s),
            timeout=PAGE_TIMEOUT,
        )
        r.raise_for_status()
        token = r.json()["token"]
        lap("token")
        stage = "proxy"  # the first request through the proxy (the server checks the token)
        server_url = urljoin(hub_url, path)
        r = requests.get(
            urljoin(server_url, "api/status"),
            headers={"Authorization": f"token {token}"},
            timeout=PAGE_TIMEOUT,
        )
        r.raise_for_status()
        lap("proxy")
        stage = "kernel"
        kid = start_kernel(server_url, token)
        lap("kernel_start")
        stage = "execute"
        result = run_in_kernel(server_url, token, CELL, timeout=timeout, kernel_id=kid)
        lap("first_execution")
        delete_kernel(server_url, token, kid)
        if result.strip() != "499500":
            raise RuntimeError(f"unexpected output {result!r}")
        out["kernel"] = time.monotonic() - t0
        out["ok"] = True
    except Exception as exc:
        out["error"] = f"{stage}: {type(exc).__name__}: {exc}"[:300]
    return out


def storm(
    hub: str, hub_url: str, creds: dict[str, str], rate: float, timeout: float
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def run(u: str, delay: float) -> None:
        time.sleep(delay)
        r = participant(hub, hub_url, u, creds[u], timeout)
        r["arrival"] = delay
        with lock:
            results.append(r)

    threads = [threading.Thread(target=run, args=(u, i / rate)) for i, u in enumerate(creds)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in results if r["ok"]]
    k = [r["kernel"] for r in ok]
    phases = {
        p: {
            "p50": pct([r["phases"][p] for r in ok], 0.5),
            "p95": pct([r["phases"][p] for r in ok], 0.95),
        }
        for p in PHASES
    }
    ready = [r["arrival"] + r["server"] for r in results if "server" in r]
    return {
        "phases": phases,
        "login_round_trips": pct([r["login_round_trips"] for r in ok], 0.5),
        "all_ready": max(ready) if len(ready) == len(results) and ready else float("nan"),
        "n": len(results),
        "ok": len(ok),
        "failed": len(results) - len(ok),
        "p50": pct(k, 0.5),
        "p95": pct(k, 0.95),
        "max": max(k) if k else float("nan"),
        "login_p50": pct([r["login"] for r in ok], 0.5),
        "server_p50": pct([r["server"] for r in ok], 0.5),
        "errors": sorted({r["error"] for r in results if not r["ok"]}),
        "not_starting": sum(1 for r in results if r.get("not_starting")),
    }


def measure_cold_start(api: HubAPI, hub_url: str, user: str, timeout: float) -> dict[str, float]:
    """One participant's server alone: start it, start a kernel and run the cell as a
    participant does, then read its processes' CPU seconds once they are idle (the hub's,
    the proxy's and the login's share are not in it). The server is stopped afterwards."""
    t = time.monotonic()
    result = prewarm(api, [user], parallel=1, retries=1, timeout=timeout, log=lambda _m: None)
    if result[user]["state"] != "ready":
        raise RuntimeError(f"probe server of {user}: {result[user]['error']}")
    server = (api.user(user) or {}).get("servers", {}).get("")
    pid = rate.server_pid(server)
    if pid is None:
        raise RuntimeError("the probe server's process is not on this machine")
    token = api.token_for(user, "storm probe", 600)
    url = urljoin(hub_url, server["url"])
    kid = start_kernel(url, token)
    run_in_kernel(url, token, CELL, timeout=timeout, kernel_id=kid)
    wall = time.monotonic() - t
    cpu, pss = rate.settle(pid)
    delete_kernel(url, token, kid)
    stop_all(api, [user])
    return {"wall_s": wall, "cpu_s": cpu, "pss_mib": pss}


def stop_all(api: HubAPI, users: list[str]) -> None:
    for u in users:
        api.stop(u)
    left = api.wait_stopped(users, timeout=120)
    if left:
        raise RuntimeError(f"servers still running: {left}")


DOCS_BEGIN = "<!-- bench-workshop:begin (generated by `make bench-workshop`; do not edit) -->"
DOCS_END = "<!-- bench-workshop:end -->"
RUN_TITLES = {
    "platform/cold": "platform, cold",
    "vanilla/cold": "vanilla JupyterHub, cold",
    "platform/prewarmed": "platform, pre-warmed",
    "vanilla/prewarmed": "vanilla JupyterHub, pre-warmed",
}


def _f(x: float, unit: str = " s") -> str:
    return "—" if x != x else f"{x:.2f}{unit}"  # NaN: not measured


def _commit() -> str:
    def git(*a: str) -> str:
        r = subprocess.run(
            ["git", "-C", str(REPO), *a], capture_output=True, text=True, check=False
        )
        return r.stdout.strip()

    rev = git("rev-parse", "--short", "HEAD") or "unknown"
    return rev + (
        " (with uncommitted changes)"
        if git("status", "--porcelain", "--untracked-files=no")
        else ""
    )


def breakdown_lines(key: str, s: dict[str, Any]) -> list[str]:
    ph = s["phases"]
    return [
        f"[{key}] per phase p50/p95: "
        + " | ".join(f"{p} {_f(ph[p]['p50'], '')}/{_f(ph[p]['p95'])}" for p in PHASES)
        + f" (login: {s['login_round_trips']:.0f} HTTP round trips)"
    ]


def markdown(report: dict[str, Any]) -> str:
    """The docs' block for this run (see the module docstring)."""
    runs = report["runs"]
    lines = [
        DOCS_BEGIN,
        "",
        f"Measured at commit {report['commit']} on {report['date']}: {report['users']} users "
        f"arriving at {report['rate']}/s, concurrent_spawn_limit {report['spawn_limit']}, "
        f"{report['cores']} cores, load average {report['load']} before the run and "
        f"{report.get('load_end', '?')} after it"
        + (", lean platform" if report["lean"] else ", full platform")
        + ". Time from arrival to a cell's result:",
        "",
        "| run | ok | p50 | p95 | max | login p50 | server p50 |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, title in RUN_TITLES.items():
        if key in runs:
            r = runs[key]
            lines.append(
                f"| {title} | {r['ok']}/{r['n']} | {_f(r['p50'])} | {_f(r['p95'])} | {_f(r['max'])} "
                f"| {_f(r['login_p50'])} | {_f(r['server_p50'])} |"
            )
    lines += ["", "Where the seconds go (p50 / p95 of each phase):", ""]
    lines += ["| run | " + " | ".join(PHASES) + " |", "|---|" + "---|" * len(PHASES)]
    for key, title in RUN_TITLES.items():
        if key in runs:
            ph = runs[key]["phases"]
            lines.append(
                f"| {title} | "
                + " | ".join(f"{_f(ph[p]['p50'], '')} / {_f(ph[p]['p95'])}" for p in PHASES)
                + " |"
            )
    lines.append("")
    for line in report["summary"]:
        lines.append(f"- {line}")
    lines += ["", DOCS_END]
    return "\n".join(lines)


def write_docs(path: Path, block: str) -> None:
    text = path.read_text()
    if DOCS_BEGIN not in text or DOCS_END not in text:
        raise SystemExit(f"{path}: the bench-workshop markers are missing")
    before, rest = text.split(DOCS_BEGIN, 1)
    _, after = rest.split(DOCS_END, 1)
    path.write_text(before + block + after)


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The ratios, the cold CPU bound and prewarm against the cold storm, in words."""
    runs, out = report["runs"], []
    for mode in ("cold", "prewarmed"):
        p, v = runs.get(f"platform/{mode}"), runs.get(f"vanilla/{mode}")
        if p and v and p["ok"] and v["ok"]:
            out.append(
                f"platform/vanilla {mode}: p50 x{p['p50'] / v['p50']:.2f}, p95 x{p['p95'] / v['p95']:.2f}, "
                f"max x{p['max'] / v['max']:.2f}"
            )
    for hub in ("platform", "vanilla"):
        probe, cold = report.get("probe", {}).get(hub), runs.get(f"{hub}/cold")
        if probe and cold and cold["ok"]:
            bound = report["users"] * probe["cpu_s"] / report["cores"]
            cold["cpu_bound"] = bound
            out.append(
                f"{hub} cold CPU bound: {report['users']} x {probe['cpu_s']:.2f} CPU-s per start "
                f"(server, kernel and cell measured alone: {probe['wall_s']:.1f} s wall) / "
                f"{report['cores']} cores = {bound:.1f} s; cold p95 {cold['p95']:.1f} s = "
                f"x{cold['p95'] / bound:.2f} the bound"
            )
    for hub in ("platform", "vanilla"):
        pw, cold = runs.get(f"{hub}/prewarm"), runs.get(f"{hub}/cold")
        if pw and cold:
            out.append(
                f"{hub} `workshop prewarm` of {report['users']}: {pw['ready']}/{report['users']} ready "
                f"in {pw['seconds']:.1f} s ({pw['parallel']}); the cold storm had all servers ready "
                f"after {_f(cold['all_ready'])}"
                + (
                    f" (prewarm x{pw['seconds'] / cold['all_ready']:.2f})"
                    if cold["all_ready"] == cold["all_ready"]
                    else ""
                )
            )
    cold, warm = runs.get("platform/cold"), runs.get("platform/prewarmed")
    if cold and warm and cold["ok"] and warm["ok"]:
        out.append(
            f"platform prewarmed/cold: p50 x{warm['p50'] / cold['p50']:.2f}, p95 x{warm['p95'] / cold['p95']:.2f}"
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=10)
    ap.add_argument("--rate", type=float, default=2.0, help="arrivals per second")
    ap.add_argument(
        "--spawn-limit", type=int, default=20, help="concurrent_spawn_limit of both hubs"
    )
    ap.add_argument("--start-timeout", type=int, default=300)
    ap.add_argument(
        "--http-timeout", type=int, default=60, help="Spawner.http_timeout of both hubs"
    )
    ap.add_argument(
        "--prewarm-parallel",
        type=int,
        default=None,
        help="spawns at once for the pre-warm (default: measured, as `workshop prewarm`)",
    )
    ap.add_argument(
        "--lean", action="store_true", help="platform without dask-gateway, EO-MQS, runs and sites"
    )
    ap.add_argument("--json", help="write the results here")
    ap.add_argument(
        "--no-cpu-bound",
        action="store_true",
        help="skip the probe start of each hub that the cold case's CPU bound needs (smoke runs)",
    )
    ap.add_argument(
        "--write-docs", help="replace the bench-workshop block of this markdown file (the docs)"
    )
    args = ap.parse_args()
    if os.getuid() != 0:
        print("error: run as root (both hubs use one system account per user)", file=sys.stderr)
        return 2

    cfg: dict[str, Any] = {
        "hub": {"concurrent_spawn_limit": args.spawn_limit},
        "spawner": {"start_timeout": args.start_timeout, "http_timeout": args.http_timeout},
        "culler": {"timeout": 3600},
        "workshop": {"account_digits": max(2, len(str(args.users + 1)))},
    }
    if args.lean:
        cfg.update(
            {
                "federation": {"embedded_sites": False},
                "eomqs": {"enabled": False},
                "runs": {"enabled": False},
                "dask_gateway": {"enabled": False},
            }
        )
    platform = LocalStack(config=cfg, ready_timeout=300)
    vanilla = VanillaHub(args.spawn_limit, args.start_timeout, args.http_timeout)
    report: dict[str, Any] = {
        "users": args.users,
        "rate": args.rate,
        "spawn_limit": args.spawn_limit,
        "cores": os.cpu_count(),
        "lean": args.lean,
        "commit": _commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "runs": {},
        "probe": {},
    }
    try:
        t = time.monotonic()
        platform.start()
        print(f"platform up in {time.monotonic() - t:.1f}s at {platform.url}", flush=True)
        t = time.monotonic()
        vanilla.start()
        print(f"vanilla hub up in {time.monotonic() - t:.1f}s at {vanilla.url}", flush=True)

        name = f"storm{secrets.token_hex(2)}"
        admin = platform.api_token("demo-admin", note="storm bench")
        rc = subprocess.run(
            [
                sys.executable,
                "-m",
                "cscale_extensions.cli",
                "workshop",
                "create",
                name,
                "--users",
                str(args.users + 1),  # the last one is the probe of the CPU bound
                "--data-dir",
                str(platform.state_dir),
                "--token",
                admin,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if rc.returncode:
            raise RuntimeError(f"workshop create failed: {rc.stdout}{rc.stderr}")
        rows = list(
            csv.DictReader((platform.state_dir / "workshops" / name / "accounts.csv").open())
        )
        hubs = {
            "platform": (
                platform.url,
                HubAPI(platform.url, admin),
                {r["username"]: r["password"] for r in rows[:-1]},
                rows[-1]["username"],
            ),
            "vanilla": (
                vanilla.url,
                HubAPI(vanilla.url, vanilla.token),
                {f"van{name[5:]}-{i:02d}": "any" for i in range(1, args.users + 1)},
                f"van{name[5:]}-probe",
            ),
        }
        for mode in ("cold", "prewarmed"):
            for hub, (url, api, creds, probe) in hubs.items():
                users = list(creds)
                if mode == "cold" and not args.no_cpu_bound:
                    m = measure_cold_start(api, url, probe, args.start_timeout)
                    report["probe"][hub] = m
                    print(
                        f"[{hub}] one start alone: {m['wall_s']:.1f}s, {m['cpu_s']:.2f} CPU-s, "
                        f"{m['pss_mib']:.0f} MiB",
                        flush=True,
                    )
                if mode == "prewarmed":
                    t = time.monotonic()
                    lines: list[str] = []
                    probe = report["probe"].get(
                        hub
                    )  # the measured capacity, as `workshop capacity`'s
                    known = (
                        rate.StartCost(probe["wall_s"], probe["cpu_s"], probe["pss_mib"])
                        if probe
                        else None
                    )
                    pw = prewarm(
                        api,
                        users,
                        parallel=args.prewarm_parallel,
                        known_cost=known,
                        retries=2,
                        timeout=args.start_timeout,
                        concurrent_spawn_limit=args.spawn_limit,
                        log=lines.append,
                    )
                    took = time.monotonic() - t
                    ready = sum(1 for r in pw.values() if r["state"] == "ready")
                    how = next((x.strip() for x in lines if "at a time" in x), "")
                    if args.prewarm_parallel:
                        how = f"{args.prewarm_parallel} at a time"
                    print(
                        f"[{hub}] prewarm: {ready}/{len(users)} ready in {took:.1f}s ({how})",
                        flush=True,
                    )
                    report["runs"][f"{hub}/prewarm"] = {
                        "seconds": took,
                        "ready": ready,
                        "parallel": how,
                    }
                t = time.monotonic()
                s = summarise(storm(hub, url, creds, args.rate, args.start_timeout))
                s["wall"] = time.monotonic() - t
                report["runs"][f"{hub}/{mode}"] = s
                print(
                    f"[{hub}/{mode}] {s['ok']}/{s['n']} ok; ready kernel p50 {s['p50']:.2f}s p95 "
                    f"{s['p95']:.2f}s max {s['max']:.2f}s (login p50 {s['login_p50']:.2f}s, server p50 "
                    f"{s['server_p50']:.2f}s; {s['not_starting']} saw 'not starting' after login)"
                    + (f"; errors: {s['errors']}" if s["errors"] else ""),
                    flush=True,
                )
                for line in breakdown_lines(f"{hub}/{mode}", s):
                    print(line, flush=True)
                stop_all(api, users)
    finally:
        leftovers = platform.stop()
        vanilla.stop()
        if platform.data_dir:
            shutil.rmtree(platform.data_dir, ignore_errors=True)
        if leftovers:
            print(f"warning: platform processes left: {leftovers}", file=sys.stderr)

    print(
        f"\n{args.users} users arriving at {args.rate}/s, concurrent_spawn_limit {args.spawn_limit}, "
        f"{os.cpu_count()} cores" + (" (lean platform)" if args.lean else "")
    )
    print(f"{'run':<20} {'ok':>5} {'p50 s':>7} {'p95 s':>7} {'max s':>7}")
    for key, s in report["runs"].items():
        if "p50" in s:
            print(
                f"{key:<20} {s['ok']:>2}/{s['n']:<2} {s['p50']:>7.2f} {s['p95']:>7.2f} {s['max']:>7.2f}"
            )
    for key, s in report["runs"].items():
        if "phases" in s:
            for line in breakdown_lines(key, s):
                print(line)
    report["load_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    report["summary"] = summary_lines(report)
    for line in report["summary"]:
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    if args.write_docs:
        write_docs(Path(args.write_docs), markdown(report))
        print(f"wrote the figures into {args.write_docs}")
    failed = sum(s.get("failed", 0) for s in report["runs"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
