"""The local platform end to end, over real HTTP: OIDC login, VO gating, servers, notebooks,
dask-gateway and the user's access token (the `platform` fixture runs `cscale-hub up`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests
from cscale_testing import LoginRefused, oidc_login, server_url

from cscale_extensions.kernelclient import run_in_kernel


@pytest.fixture(scope="module")
def member(platform):
    token = platform.api_token("demo-member")
    server = platform.start_server(token, "demo-member")
    return token, server_url(platform.url, server["url"])


def _whoami(platform, token):
    r = requests.get(platform.url + "hub/api/user", headers={"Authorization": f"token {token}"}, timeout=30)
    r.raise_for_status()
    return r.json()


def test_member_logs_in_through_oidc_and_is_in_the_vo_group(platform):
    session = platform.login("demo-member")
    assert session.cookies.get("jupyterhub-hub-login")
    me = _whoami(platform, platform.api_token("demo-member"))
    assert me["name"] == "demo-member"
    assert me["groups"] == ["vo.cscale.eu"]  # the VO, not the raw URN
    assert me["admin"] is False


def test_admin_role_entitlement_makes_hub_admin(platform):
    me = _whoami(platform, platform.api_token("demo-admin"))
    assert me["admin"] is True
    assert me["groups"] == ["vo.cscale.eu"]


def test_non_member_is_refused_with_a_page_naming_the_vo(platform):
    with pytest.raises(LoginRefused) as refused:
        platform.login("demo-outsider")
    page = refused.value.response
    assert page.status_code == 403
    assert "vo.cscale.eu" in page.text and "virtual organisation" in page.text
    assert "Traceback" not in page.text
    users = requests.get(platform.url + "hub/api/users",
                         headers={"Authorization": f"token {platform.api_token('demo-admin')}"},
                         timeout=30).json()
    assert "demo-outsider" not in {u["name"] for u in users}


def test_wrong_password_is_refused_and_gives_no_hub_session(platform):
    with pytest.raises(LoginRefused) as refused:
        oidc_login(platform.url, "demo-member", "not-the-password")
    page = refused.value.response
    assert "Invalid username or password" in page.text
    assert page.url.startswith(platform.cfg["auth"]["issuer"])


def test_server_runs_as_its_own_account_with_the_notebooks(platform, member, notebook_source):
    token, server = member
    out = run_in_kernel(server, token, "\n".join([
        "import os, getpass, json",
        "files = sorted(os.path.relpath(os.path.join(d, f), 'workflow_notebooks')",
        "               for d, _, fs in os.walk('workflow_notebooks') for f in fs if not f.startswith('.'))",
        "print(json.dumps({'user': getpass.getuser(), 'cwd': os.getcwd(), 'files': files,",
        "                  'stac': os.environ.get('CSCALE_STAC_URL'), 'vos': os.environ.get('CSCALE_USER_VOS')}))",
    ]))
    info = json.loads(out)
    expected = sorted(p.relative_to(notebook_source).as_posix() for p in notebook_source.rglob("*")
                      if p.is_file() and ".ipynb_checkpoints" not in p.parts)
    assert any(f.endswith(".ipynb") for f in expected), "workflow_notebooks/ holds no notebook"
    assert info["files"] == expected
    assert info["cwd"] == str(Path(platform.state_dir, "homes", "demo-member"))
    assert info["stac"] == platform.url + "services/eo-mqs/"
    assert info["vos"] == "vo.cscale.eu"
    if platform.cfg["spawner"]["backend"] in ("auto", "system-users"):
        import os

        if os.getuid() == 0:
            assert info["user"] == "demo-member"


def test_edited_notebook_survives_respawn_and_updates_arrive(platform, member, notebook_source):
    token, server = member
    api = requests.Session()
    api.headers["Authorization"] = f"token {token}"
    names = sorted(p.name for p in notebook_source.glob("*.ipynb"))
    edited, updated = names[0], (names[1] if len(names) > 1 else None)
    r = api.get(f"{server}api/contents/workflow_notebooks/{edited}", timeout=30)
    model = r.json()
    model["content"]["cells"].insert(0, {"cell_type": "markdown", "metadata": {}, "source": "my notes"})
    r = api.put(f"{server}api/contents/workflow_notebooks/{edited}",
                json={"type": "notebook", "content": model["content"]}, timeout=30)
    assert r.status_code == 200
    # the templates change: both the edited one and (if any) another one
    for name in filter(None, (edited, updated)):
        nb = json.loads((notebook_source / name).read_text())
        nb["cells"].append({"cell_type": "markdown", "metadata": {}, "source": "template v2"})
        (notebook_source / name).write_text(json.dumps(nb))
    admin = requests.Session()
    admin.headers["Authorization"] = f"token {token}"
    r = admin.delete(platform.url + "hub/api/users/demo-member/server", timeout=60)
    assert r.status_code in (202, 204)
    for _ in range(120):
        if not _whoami(platform, token)["servers"]:
            break
        time.sleep(0.5)
    server = server_url(platform.url, platform.start_server(token, "demo-member")["url"])
    mine = api.get(f"{server}api/contents/workflow_notebooks/{edited}", timeout=30).json()
    sources = [c["source"] for c in mine["content"]["cells"]]
    assert sources[0] == "my notes" and "template v2" not in sources  # the edit is kept
    offered = api.get(f"{server}api/contents/workflow_notebooks/{Path(edited).stem}.new.ipynb", timeout=30)
    assert offered.status_code == 200  # the new template is offered beside it
    if updated:
        fresh = api.get(f"{server}api/contents/workflow_notebooks/{updated}", timeout=30).json()
        assert fresh["content"]["cells"][-1]["source"] == "template v2"


def test_access_token_in_the_server_is_current_and_refreshed(platform, member):
    token, server = member
    code = "from cscale_extensions.singleuser.token import access_token; print(access_token())"
    first = run_in_kernel(server, token, code).strip()
    userinfo = platform.cfg["auth"]["issuer"] + "/me"
    discovered = requests.get(platform.cfg["auth"]["issuer"] + "/.well-known/openid-configuration",
                              timeout=10).json()
    userinfo = discovered["userinfo_endpoint"]
    r = requests.get(userinfo, headers={"Authorization": f"Bearer {first}"}, timeout=10)
    assert r.status_code == 200 and r.json()["preferred_username"] == "demo-member"
    # access tokens live 60 s here and the hub refreshes them when <60 s remain, at most every 10 s
    time.sleep(11)
    second = run_in_kernel(server, token, code).strip()
    assert second != first
    r = requests.get(userinfo, headers={"Authorization": f"Bearer {second}"}, timeout=10)
    assert r.status_code == 200 and "eduperson_entitlement" in r.json()


def test_dask_gateway_cluster_from_the_users_environment(platform, member):
    token, server = member
    out = run_in_kernel(server, token, "\n".join([
        "from dask_gateway import Gateway",
        "import dask.array as da, json",
        "gateway = Gateway()",
        "cluster = gateway.new_cluster()",
        "try:",
        "    cluster.scale(2)",
        "    client = cluster.get_client()",
        "    client.wait_for_workers(2, timeout=180)",
        "    total = float(da.ones((2000, 2000), chunks=500).sum().compute())",
        "    workers = len(client.scheduler_info()['workers'])",
        "    owner = gateway.list_clusters()[0].options if False else None",
        "    client.close()",
        "finally:",
        "    cluster.shutdown()",
        "print(json.dumps({'total': total, 'workers': workers, 'left': len(gateway.list_clusters())}))",
    ]), timeout=300)
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"total": 4_000_000.0, "workers": 2, "left": 0}


def test_gateway_refuses_tokens_without_service_access(platform):
    token = platform.api_token("demo-member", scopes=["read:users:name!user"])
    r = requests.get(platform.service_url("dask-gateway") + "api/v1/clusters/",
                     headers={"Authorization": f"jupyterhub {token}"}, timeout=30)
    assert r.status_code == 401
