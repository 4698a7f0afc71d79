"""Workshop lifecycle on a real local stack: create → login → prewarm → status → end."""

from __future__ import annotations

import csv
import json
import os
import pwd
import stat
import subprocess
import tarfile

import pytest
import requests
from cscale_testing import LoginRefused, oidc_login, server_url

from cscale_extensions.kernelclient import run_in_kernel
from cscale_extensions.localstack.oidc.accounts import list_accounts
from cscale_extensions.workshop.hubapi import HubAPI

N = 5


@pytest.fixture(scope="module")
def materials_repo(tmp_path_factory):
    """A local git repository of workshop materials (a notebook and a data file)."""
    repo = tmp_path_factory.mktemp("materials")
    (repo / "data").mkdir()
    (repo / "data" / "points.csv").write_text("x,y\n1,2\n")
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "metadata": {},
                "source": "print('hello')",
                "outputs": [],
                "execution_count": None,
            }
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (repo / "01-intro.ipynb").write_text(json.dumps(nb))
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    for cmd in (["git", "init", "-q"], ["git", "add", "."], ["git", "commit", "-qm", "materials"]):
        subprocess.run(cmd, cwd=repo, check=True, env=env)
    (repo / "uncommitted.txt").write_text("not in HEAD")
    return repo


def _api(stack, token) -> HubAPI:
    return HubAPI(stack.url, token)


def test_bad_input_is_refused_clearly(cli, materials_repo):
    rc, _, err = cli("create", "Bad_Name", "--users", "2")
    assert rc == 2 and "invalid workshop name" in err
    rc, _, err = cli("create", "okname", "--users", "2", "--materials", "https://example.org/x.git")
    assert rc == 2 and "local paths" in err
    rc, _, err = cli(
        "create", "okname", "--users", "2", "--start", "2026-01-02", "--end", "2026-01-01"
    )
    assert rc == 2 and "--end must be after --start" in err
    rc, _, err = cli("create", "okname", "--users", "2", "--start", "tomorrow")
    assert rc == 2 and "ISO 8601" in err
    rc, _, err = cli("status", "nosuchws")
    assert rc == 2 and "no workshop" in err
    rc, _, err = cli("create", "okname", "--users", "2", "--token", "not-a-token")
    assert rc == 2 and "HTTP 403" in err


def test_workshop_lifecycle(ws_stack, admin_token, cli, materials_repo):
    state = ws_stack.state_dir
    rc, out, err = cli(
        "create",
        "eo101",
        "--users",
        str(N),
        "--materials",
        str(materials_repo),
        "--start",
        "2026-11-24T09:00",
        "--end",
        "2099-01-01T17:00",
        "--env",
        "WORKSHOP_DAY=1",
    )
    assert rc == 0, err
    wdir = state / "workshops" / "eo101"
    users = [f"eo101-{i:02d}" for i in range(1, N + 1)]

    # accounts, login sheet, materials
    rows = list(csv.DictReader((wdir / "accounts.csv").open()))
    assert [r["username"] for r in rows] == users and all(len(r["password"]) >= 16 for r in rows)
    assert stat.S_IMODE((wdir / "accounts.csv").stat().st_mode) == 0o600
    html = (wdir / "accounts.html").read_text()
    assert all(r["password"] in html for r in rows)
    accounts = {a["username"]: a for a in list_accounts(state / "oidc" / "accounts.json")}
    assert all(
        not accounts[u]["disabled"]
        and any(":vo.cscale.eu:role=member" in e for e in accounts[u]["entitlements"])
        for u in users
    )
    mat = wdir / "materials"
    assert (
        (mat / "01-intro.ipynb").exists()
        and not (mat / "uncommitted.txt").exists()
        and not (mat / ".git").exists()
    )
    assert stat.S_IMODE(mat.stat().st_mode) == 0o755
    assert stat.S_IMODE((mat / "data" / "points.csv").stat().st_mode) == 0o644
    api = _api(ws_stack, admin_token)
    group = api.group("workshop-eo101")
    assert sorted(group["users"]) == users and group["properties"]["workshop"] == "eo101"
    rc, _, err = cli("create", "eo101", "--users", "2")
    assert rc == 2 and "already exists" in err

    # a participant signs in with the sheet's password through the real OIDC flow
    passwords = {r["username"]: r["password"] for r in rows}
    session = oidc_login(ws_stack.url, users[0], passwords[users[0]])
    assert session.get(ws_stack.url + "hub/api/user", timeout=30).status_code in (200, 403)
    # the login keeps them in the cohort's group (from the cohort's subgroup entitlement)
    assert users[0] in api.group("workshop-eo101")["users"]
    assert "workshop-eo101" in api.user(users[0])["groups"]

    # prewarm all servers at a safe rate
    rc, out, err = cli("prewarm", "eo101")
    assert rc == 0, out + err
    for u in users:
        assert api.user(u)["servers"][""]["ready"]
        copy = state / "homes" / u / "eo101"
        assert (copy / "01-intro.ipynb").exists()
        assert copy.stat().st_uid == pwd.getpwnam(u).pw_uid  # the participant's own, writable copy

    # the participant works in their copy (cohort environment applied)
    token = api.token_for(users[0], "test")
    server = server_url(ws_stack.url, api.user(users[0])["servers"][""]["url"])
    out = run_in_kernel(
        server,
        token,
        "import os\nopen('eo101/result.txt','w').write('ndvi')\n"
        "print(os.environ.get('WORKSHOP_DAY'), os.environ.get('CSCALE_WORKSHOP'))",
    )
    assert out.strip() == "1 eo101"

    # status: everybody ready, only the first has logged in
    rc, out, err = cli("status", "eo101", "--json")
    assert rc == 0, err
    st = {r["user"]: r for r in json.loads(out)["participants"]}
    assert all(st[u]["server"] == "ready" for u in users)
    assert st[users[0]]["logged_in"] and not any(st[u]["logged_in"] for u in users[1:])
    rc, out, _ = cli("status", "eo101")
    assert f"{N} participants: 1 logged in; servers {N} ready" in out

    # a restart keeps the participant's work (the copy is made at the first spawn only)
    api.stop(users[0])
    assert api.wait_stopped([users[0]]) == []
    (state / "homes" / users[0] / "eo101" / "01-intro.ipynb").write_text("{}")
    ws_stack.start_server(admin_token, users[0])
    assert (state / "homes" / users[0] / "eo101" / "01-intro.ipynb").read_text() == "{}"

    # end: servers stopped, work exported, accounts disabled
    rc, out, err = cli("end", "eo101")
    assert rc == 0, out + err
    for u in users:
        assert not api.user(u)["servers"]
        archive = wdir / "exports" / f"{u}.tar.gz"
        assert stat.S_IMODE(archive.stat().st_mode) == 0o600
        with tarfile.open(archive) as tar:
            names = tar.getnames()
        assert f"{u}/eo101/01-intro.ipynb" in names
    with tarfile.open(wdir / "exports" / f"{users[0]}.tar.gz") as tar:
        assert tar.extractfile(f"{users[0]}/eo101/result.txt").read() == b"ndvi"
    accounts = {a["username"]: a for a in list_accounts(state / "oidc" / "accounts.json")}
    assert all(accounts[u]["disabled"] for u in users)
    with pytest.raises(LoginRefused):
        oidc_login(ws_stack.url, users[1], passwords[users[1]], session=requests.Session())
    rc, _, err = cli("prewarm", "eo101")
    assert rc == 2 and "ended" in err


