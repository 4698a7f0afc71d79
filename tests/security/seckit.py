"""Helpers of the security tests: the IdP front, the test stack, login flows, process control.

The stack (``cscale-hub up``) uses an external issuer: the embedded OIDC provider (node),
started here with its issuer set to the URL of :class:`IdpFront`, a transparent HTTP reverse
proxy in front of it. The front forwards every request unchanged unless a test sets
``tamper``: then it rewrites the ``id_token`` of token responses, which is how the tests
show the hub refusing forged ID tokens over the real login flow.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import signal
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html import unescape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import psutil
import requests
from cscale_testing import FORM_ACTION, LocalStack, server_url, xsrf_headers

from cscale_extensions import config as settings
from cscale_extensions.localstack.oidc import accounts, embedded
from cscale_extensions.localstack.supervisor import Supervisor
from cscale_extensions.net import free_port, wait_for
from cscale_extensions.privatefiles import write_json_private
from cscale_extensions.processes import alive

CLIENT_ID = "cscale-hub"
VO = "vo.cscale.eu"
ACCESS_TTL = 20  # seconds: the token-expiry tests wait for it
REFRESH_AGE = 10  # the hub re-checks tokens at most this often (the minimum allowed)
NAMED_LIMIT = 1
CLUSTER_LIMIT = 1
RUNS_LIMIT = 3  # runs.max_queued_per_user of the security stack
MEM_LIMIT = "2G"  # spawner.mem_limit: RLIMIT_DATA of every user process
MAX_PROCESSES = 512  # spawner.limits.max_processes: RLIMIT_NPROC of every user


# --------------------------------------------------------------------------- the IdP front


class IdpFront:
    """HTTP reverse proxy on a free port, in front of the OIDC provider; can rewrite id_tokens."""

    HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}

    def __init__(self, backend_port: int):
        self.backend_port = backend_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tamper: Callable[[str], str | None] | None = None
        self.tampered = 0
        self.fail: dict[str, int] = {}  # path -> status the front answers instead of the IdP
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                status = front.fail.get(self.path.split("?")[0])
                if status:
                    data = b'{"error": "server_error"}'
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in front.HOP}
                conn = http.client.HTTPConnection("127.0.0.1", front.backend_port, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    out_headers = [
                        (k, v) for k, v in resp.getheaders() if k.lower() not in front.HOP
                    ]
                    status = resp.status
                finally:
                    conn.close()
                if self.command == "POST" and self.path.split("?")[0] == "/token" and status == 200:
                    data = front._rewrite(data)
                self.send_response(status)
                for k, v in out_headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_HEAD = do_DELETE = _forward  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _rewrite(self, data: bytes) -> bytes:
        tamper = self.tamper
        if tamper is None:
            return data
        doc = json.loads(data)
        if "id_token" in doc:
            forged = tamper(doc["id_token"])
            if forged is None:
                doc.pop("id_token")
            else:
                doc["id_token"] = forged
            self.tampered += 1
        return json.dumps(doc).encode()

    @contextlib.contextmanager
    def tampering(self, fn: Callable[[str], str | None]) -> Iterator[None]:
        self.tamper, self.tampered = fn, 0
        try:
            yield
        finally:
            self.tamper = None

    @contextlib.contextmanager
    def failing(self, path: str, status: int) -> Iterator[None]:
        """Answer ``status`` for ``path`` instead of forwarding it, for the block."""
        self.fail[path] = status
        try:
            yield
        finally:
            self.fail.pop(path, None)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------- the stack


@dataclass
class Idp:
    """The embedded provider (node) behind :class:`IdpFront`; its issuer is the front's URL."""

    data_dir: Path
    supervisor: Supervisor
    spec: Any
    front: IdpFront
    client_secret: str
    config_file: Path

    @property
    def issuer(self) -> str:
        return self.front.url

    @property
    def accounts_file(self) -> Path:
        return self.data_dir / "oidc" / "accounts.json"

    @property
    def signing_jwk(self) -> dict[str, Any]:
        return json.loads((self.data_dir / "oidc" / "jwks.json").read_text())["keys"][0]

    def discovery(self) -> dict[str, Any]:
        return requests.get(self.issuer + "/.well-known/openid-configuration", timeout=10).json()

    def register_redirect(self, redirect_uri: str) -> None:
        """Point the client's redirect URI at the hub and restart the provider (state persists)."""
        cfg = json.loads(self.config_file.read_text())
        cfg["clients"][0]["redirect_uris"] = [redirect_uri]
        base = redirect_uri.rsplit("/hub/", 1)[0]
        cfg["clients"][0]["post_logout_redirect_uris"] = [base + "/hub/", base + "/hub/login"]
        write_json_private(self.config_file, cfg)
        self.supervisor.stop()
        self.supervisor.start(self.spec)

    def revoke(self, token: str, hint: str = "refresh_token") -> int:
        r = requests.post(
            self.issuer + "/token/revocation",
            data={"token": token, "token_type_hint": hint},
            auth=(CLIENT_ID, self.client_secret),
            timeout=10,
        )
        return r.status_code


def start_idp(base: Path) -> Idp:
    cfg = settings.deep_merge(
        settings.defaults(),
        {
            "embedded_oidc": {"access_token_ttl": ACCESS_TTL, "demo_accounts": False},
        },
    )
    secret = secrets.token_hex(16)
    spec, _ = embedded.provider_process(
        cfg, base, client_secret=secret, redirect_uri="http://127.0.0.1:9/hub/oauth_callback"
    )
    config_file = base / "oidc" / "provider.json"
    provider_cfg = json.loads(config_file.read_text())
    front = IdpFront(provider_cfg["port"])
    provider_cfg["issuer"] = front.url  # the provider names the front as its issuer
    write_json_private(config_file, provider_cfg)
    spec.ready_url = f"http://127.0.0.1:{provider_cfg['port']}/.well-known/openid-configuration"
    sup = Supervisor(base / "logs", stack_id=f"sec-idp-{uuid.uuid4().hex[:8]}")
    try:
        sup.start(spec)
    except BaseException:
        sup.stop()
        front.close()
        raise
    return Idp(base, sup, spec, front, secret, config_file)


