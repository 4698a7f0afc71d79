"""User A against user B (one POSIX account each, the platform runs as root): A reaches none of
B's server, files, Dask clusters or runs, and A's token cannot act as the hub or its services."""

from __future__ import annotations

import json
import os

import pytest
import requests
from seckit import assert_clean_page

from cscale_extensions.kernelclient import run_in_kernel

rel = pytest.mark.reliability
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.getuid() != 0, reason="per-user accounts need the platform to run as root"
    ),
]
A, B = "sec-a", "sec-b"


@pytest.fixture(scope="module")
def users(sec):
    for name in (A, B):
        sec.member(name)
    tokens = {n: sec.token(n) for n in (A, B)}
    servers = {n: sec.start_server(tokens[n], n) for n in (A, B)}
    run_in_kernel(servers[B], tokens[B], "open('secret.txt', 'w').write('B only')")
    return tokens, servers


def _runs_url(sec) -> str | None:
    return sec.url + "services/runs/" if "runs" in sec.stack.info.get("services", {}) else None


@rel(
    injected="A's token on B's hub API and B's server URL",
    expected="403/404 everywhere, B's server untouched",
)
def test_a_cannot_reach_bs_server_with_a_token(sec, users):
    tokens, servers = users
    a = sec.api(tokens[A])
    for method, path in [
        ("get", f"hub/api/users/{B}"),
        ("post", f"hub/api/users/{B}/server"),
        ("delete", f"hub/api/users/{B}/server"),
        ("post", f"hub/api/users/{B}/tokens"),
        ("get", f"hub/api/users/{B}/tokens"),
    ]:
        r = getattr(a, method)(sec.url + path, timeout=30)
        assert r.status_code in (403, 404), f"{method} {path}: HTTP {r.status_code}"
    r = a.get(servers[B] + "api/contents/secret.txt", timeout=30, allow_redirects=False)
    assert r.status_code in (302, 403), r.status_code
    assert "B only" not in r.text
    r = a.post(
        servers[B] + "api/kernels", json={"name": "python3"}, timeout=30, allow_redirects=False
    )
    assert r.status_code in (302, 403)
    b = sec.api(tokens[B]).get(sec.url + f"hub/api/users/{B}", timeout=30).json()
    assert b["servers"][""]["ready"]


@rel(injected="A's browser session (cookie) opening /user/B/", expected="403 page, no content of B")
def test_a_cannot_reach_bs_server_with_a_cookie(sec, users):
    _, servers = users
    s = sec.login(A)
    for url in (servers[B] + "lab", servers[B] + "api/contents/secret.txt"):
        r = s.get(url, timeout=60)
        assert_clean_page(r)
        assert r.status_code == 403 or f"/user/{A}/" in r.url, f"HTTP {r.status_code} at {r.url}"
        assert "B only" not in r.text


@rel(injected="A's kernel reading and listing B's home", expected="PermissionError")
def test_a_cannot_read_bs_files(sec, users):
    tokens, servers = users
    home_b = str(sec.stack.state_dir / "homes" / B)
    out = run_in_kernel(
        servers[A],
        tokens[A],
        "\n".join(
            [
                "import json, os",
                "res = {}",
                f"for what, fn in (('read', lambda: open({home_b!r} + '/secret.txt').read()),",
                f"                 ('list', lambda: os.listdir({home_b!r})),",
                f"                 ('write', lambda: open({home_b!r} + '/planted.txt', 'w'))):",
                "    try:",
                "        fn(); res[what] = 'allowed'",
                "    except PermissionError:",
                "        res[what] = 'PermissionError'",
                "print(json.dumps([os.getuid(), res]))",
            ]
        ),
    )
    uid, res = json.loads(out.strip().splitlines()[-1])
    assert uid != 0
    assert res == {"read": "PermissionError", "list": "PermissionError", "write": "PermissionError"}


@rel(
    injected="A's token listing, reading, stopping B's Dask cluster via the gateway API",
    expected="not listed, 403/404, B's cluster keeps running",
)
def test_a_cannot_see_or_stop_bs_dask_cluster(sec, users):
    tokens, _ = users
    gw = sec.stack.service_url("dask-gateway") + "api/v1/clusters/"

    def hdr(n):
        return {"Authorization": f"jupyterhub {tokens[n]}"}

    r = requests.post(gw, json={"cluster_options": {}}, headers=hdr(B), timeout=120)
    assert r.status_code == 201, r.text
    name = r.json()["name"]
    try:
        assert name in requests.get(gw, headers=hdr(B), timeout=30).json()
        assert name not in requests.get(gw, headers=hdr(A), timeout=30).json()
        r = requests.get(gw + name, headers=hdr(A), timeout=30)
        assert r.status_code in (403, 404) and "error" in r.json()
        r = requests.delete(gw + name, headers=hdr(A), timeout=30)
        assert r.status_code in (403, 404), r.status_code
        r = requests.get(gw + name, headers=hdr(B), timeout=30)
        assert r.status_code == 200 and r.json()["status"] in ("PENDING", "RUNNING")
        # a cluster's own API token is no key to anything else either
        r = requests.get(gw, headers={"Authorization": "token not-a-cluster-token"}, timeout=30)
        assert r.status_code == 401
    finally:
        requests.delete(gw + name, headers=hdr(B), timeout=60)