def test_scheduled_end_by_tick(ws_stack, admin_token, cli):
    rc, _, err = cli("create", "later", "--users", "1", "--end", "2099-01-01T00:00")
    assert rc == 0, err
    rc, _, _ = cli("tick")
    assert rc == 0
    accounts = {
        a["username"]: a for a in list_accounts(ws_stack.state_dir / "oidc" / "accounts.json")
    }
    assert not accounts["later-01"]["disabled"]  # not due yet
    rc, out, _ = cli("end", "later", "--at", "2000-01-01T00:00")
    assert rc == 0 and "will end at 2000-01-01T00:00:00+00:00" in out
    rc, out, err = cli("tick")
    assert rc == 0, out + err
    accounts = {
        a["username"]: a for a in list_accounts(ws_stack.state_dir / "oidc" / "accounts.json")
    }
    assert accounts["later-01"]["disabled"]
    ws = json.loads((ws_stack.state_dir / "workshops" / "later" / "workshop.json").read_text())
    assert ws["ended"] and ws["end_report"]["later-01"]["export"].startswith("no home")


def test_failed_spawn_is_reported_with_its_reason(ws_stack, admin_token, cli):
    """A participant name taken by a system account the hub did not create cannot spawn;
    prewarm retries, then gives up, and status says why."""
    subprocess.run(
        ["useradd", "--no-create-home", "--comment", "someone else", "clash-01"], check=True
    )
    try:
        rc, _, err = cli("create", "clash", "--users", "1")
        assert rc == 0, err
        rc, out, _ = cli("prewarm", "clash")
        assert rc == 1 and "FAILED after" in out
        rc, out, _ = cli("status", "clash", "--json")
        row = json.loads(out)["participants"][0]
        assert (
            row["server"] == "failed" and "system account this hub did not create" in row["reason"]
        )
    finally:
        subprocess.run(["userdel", "clash-01"], check=False)


def test_federated_cohort_prints_the_entitlements(ws_stack, admin_token, cli, tmp_path):
    """With a federated issuer no accounts are made; the trainer learns what to ask the VO for."""
    federated = tmp_path / "federated.yaml"
    federated.write_text("auth:\n  issuer: https://aai.egi.eu/auth/realms/egi\n")
    rc, out, err = cli("create", "fedws", "--participants", "alice,bob", "--config", str(federated))
    assert rc == 0, err
    assert "urn:mace:egi.eu:group:vo.cscale.eu:workshop-fedws:role=member#aai.egi.eu" in out
    wdir = ws_stack.state_dir / "workshops" / "fedws"
    assert not (wdir / "accounts.csv").exists()
    assert json.loads((wdir / "workshop.json").read_text())["users"] == ["alice", "bob"]
    names = {a["username"] for a in list_accounts(ws_stack.state_dir / "oidc" / "accounts.json")}
    assert not {"alice", "bob"} & names
    group = HubAPI(ws_stack.url, admin_token).group("workshop-fedws")
    assert sorted(group["users"]) == ["alice", "bob"]
