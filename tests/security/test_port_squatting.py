"""A user who binds the address of another user's dead server gets none of its requests.

The victim's server is killed (as the OOM killer would: SIGKILL). The squatter, another
account of the hub, has a listener (as her own uid) waiting to bind the victim's address the
moment it is free; it serves a page and logs every request it gets, headers included, with
TLS and her *own* server's certificate and key when the victim's route is HTTPS (what she
can read from her own server's environment), plain HTTP otherwise. The victim keeps using her
browser tab (cookies included, among them ``jupyterhub-user-<victim>`` with her OAuth token).

Before (plain HTTP to 127.0.0.1 ports, the hub polling servers every 30 s): the proxy routed
to the dead server's port for up to 30 s and the squatter logged the victim's requests and
cookies. Now the route is removed as soon as the process is gone, and a route that is still
there (the hub not yet told, or down) fails closed: the proxy verifies the server's
certificate (its account's own address, signed by the platform's CA) and sends nothing to a
squatter.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import requests

rel = pytest.mark.reliability
pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="one account per user needs root")

MARK = "SQUATTED-PAGE"
LISTENER = r"""
import http.server, json, ssl, sys, time
host, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
class Log(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        print(json.dumps({"path": self.path, "headers": dict(self.headers)}), flush=True)
        body = b"SQUATTED-PAGE"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET
    def log_message(self, *args):
        pass
deadline = time.monotonic() + 20
while True:
    try:
        srv = http.server.ThreadingHTTPServer((host, port), Log)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.01)