@dataclass
class SecStack:
    """The security test stack: hub (``cscale-hub up``) + the fronted IdP + test accounts."""

    stack: LocalStack
    idp: Idp
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.stack.url

    def add_user(self, name: str, entitlements: list[str] | None = None, **kw: Any) -> str:
        """Create (once) an account at the IdP; returns its password."""
        if name not in self.passwords:
            self.passwords[name] = accounts.add_account(
                self.idp.accounts_file, name, entitlements=entitlements, **kw
            )
        return self.passwords[name]

    def member(self, name: str, role: str | None = None) -> str:
        ents = [accounts.entitlement(VO)]
        if role:
            ents.append(accounts.entitlement(VO, role))
        return self.add_user(name, ents)

    def login(self, name: str, password: str | None = None) -> requests.Session:
        s, r = login_flow(self.url, name, password or self.passwords[name])
        if not logged_in(s):
            raise AssertionError(
                f"login of {name} failed: HTTP {r.status_code} at {r.url}: {r.text[:300]}"
            )
        return s

    def token(self, name: str, scopes: list[str] | None = None) -> str:
        s = self.login(name)
        body: dict[str, Any] = {"note": "security test", "expires_in": 3600}
        if scopes is not None:
            body["scopes"] = scopes
        r = s.post(
            self.url + f"hub/api/users/{name}/tokens",
            json=body,
            headers=xsrf_headers(s),
            timeout=30,
        )
        assert r.status_code == 201, r.text
        return r.json()["token"]

    def api(self, token: str) -> requests.Session:
        return self.stack.api(token)

    def admin_token(self) -> str:
        """The operator's token (service cscale-admin), as the workshop tools use it."""
        return (self.stack.state_dir / "secrets" / "admin_api_token").read_text().strip()

    def start_server(self, token: str, name: str, server: str = "") -> str:
        model = self.stack.start_server(token, name, server)
        return server_url(self.url, model["url"])


def login_flow(
    hub_url: str,
    username: str,
    password: str,
    session: requests.Session | None = None,
    stop_at_callback: bool = False,
) -> tuple[requests.Session, requests.Response]:
    """The browser's OIDC login; returns the session and the last response (never raises).

    With ``stop_at_callback`` the redirect to the hub's callback is not followed: the last
    response is that redirect (its Location holds ``code`` and ``state``).
    """
    s = session or requests.Session()
    r = s.get(urljoin(hub_url, "hub/oauth_login"), timeout=30)
    m = FORM_ACTION.search(r.text)
    if not m:
        return s, r
    r = s.post(
        urljoin(r.url, unescape(m.group(1))),
        data={"username": username, "password": password},
        timeout=30,
        allow_redirects=False,
    )
    for _ in range(10):
        loc = r.headers.get("Location")
        if not (r.is_redirect and loc):
            break
        nxt = urljoin(r.url, loc)
        if stop_at_callback and "/hub/oauth_callback" in nxt:
            return s, r
        r = s.get(nxt, timeout=30, allow_redirects=False)
    return s, r


def logged_in(s: requests.Session) -> bool:
    return any(c.name == "jupyterhub-hub-login" for c in s.cookies)


def assert_clean_page(r: requests.Response) -> None:
    """No server error and no traceback in what a user sees."""
    assert r.status_code < 500, f"HTTP {r.status_code} at {r.url}: {r.text[:500]}"
    assert "Traceback" not in r.text, f"a traceback is shown at {r.url}"


# --------------------------------------------------------------------------- process control


def hub_pid(stack: LocalStack) -> int:
    return int((stack.state_dir / "hub" / "jupyterhub.pid").read_text().strip())


def child_pid(stack: LocalStack, argv_part: str) -> int:
    """PID of the launcher's direct child whose command line contains ``argv_part``."""
    return stack.child_pid(argv_part)


@dataclass
class Replaced:
    """A stack process this test restarted itself (argv, env and cwd copied from the original)."""

    proc: subprocess.Popen

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def restart_process(
    pid: int, sig: int, log_file: Path, ready: Callable[[], bool], timeout: float = 120
) -> Replaced:
    """Kill ``pid`` with ``sig``, wait until it is gone, start it again the same way."""
    old = psutil.Process(pid)
    argv, env, cwd = old.cmdline(), old.environ(), old.cwd()
    os.kill(pid, sig)
    assert wait_for(lambda: not alive(pid), 60), f"{pid} did not exit"
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    replaced = Replaced(proc)
    if (
        not wait_for(lambda: proc.poll() is not None or ready(), timeout, 0.5)
        or proc.poll() is not None
    ):
        replaced.stop()
        raise AssertionError(f"the restarted process {argv[0]!r} did not come back; see {log_file}")
    return replaced


@contextlib.contextmanager
def launcher_paused(stack: LocalStack) -> Iterator[None]:
    """Pause ``cscale-hub up`` (SIGSTOP) while the test kills and restarts a child itself, as
    an outside process manager would: the launcher's own restart of an exited child
    (``platform.restart_limit``, tested in tests/hub/test_restart_policy.py) would race it.
    On resume it finds its original child gone — so this is only for the last tests of a
    stack."""
    os.kill(stack.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(stack.proc.pid, signal.SIGCONT)
