"""Who may see and control which runs; bad input gives clear 4xx JSON errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests


def test_users_see_and_control_only_their_own_runs(alice, bob, runs_for, make_nb):
    run = alice.ok("POST", "runs", json={"notebook": make_nb("print('secret')")})
    alice.wait(run["id"])
    rid = run["id"]
    for method, path in (
        ("GET", f"runs/{rid}"),
        ("GET", f"runs/{rid}/output"),
        ("GET", f"runs/{rid}/logs"),
        ("POST", f"runs/{rid}/cancel"),
        ("POST", f"runs/{rid}/rerun"),
    ):
        r = bob.call(method, path)
        assert r.status_code == 404, (method, path, r.status_code)
        assert "secret" not in r.text
    assert rid not in {x["id"] for x in bob.ok("GET", "runs")}
    assert rid in {x["id"] for x in alice.ok("GET", "runs")}
    assert bob.call("GET", "runs", params={"all": "true"}).status_code == 403
    assert bob.call("GET", "runs", params={"user": "alice"}).status_code == 403

    admin = runs_for("root-admin")
    assert rid in {x["id"] for x in admin.ok("GET", "runs", params={"all": "true"})}
    assert admin.ok("GET", f"runs/{rid}")["owner"] == "alice"
    assert "secret" in str(admin.ok("GET", f"runs/{rid}/output"))


def test_script_token_with_only_the_service_scope(runs_for, make_nb):
    scoped = runs_for("bob", ["access:services!service=runs"])
    run = scoped.ok("POST", "runs", json={"notebook": make_nb("print(x)"), "parameters": {"x": 5}})
    assert scoped.wait(run["id"])["state"] == "succeeded"
    assert run["id"] in {x["id"] for x in scoped.ok("GET", "runs")}


def test_tokens_without_access_are_refused(minihub, runs_for):
    no_access = runs_for("bob", ["read:users:name!user"])
    r = no_access.call("GET", "runs")
    assert r.status_code == 403 and "access:services!service=runs" in r.json()["detail"]
    assert requests.get(minihub.runs_url + "runs", timeout=10).status_code == 401
    bad = requests.get(
        minihub.runs_url + "runs", timeout=10, headers={"Authorization": "token not-a-token"}
    )
    assert bad.status_code == 401 and bad.json()["detail"]


def test_bad_input_is_a_clear_client_error(alice, make_nb):
    nb = make_nb("1")
    cases = [
        ("POST", "runs", {"notebook": nb, "path": "a.ipynb"}, 422, "exactly one"),
        ("POST", "runs", {}, 422, "exactly one"),
        ("POST", "runs", {"path": "../bob/x.ipynb"}, 422, "relative"),
        ("POST", "runs", {"path": "/etc/x.ipynb"}, 422, "relative"),
        ("POST", "runs", {"notebook": {"cells": "no"}}, 422, "nbformat"),
        ("POST", "runs", {"notebook": nb, "timeout": -1}, 422, "timeout"),
        ("POST", "sweeps", {"notebook": nb}, 422, "parameter_sets"),
        ("POST", "schedules", {"notebook": nb, "cron": "every day"}, 422, "cron"),
        ("GET", "runs?state=bogus", None, 422, "unknown state"),
        ("GET", "runs/doesnotexist", None, 404, "no run"),
        ("DELETE", "schedules/doesnotexist", None, 404, "no schedule"),
    ]
    for method, path, body, status, words in cases:
        r = alice.call(method, path, json=body)
        assert r.status_code == status, (path, body, r.status_code, r.text)
        assert words in r.text, (path, r.text)
        assert r.headers["content-type"].startswith("application/json")


def test_delete_run_owner_or_admin_running_refused_home_files_stay(
    alice, bob, runs_for, make_nb, minihub
):
    """DELETE /runs/{id}: another user gets 404 and deletes nothing; a running run is refused
    (409, cancel it first); an ended run's record goes (owner or admin), its files in the
    user's home stay; `cscale-hub runs delete` does the same from a terminal."""
    ended = alice.ok("POST", "runs", json={"notebook": make_nb("print('keep me')")})
    assert alice.wait(ended["id"])["state"] == "succeeded"
    slow = alice.ok("POST", "runs", json={"notebook": make_nb("import time; time.sleep(600)")})
    alice.wait(slow["id"], states=("running",))
    home_dir = minihub.dir / "homes" / "alice" / "runs" / ended["id"]
    assert (home_dir / "output.ipynb").exists()

    assert bob.call("DELETE", f"runs/{ended['id']}").status_code == 404
    r = alice.call("DELETE", f"runs/{slow['id']}")
    assert r.status_code == 409 and "cancel it first" in r.json()["detail"]
    assert alice.call("DELETE", f"runs/{ended['id']}").status_code == 204
    assert alice.call("GET", f"runs/{ended['id']}").status_code == 404
    assert ended["id"] not in {x["id"] for x in alice.ok("GET", "runs")}
    assert (home_dir / "output.ipynb").exists() and "keep me" in (
        home_dir / "output.ipynb"
    ).read_text()

    alice.ok("POST", f"runs/{slow['id']}/cancel")
    assert alice.wait(slow["id"])["state"] == "cancelled"
    admin = runs_for("root-admin")
    assert admin.call("DELETE", f"runs/{slow['id']}").status_code == 204

    queued = bob.ok("POST", "runs", json={"notebook": make_nb("1")})
    cli = [str(Path(sys.executable).with_name("cscale-hub")), "runs", "delete", queued["id"]]
    env = {
        **os.environ,
        "CSCALE_HUB_URL": minihub.url,
        "CSCALE_HUB_TOKEN": minihub.token("bob"),
        "CSCALE_RUNS_URL": "",
        "JUPYTERHUB_API_TOKEN": "",
    }
    out = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120)
    if bob.call("GET", f"runs/{queued['id']}").status_code == 200:  # it was dispatched first
        assert out.returncode == 2 and "409" in out.stderr, out.stderr
    else:
        assert out.returncode == 0 and "deleted" in out.stdout, out.stderr
