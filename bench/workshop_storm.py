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

Prints p50 / p95 / max of the time to a ready kernel, failures, and the platform/vanilla
ratios. Needs root (system accounts). Usage:

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

from cscale_extensions.kernelclient import run_in_kernel
from cscale_extensions.localstack.launcher import REPO_ROOT as REPO
from cscale_extensions.net import free_port
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


def form_login(hub_url: str, username: str, password: str) -> requests.Session:
    """DummyAuthenticator's login form (with its XSRF cookie), as a browser posts it."""
    s = requests.Session()
    s.get(urljoin(hub_url, "hub/login"), timeout=PAGE_TIMEOUT)
    xsrf = next((c.value for c in s.cookies if c.name == "_xsrf"), "")
    r = s.post(
        urljoin(hub_url, "hub/login"),
        data={"username": username, "password": password, "_xsrf": xsrf},
        timeout=PAGE_TIMEOUT,
    )
    if r.status_code >= 400 and not _spawn_refused_for_now(r):
        raise RuntimeError(f"login refused: HTTP {r.status_code}")
    return s


def platform_login(hub_url: str, username: str, password: str) -> requests.Session:
    """The real OIDC flow (embedded provider's login form), as a browser follows it."""
    s = requests.Session()
    try:
        oidc_login(hub_url, username, password, session=s, timeout=PAGE_TIMEOUT)
    except LoginRefused as exc:
        if not _spawn_refused_for_now(exc.response):
            raise
    return s


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


def participant(hub: str, hub_url: str, user: str, password: str, timeout: float) -> dict[str, Any]:
    """One participant's arrival: login → server → token → kernel → cell. Times in seconds."""
    t0 = time.monotonic()
    out: dict[str, Any] = {"user": user, "ok": False}
    stage = "login"
    try:
        s = (
            platform_login(hub_url, user, password)
            if hub == "platform"
            else form_login(hub_url, user, password)
        )
        out["login"] = time.monotonic() - t0
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
        stage = "kernel"
        r = s.post(
            urljoin(hub_url, f"hub/api/users/{quote(user)}/tokens"),
            json={"note": "storm", "expires_in": 3600},
            headers=xsrf_headers(s),
            timeout=PAGE_TIMEOUT,
        )
        r.raise_for_status()
        server_url = urljoin(hub_url, path)
        result = run_in_kernel(server_url, r.json()["token"], CELL, timeout=timeout)
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
    return {
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


def stop_all(api: HubAPI, users: list[str]) -> None:
    for u in users:
        api.stop(u)
    left = api.wait_stopped(users, timeout=120)
    if left:
        raise RuntimeError(f"servers still running: {left}")


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
    ap.add_argument("--prewarm-parallel", type=int, default=4)
    ap.add_argument(
        "--lean", action="store_true", help="platform without dask-gateway, EO-MQS, runs and sites"
    )
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if os.getuid() != 0:
        print("error: run as root (both hubs use one system account per user)", file=sys.stderr)
        return 2

    cfg: dict[str, Any] = {
        "hub": {"concurrent_spawn_limit": args.spawn_limit},
        "spawner": {"start_timeout": args.start_timeout, "http_timeout": args.http_timeout},
        "culler": {"timeout": 3600},
        "workshop": {"account_digits": max(2, len(str(args.users)))},
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
        "runs": {},
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
                str(args.users),
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
        rows = csv.DictReader((platform.state_dir / "workshops" / name / "accounts.csv").open())
        hubs = {
            "platform": (
                platform.url,
                HubAPI(platform.url, admin),
                {r["username"]: r["password"] for r in rows},
            ),
            "vanilla": (
                vanilla.url,
                HubAPI(vanilla.url, vanilla.token),
                {f"van{name[5:]}-{i:02d}": "any" for i in range(1, args.users + 1)},
            ),
        }
        for mode in ("cold", "prewarmed"):
            for hub, (url, api, creds) in hubs.items():
                users = list(creds)
                if mode == "prewarmed":
                    t = time.monotonic()
                    pw = prewarm(
                        api,
                        users,
                        parallel=args.prewarm_parallel,
                        retries=2,
                        timeout=args.start_timeout,
                        log=lambda _m: None,
                    )
                    took = time.monotonic() - t
                    ready = sum(1 for r in pw.values() if r["state"] == "ready")
                    print(f"[{hub}] prewarm: {ready}/{len(users)} ready in {took:.1f}s", flush=True)
                    report["runs"][f"{hub}/prewarm"] = {"seconds": took, "ready": ready}
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
    for mode in ("cold", "prewarmed"):
        p, v = report["runs"][f"platform/{mode}"], report["runs"][f"vanilla/{mode}"]
        if v["ok"] and p["ok"]:
            print(
                f"platform/vanilla {mode}: p50 x{p['p50'] / v['p50']:.2f}, p95 x{p['p95'] / v['p95']:.2f}, "
                f"max x{p['max'] / v['max']:.2f}"
            )
    cold, warm = report["runs"]["platform/cold"], report["runs"]["platform/prewarmed"]
    if cold["ok"] and warm["ok"]:
        print(
            f"platform prewarmed/cold: p50 x{warm['p50'] / cold['p50']:.2f}, p95 x{warm['p95'] / cold['p95']:.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    failed = sum(s.get("failed", 0) for s in report["runs"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
