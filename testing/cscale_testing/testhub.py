"""A real, throw-away JupyterHub with the runs service, for tests and benchmarks.

JupyterHub (DummyAuthenticator, the platform's SameUserSpawner, configurable-http-proxy
from node_modules) runs as a subprocess on free ports with its database in a directory of
the caller. The runs service is registered as an *external* service (url + api_token) and
started by :class:`MiniHub` itself, so it can be killed and restarted (the hub does not
restart managed services). :meth:`MiniHub.stop` stops everything it started, including
detached executors (found by a marker in their environment).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import requests

from cscale_extensions.net import free_port, http_ready, wait_for
from cscale_extensions.services.runs import role_spec

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
CHP = REPO / "node_modules" / ".bin" / "configurable-http-proxy"
MARKER = "CSCALE_RUNS_TEST_ID"
USERS = ("alice", "bob", "carol", "dave", "erin", "root-admin")

HUB_CONFIG = """
import json
cfg = json.loads({cfg!r})
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = cfg["port"]
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = cfg["hub_port"]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:%d" % cfg["proxy_api_port"]
c.ConfigurableHTTPProxy.command = [cfg["chp"]]
c.ConfigurableHTTPProxy.auth_token = cfg["proxy_token"]
c.JupyterHub.db_url = "sqlite:///" + cfg["dir"] + "/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = cfg["dir"] + "/cookie_secret"
c.JupyterHub.pid_file = cfg["dir"] + "/jupyterhub.pid"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {{"root-admin"}}
c.JupyterHub.spawner_class = "cscale_extensions.hub.spawner.SameUserSpawner"
c.SameUserSpawner.home_dir_template = cfg["dir"] + "/homes/{{username}}"
c.Spawner.cmd = [cfg["singleuser"]]
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.Spawner.environment = {{cfg["marker"]: cfg["id"], "PATH": cfg["path"]}}
c.SameUserSpawner.platform_env = {{"CSCALE_RUNS_URL": cfg["runs_url"]}}
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = 3
c.JupyterHub.cleanup_servers = True
c.JupyterHub.services = [
    {{"name": "runs", "url": "http://127.0.0.1:%d" % cfg["runs_port"],
      "api_token": cfg["runs_token"], "display": False}},
    {{"name": "test-admin", "api_token": cfg["admin_token"]}},
]
access = "access:services!service=runs"
c.JupyterHub.load_roles = [
    cfg["runs_role"],
    {{"name": "test-admin", "scopes": ["admin:users", "admin:servers", "tokens"],
      "services": ["test-admin"]}},
    {{"name": "user", "scopes": ["self", access]}},
    {{"name": "server", "scopes": ["users:activity!user", "access:servers!server",
      "read:users:name!user", access]}},
]
"""


class MiniHub:
    """A JupyterHub on free ports and the runs service as an external, restartable process."""

    def __init__(self, base: Path):
        self.dir = base
        self.id = secrets.token_hex(6)
        self.port, self.hub_port = free_port(), free_port()
        self.proxy_api_port, self.runs_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.api_url = f"http://127.0.0.1:{self.hub_port}/hub/api"
        self.runs_url = self.url + "services/runs/"
        self.runs_token = secrets.token_hex(16)
        self.admin_token = secrets.token_hex(16)
        self.runs_state = base / "runs-state"
        self.hub: subprocess.Popen | None = None
        self.service: subprocess.Popen | None = None
        self.settings = {
            "poll_interval": 0.5,
            "heartbeat_timeout": 15,
            "max_concurrent_per_user": 4,
            "server_start_timeout": 120,
            "min_schedule_interval": 1,  # the schedule test fires every 2 s
        }

    def start(self) -> None:
        cfg = {
            "port": self.port,
            "hub_port": self.hub_port,
            "proxy_api_port": self.proxy_api_port,
            "chp": str(CHP),
            "proxy_token": secrets.token_hex(16),
            "dir": str(self.dir),
            "singleuser": str(VENV_BIN / "jupyterhub-singleuser"),
            "marker": MARKER,
            "id": self.id,
            "path": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
            "runs_url": self.runs_url,
            "runs_port": self.runs_port,
            "runs_token": self.runs_token,
            "admin_token": self.admin_token,
            "runs_role": role_spec(),
        }
        (self.dir / "jupyterhub_config.py").write_text(HUB_CONFIG.format(cfg=json.dumps(cfg)))
        self.start_service()  # first, so the hub finds it up and routes to it at once
        log = open(self.dir / "hub.log", "ab")  # noqa: SIM115 (owned by the child)
        self.hub = subprocess.Popen(
            [str(VENV_BIN / "jupyterhub"), "-f", str(self.dir / "jupyterhub_config.py")],
            cwd=self.dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, MARKER: self.id},
        )
        if not wait_for(lambda: http_ready(self.api_url + "/"), 60, 0.2):
            raise RuntimeError("hub did not start:\n" + self.tail("hub.log"))
        for user in USERS:
            self.admin("POST", f"/users/{user}")
        if not wait_for(lambda: requests.get(self.runs_url + "health", timeout=5).ok, 60, 0.3):
            raise RuntimeError("no proxy route to the runs service:\n" + self.tail("hub.log"))

    def admin(self, method: str, path: str, **kw) -> requests.Response:
        r = requests.request(
            method,
            self.api_url + path,
            timeout=30,
            headers={"Authorization": f"token {self.admin_token}"},
            **kw,
        )
        if r.status_code >= 400 and r.status_code != 409:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text}")
        return r

    def token(self, user: str, scopes: list[str] | None = None) -> str:
        body = {"note": "runs test"} | ({"scopes": scopes} if scopes is not None else {})
        return self.admin("POST", f"/users/{user}/tokens", json=body).json()["token"]

    def start_service(self, ready: bool = True) -> None:
        """Start the runs service; wait until it is healthy (``ready``) or, when its database
        is meant to be down, until it answers HTTP at all."""
        env = {
            **os.environ,
            MARKER: self.id,
            "JUPYTERHUB_API_TOKEN": self.runs_token,
            "JUPYTERHUB_API_URL": self.api_url,
            "JUPYTERHUB_SERVICE_NAME": "runs",
            "JUPYTERHUB_SERVICE_PREFIX": "/services/runs/",
            "CSCALE_RUNS_SETTINGS": json.dumps(self.settings),
        }
        log = open(self.dir / "runs.log", "ab")  # noqa: SIM115
        self.service = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cscale_extensions.services.runs",
                "--port",
                str(self.runs_port),
                "--state-dir",
                str(self.runs_state),
                "--proxy-url",
                self.url,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        health = f"http://127.0.0.1:{self.runs_port}/services/runs/health"
        if not wait_for(lambda: http_ready(health, below=500 if ready else 600), 60, 0.2):
            raise RuntimeError("runs service did not start:\n" + self.tail("runs.log"))

    def stop_service(self, sig: int = signal.SIGTERM) -> None:
        if self.service and self.service.poll() is None:
            self.service.send_signal(sig)
            try:
                self.service.wait(15)
            except subprocess.TimeoutExpired:
                self.service.kill()
                self.service.wait()
        self.service = None

    def tail(self, name: str, n: int = 40) -> str:
        try:
            return "\n".join((self.dir / name).read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        self.stop_service()
        if self.hub and self.hub.poll() is None:
            self.hub.terminate()
            try:
                self.hub.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.hub.pid, signal.SIGKILL)
                self.hub.wait()
        self._kill_leftovers()

    def _kill_leftovers(self) -> None:
        """Processes this hub started that outlive it (detached executors and their kernels)."""
        for proc in psutil.process_iter():
            if proc.pid == os.getpid():
                continue
            try:
                if proc.environ().get(MARKER) == self.id:
                    proc.kill()
            except (psutil.Error, OSError):
                pass


class Runs:
    """A user's view of the runs API over real HTTP through the proxy."""

    def __init__(self, url: str, token: str):
        self.url = url
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"token {token}"

    def call(self, method: str, path: str, **kw) -> requests.Response:
        return self.http.request(method, self.url + path, timeout=60, **kw)

    def ok(self, method: str, path: str, **kw):
        r = self.call(method, path, **kw)
        assert r.status_code < 400, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content and "json" in r.headers.get("content-type", "") else r

    def wait(
        self,
        run_id: str,
        states=("succeeded", "failed", "cancelled", "timeout", "lost"),
        timeout: float = 240,
    ) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.ok("GET", f"runs/{run_id}")
            if run["state"] in states:
                return run
            time.sleep(0.5)
        raise AssertionError(f"run {run_id} still {run['state']} after {timeout}s: {run}")


def notebook(*sources: str, params: str = "x = 1") -> dict:
    """A tiny notebook: a tagged parameters cell, then one code cell per source."""
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell] + [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return json.loads(nbformat.writes(nb))
