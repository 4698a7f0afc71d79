"""Credentials that reach a process the user controls: what mallory can do with them.

Every user server loads its owner's ``~/.jupyter/jupyter_server_config.py``, so the owner
sees every header the platform sends to it. Mallory plants a config that logs each request's
headers into her home, lets the runs service execute a notebook in her ``runs`` server, and
then tries every token she captured against other users, the hub API and the auth state. The
runs service must have shown her only a short-lived token of her own that opens her own
``runs`` server. And the token of her server must not read her refresh token, while
``cscale_extensions.singleuser.token.access_token()`` keeps working.
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import UTC, datetime
from urllib.parse import urljoin

import pytest
import requests
from cscale_testing.testhub import Runs, notebook

from cscale_extensions.kernelclient import run_in_kernel

rel = pytest.mark.reliability
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.getuid() != 0, reason="per-user accounts need the platform to run as root"
    ),
]
M, V = "sec-mallory", "sec-victim"
CAPTURE = "captured-headers.jsonl"
#: Mallory's server config: every request's URI and headers appended to a file of her home
LOGGING_CONFIG = f"""
import json, os
_out = os.path.join(os.path.expanduser("~"), {CAPTURE!r})
def _log_everything(handler):
    try:
        with open(_out, "a") as f:
            f.write(json.dumps({{"uri": handler.request.uri,
                                 "headers": dict(handler.request.headers)}}) + "\\n")
    except Exception:
        pass
c.ServerApp.tornado_settings = {{"log_function": _log_everything}}
"""
TOKEN_IN_HEADER = re.compile(r"^(?:token|bearer)\s+(\S+)$", re.IGNORECASE)


def _runs_url(sec) -> str:
    if "runs" not in sec.stack.info.get("services", {}):
        pytest.skip("the runs service is not part of this stack")
    return sec.url + "services/runs/"


@pytest.fixture(scope="module")
def captured(sec):
    """Mallory's planted header log after one run: (her token, tokens captured, servers)."""
    runs = _runs_url(sec)
    for name in (M, V):
        sec.member(name)
    tokens = {n: sec.token(n) for n in (M, V)}
    servers = {n: sec.start_server(tokens[n], n) for n in (M, V)}
    run_in_kernel(servers[V], tokens[V], "open('victim-secret.txt', 'w').write('V only')")
    run_in_kernel(
        servers[M],
        tokens[M],
        "import os\n"
        "os.makedirs(os.path.expanduser('~/.jupyter'), exist_ok=True)\n"
        "open(os.path.expanduser('~/.jupyter/jupyter_server_config.py'), 'w')"
        f".write({LOGGING_CONFIG!r})",
    )
    mine = Runs(runs, tokens[M])
    run = mine.ok("POST", "runs", json={"notebook": notebook("print('hello')")})
    done = mine.wait(run["id"])
    assert done["state"] == "succeeded", f"the run did not succeed: {done}"
    log = sec.stack.state_dir / "homes" / M / CAPTURE
    assert log.exists(), "the planted config did not log anything: the attack was not set up"
    seen: set[str] = set()
    for line in log.read_text().splitlines():
        headers = {k.lower(): v for k, v in json.loads(line)["headers"].items()}
        m = TOKEN_IN_HEADER.match(headers.get("authorization", "").strip())
        if m:
            seen.add(m.group(1))
    seen.discard(tokens[M])  # her own token, used by this test to set things up
    assert seen, f"no Authorization header reached mallory's runs server: {log.read_text()[:500]}"
    return tokens[M], seen, servers