if cert:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("LISTENING", flush=True)
srv.serve_forever()
"""


def _proxy(sec) -> tuple[str, dict[str, str]]:
    cfg = sec.stack.cfg
    token = (sec.stack.state_dir / "secrets" / "proxy_auth_token").read_text().strip()
    return (f"http://127.0.0.1:{cfg['hub']['proxy_api_port']}/api/routes",
            {"Authorization": f"token {token}"})


def _routes_of(sec, user: str) -> dict[str, dict]:
    api, headers = _proxy(sec)
    routes = requests.get(api, headers=headers, timeout=10).json()
    return {spec: r for spec, r in routes.items() if r.get("user") == user}


def _server_process(sec, user: str) -> psutil.Process:
    uid = pwd.getpwnam(user).pw_uid
    stack = sec.stack.stack_id.encode()
    for proc in psutil.process_iter(["uids", "cmdline"]):
        if not proc.info["uids"] or proc.info["uids"].real != uid:
            continue
        if "jupyterhub-singleuser" not in " ".join(proc.info["cmdline"] or []):
            continue
        with open(f"/proc/{proc.pid}/environ", "rb") as f:
            if b"CSCALE_STACK_ID=" + stack in f.read():
                return proc
    raise AssertionError(f"no server process of {user}")


def _own_tls(proc: psutil.Process) -> tuple[str, str]:
    """The certificate and key the squatter's own server uses (her kernel sees them in its
    environment): her best attempt at answering TLS."""
    env = proc.environ()
    return env.get("JUPYTERHUB_SSL_CERTFILE", ""), env.get("JUPYTERHUB_SSL_KEYFILE", "")


@contextmanager
def squatting(user: str, target: str, tls: tuple[str, str]) -> Iterator[list[str]]:
    """A listener of ``user`` (her uid, gid and groups) on ``target``'s address; yields the
    list of request lines it logged (filled in when the block ends)."""
    entry = pwd.getpwnam(user)
    parts = urlsplit(target)
    cert, key = tls if parts.scheme == "https" else ("", "")
    proc = subprocess.Popen(
        [sys.executable, "-I", "-c", LISTENER, parts.hostname, str(parts.port), cert, key],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
        user=entry.pw_uid, group=entry.pw_gid,
        extra_groups=os.getgrouplist(entry.pw_name, entry.pw_gid),
        env={"PATH": "/usr/bin:/bin", "HOME": "/"}, start_new_session=True,
    )
    logged: list[str] = []
    reader = threading.Thread(target=lambda: logged.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        yield logged
    finally:
        proc.kill()
        proc.wait(10)
        reader.join(10)
        err = proc.stderr.read()
        assert "Traceback" not in err or "OSError" not in err, err[-500:]


def _victim_tab(sec, user: str) -> tuple[requests.Session, str]:
    """The victim signed in, her server running and opened in her browser (its cookie set)."""
    sec.member(user)
    url = sec.start_server(sec.token(user), user)
    browser = sec.login(user)
    r = browser.get(url + "lab", timeout=60)
    assert r.status_code == 200, (r.status_code, r.url)
    assert any(c.name.startswith("jupyterhub-user-") for c in browser.cookies), browser.cookies
    assert browser.get(url + "api/status", timeout=30).status_code == 200
    return browser, url


def _wait_listening(logged: list[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while "LISTENING\n" not in logged:
        assert time.monotonic() < deadline, "the squatter's listener did not bind"
        time.sleep(0.05)


def _wait_route_gone(sec, user: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _routes_of(sec, user):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@rel(
    injected="the victim's server is SIGKILLed while another user waits (as her own uid) to bind "
    "its address with a header-logging server (TLS with her own server's certificate when the "
    "route is https); the victim keeps using her tab for 8 s",
    expected="the squatter receives no request (no cookie of the victim); the proxy's route "
    "to the dead server is gone within 3 s; the victim gets the hub's pages, never the "
    "squatter's",
)
def test_a_squatter_on_a_dead_servers_address_gets_none_of_its_requests(sec):
    victim, squatter = "sec-sqvictim", "sec-squatter"
    browser, url = _victim_tab(sec, victim)
    sec.member(squatter)
    sec.start_server(sec.token(squatter), squatter)
    tls = _own_tls(_server_process(sec, squatter))
    (target,) = {r["target"] for r in _routes_of(sec, victim).values()}
    server = _server_process(sec, victim)
    with squatting(squatter, target, tls) as logged:
        time.sleep(0.5)  # the listener is retrying its bind
        server.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        answers, gone = [], None
        while time.monotonic() - killed < 8:
            try:
                r = browser.get(url + "api/contents", timeout=10, allow_redirects=False)
                answers.append((r.status_code, r.text[:200]))
            except requests.RequestException as exc:
                answers.append((0, str(exc)))
            if gone is None and not _routes_of(sec, victim):
                gone = time.monotonic() - killed
            time.sleep(0.25)
    got = [line for line in logged if line.startswith("{")]
    assert not got, f"the squatter received the victim's requests: {got[:2]}"
    assert all(MARK not in text for _, text in answers), answers
    assert gone is not None and gone < 3, f"the route to the dead server stayed ({gone} s)"


@rel(
    injected="the proxy still routes to a dead server's address (the route re-added as a hub "
    "that has not noticed would keep it) while another user listens there as her own uid: "
    "with TLS and her own server's certificate, then plain HTTP",
    expected="the proxy refuses the connection (TLS verification of the victim's address): "
    "the victim gets a 5xx error page, the squatter no request",
)
def test_a_stale_route_to_a_squatted_address_fails_closed(sec):
    victim, squatter = "sec-sqvictim2", "sec-squatter"
    browser, url = _victim_tab(sec, victim)
    sec.member(squatter)
    if not _routes_of(sec, squatter):
        sec.start_server(sec.token(squatter), squatter)
    tls = _own_tls(_server_process(sec, squatter))
    routes = _routes_of(sec, victim)
    (target,) = {r["target"] for r in routes.values()}
    _server_process(sec, victim).send_signal(signal.SIGKILL)
    assert _wait_route_gone(sec, victim, 45), "the hub did not remove the route"
    api, headers = _proxy(sec)
    try:
        for mode in ("own certificate", "plain HTTP"):
            with squatting(squatter, target, tls if mode != "plain HTTP" else ("", "")) as logged:
                _wait_listening(logged)
                # the stale route, as before the hub noticed (it drops it within 5 s here)
                for spec, route in routes.items():
                    r = requests.post(api + spec, json={**route, "target": target},
                                      headers=headers, timeout=10)
                    assert r.status_code == 201, r.text
                r = browser.get(url + "api/contents", timeout=30, allow_redirects=False)
            got = [line for line in logged if line.startswith("{")]
            assert not got, f"{mode}: the squatter received the victim's request: {got[:1]}"
            assert r.status_code >= 500 and MARK not in r.text, (mode, r.status_code, r.text[:200])
    finally:
        for spec in routes:
            requests.delete(api + spec, headers=headers, timeout=10)
    assert target.startswith("https://") and not target.startswith("https://127.0.0.1:"), (
        f"the victim's server is not on a TLS address of its own: {target}"
    )


def test_server_certificates_are_root_owned_and_name_only_their_account(tmp_path):
    """Fast: what the spawner hands an account (no stack). Keys and certificates live in
    root-owned directories readable by the account's group only; a certificate names its
    account's address and host, nothing else; a link planted at the account's directory is
    refused, not followed."""
    import ipaddress
    import stat

    from cryptography import x509

    from cscale_extensions.hub.servertls import ServerCA, server_ip

    ca = ServerCA(tmp_path / "server-tls")
    ca.ensure()
    gid = 65534
    ip = server_ip(4242)
    cert = ca.issue("alice", "", ip, gid, host="alice.hub.localhost")
    for path, mode, group in ((ca.dir, 0o711, 0), (ca.dir / "ca.key", 0o600, 0),
                              (ca.dir / "users" / "alice", 0o750, gid),
                              (cert.keyfile, 0o640, gid), (cert.certfile, 0o644, gid)):
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, group, mode), path
    parsed = x509.load_pem_x509_certificate(Path(cert.certfile).read_bytes())
    names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(ip)]
    assert names.get_values_for_type(x509.DNSName) == ["alice.hub.localhost"]
    assert server_ip(4243) != ip and ipaddress.ip_address(ip).is_loopback
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (ca.dir / "users" / "mallory").symlink_to(elsewhere)
    with pytest.raises(PermissionError):
        ca.issue("mallory", "", server_ip(4244), gid)
    assert not list(elsewhere.iterdir())