@rel(
    injected="A's token reading, cancelling, listing B's runs",
    expected="404/403, B's run unaffected",
)
def test_a_cannot_touch_bs_runs(sec, users):
    runs = _runs_url(sec)
    if runs is None:
        pytest.skip("the runs service is not part of this stack")
    tokens, _ = users
    a, b = sec.api(tokens[A]), sec.api(tokens[B])
    nb = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "cells": [
            {
                "cell_type": "code",
                "metadata": {},
                "source": "import time; time.sleep(30)",
                "outputs": [],
                "execution_count": None,
                "id": "c1",
            }
        ],
    }
    r = b.post(runs + "runs", json={"notebook": nb, "name": "b's run"}, timeout=30)
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    for method, path in [
        ("get", f"runs/{rid}"),
        ("get", f"runs/{rid}/output"),
        ("get", f"runs/{rid}/logs"),
        ("post", f"runs/{rid}/cancel"),
        ("post", f"runs/{rid}/rerun"),
    ]:
        r = getattr(a, method)(runs + path, timeout=30)
        assert r.status_code in (403, 404), f"{method} {path}: HTTP {r.status_code}"
        assert r.headers.get("content-type", "").startswith("application/json")
    assert rid not in {x["id"] for x in a.get(runs + "runs", timeout=30).json()}
    assert a.get(runs + "runs", params={"user": B}, timeout=30).status_code == 403
    assert a.get(runs + "runs", params={"all": "true"}, timeout=30).status_code == 403
    assert b.get(runs + f"runs/{rid}", timeout=30).json()["state"] not in ("cancelled",)
    b.post(runs + f"runs/{rid}/cancel", timeout=30)


@rel(
    injected="a user's token on admin and service-only APIs; asking for admin scopes",
    expected="403; no token with more than the user's own scopes",
)
def test_user_token_cannot_act_as_hub_or_service(sec, users):
    tokens, _ = users
    a = sec.api(tokens[A])
    for method, path, body in [
        ("get", "hub/api/users", None),
        ("post", "hub/api/users/sec-new", None),
        ("patch", f"hub/api/users/{A}", {"admin": True}),
        ("get", "hub/api/proxy", None),
        ("post", "hub/api/proxy", None),
        ("get", "hub/api/services", None),
        ("post", "hub/api/groups/vo.cscale.eu/users", {"users": ["sec-new"]}),
        ("post", "hub/api/shutdown", None),
        ("get", f"hub/api/users/{B}?include_stopped_servers", None),
    ]:
        r = getattr(a, method)(sec.url + path, json=body, timeout=30)
        assert r.status_code in (403, 404), f"{method} {path}: HTTP {r.status_code}"
    for scopes in (
        ["admin:users"],
        ["list:users"],
        ["admin:auth_state"],
        ["proxy"],
        ["shutdown"],
        ["access:servers"],
        ["read:users:activity"],
        ["delete:servers"],
    ):
        r = a.post(sec.url + f"hub/api/users/{A}/tokens", json={"scopes": scopes}, timeout=30)
        assert r.status_code in (400, 403), f"{scopes}: HTTP {r.status_code} {r.text[:200]}"
        assert "token" not in r.json()
    me = a.get(sec.url + "hub/api/user", timeout=30).json()
    assert me["admin"] is False
    assert not {"admin:users", "list:users", "proxy", "shutdown"} & set(me.get("scopes", []))
    assert a.get(sec.url + "hub/api/", timeout=30).status_code == 200


#: what every account must read: the embedded Slurm's client configuration (``sbatch`` as the
#: user reads it) and the daemons' public runtime files, as Debian installs them world-readable
#: (/etc/slurm, /run/munge/munged.pid, /var/spool/slurmd); no secret, no other user's data
PUBLIC_STATE = {
    "slurm/hpc/etc/slurm.conf",
    "slurm/hpc/etc/plugstack.conf",
    "slurm/hpc/munge/run/munged.pid",
    "slurm/hpc/spool/slurmd.pid",
    "slurm/hpc/spool/hwloc_topo_whole.xml",
}


@rel(
    injected="A's kernel walking the platform's data dir (secrets, hub and gateway databases, "
    "config with the OIDC client secret, logs, other services' state)",
    expected="nothing outside A's own home is readable but the Slurm client configuration",
)
def test_a_cannot_read_platform_state(sec, users):
    tokens, servers = users
    state = str(sec.stack.state_dir)
    out = run_in_kernel(
        servers[A],
        tokens[A],
        "\n".join(
            [
                "import json, os",
                f"state = {state!r}",
                "readable = []",
                "for d, dirs, files in os.walk(state):",
                "    if d == os.path.join(state, 'homes'):",
                "        dirs[:] = [x for x in dirs if x == os.environ['USER']]  # own home only",
                "        continue",
                "    if d.startswith(os.path.join(state, 'homes', os.environ['USER'])):",
                "        continue",
                "    for f in files:",
                "        p = os.path.join(d, f)",
                "        try:",
                "            open(p, 'rb').read(1); readable.append(os.path.relpath(p, state))",
                "        except OSError:",
                "            pass",
                "print(json.dumps(readable))",
            ]
        ),
    )
    readable = json.loads(out.strip().splitlines()[-1])
    assert [p for p in readable if p not in PUBLIC_STATE] == [], f"{A} can read: {readable}"