@rel(
    injected="mallory's ~/.jupyter/jupyter_server_config.py logs every request's headers; she "
    "runs a notebook and uses each token the runs service sent to her runs server",
    expected="no captured token lists or starts/stops another user's server, reads auth state "
    "or lists users; each is hers, scoped to her runs server only, and expires within 30 min",
)
def test_token_captured_in_own_runs_server_opens_nothing_else(sec, captured):
    own, seen, servers = captured
    server_name = sec.stack.cfg["runs"]["server_name"]
    victim_home = servers[V] + "api/contents/"
    mine = sec.api(own).get(sec.url + f"hub/api/users/{M}", timeout=30).json()
    runs_server = urljoin(sec.url, mine["servers"][server_name]["url"])
    for token in seen:
        api = sec.api(token)
        r = api.get(victim_home, timeout=30, allow_redirects=False)
        assert r.status_code in (302, 403), f"victim's home listed: HTTP {r.status_code}"
        assert "victim-secret" not in r.text
        for method, path in [
            ("post", f"hub/api/users/{V}/server"),
            ("delete", f"hub/api/users/{V}/server"),
            ("post", f"hub/api/users/{V}/servers/{server_name}"),
            ("get", f"hub/api/users/{V}"),
            ("get", "hub/api/users"),
            ("post", f"hub/api/users/{V}/tokens"),
        ]:
            r = getattr(api, method)(sec.url + path, timeout=30)
            assert r.status_code in (403, 404), f"{method} {path}: HTTP {r.status_code}"
        r = api.get(sec.url + f"hub/api/users/{M}", timeout=30)
        assert "auth_state" not in (r.json() if r.status_code == 200 else {})
        # whose is it, what may it do, how long does it live
        me = api.get(sec.url + "hub/api/user", timeout=30)
        assert me.status_code == 200, me.text
        model = me.json()
        assert model.get("kind") == "user" and model["name"] == M, (
            f"the runs service showed mallory a token of {model.get('kind')} {model['name']}"
        )
        identify = {f"read:users:{f}!user={M}" for f in ("name", "groups")}  # any token's
        assert set(model["scopes"]) - identify == {f"access:servers!server={M}/{server_name}"}
        info = sec.api(own).get(
            sec.url + f"hub/api/users/{M}/tokens/{model['token_id']}", timeout=30
        )
        assert info.status_code == 200, info.text
        expires = info.json()["expires_at"]
        assert expires, "the captured token never expires"
        left = datetime.fromisoformat(expires).replace(tzinfo=UTC) - datetime.now(UTC)
        assert 0 < left.total_seconds() <= 30 * 60 + 60, f"expires in {left}"
        assert "runs" in info.json()["note"]
        # it opens her runs server (that is what it is for) and nothing else of hers
        assert api.get(runs_server + "api/status", timeout=30).status_code == 200
        r = api.get(servers[M] + "api/contents/", timeout=30, allow_redirects=False)
        assert r.status_code in (302, 403), f"her default server opened: HTTP {r.status_code}"


@rel(
    injected="code in mallory's server uses the server's own token ($JUPYTERHUB_API_TOKEN) on "
    "the hub API to read her auth state",
    expected="no auth_state (no refresh or ID token); cscale_extensions.singleuser.token.access_token() "
    "still returns an access token the IdP accepts",
)
def test_server_token_reads_no_refresh_token_but_gets_the_access_token(sec, captured):
    own, _, servers = captured
    out = run_in_kernel(
        servers[M],
        own,
        "\n".join(
            [
                "import json, os, requests",
                "api, tok = os.environ['JUPYTERHUB_API_URL'], os.environ['JUPYTERHUB_API_TOKEN']",
                "user = os.environ['JUPYTERHUB_USER']",
                "h = {'Authorization': 'token ' + tok}",
                "r = requests.get(f'{api}/users/{user}', headers=h, timeout=30)",
                "body = r.json() if r.status_code == 200 else {}",
                "from cscale_extensions.singleuser.token import access_token",
                "print(json.dumps({'status': r.status_code, 'keys': sorted(body),",
                "                  'state': body.get('auth_state'), 'access': access_token()}))",
            ]
        ),
    )
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["state"] is None and "auth_state" not in seen["keys"], (
        f"the server's token reads the auth state: keys {sorted(seen['state'] or {})}"
    )
    userinfo = sec.idp.discovery()["userinfo_endpoint"]
    r = requests.get(userinfo, headers={"Authorization": f"Bearer {seen['access']}"}, timeout=10)
    assert r.status_code == 200 and r.json()["preferred_username"] == M


@rel(
    injected="mallory's token on the access-token endpoint of another user; a token of hers "
    "without the scope",
    expected="403, no token given out",
)
def test_access_token_endpoint_gives_only_your_own(sec, captured):
    own, _, _ = captured
    endpoint = sec.url + "hub/api/cscale/users/{}/access-token"
    r = sec.api(own).get(endpoint.format(V), timeout=30)
    assert r.status_code == 403 and "access_token" not in r.text
    narrow = sec.token(M, scopes=["read:users:name!user"])
    r = sec.api(narrow).get(endpoint.format(M), timeout=30)
    assert r.status_code == 403 and "access_token" not in r.text
    r = sec.api(own).get(endpoint.format(M), timeout=30)
    assert r.status_code == 200 and r.json()["access_token"]
    assert set(r.json()) == {"access_token", "token_type", "expires_at"}
    assert r.json()["expires_at"] > time.time()
