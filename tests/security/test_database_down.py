"""The runs service and the hub with their PostgreSQL database gone, and back.

A real PostgreSQL 15 is stopped (fast shutdown, connections cut) and started again on the same
port and data: under the runs service of a real JupyterHub (cscale_testing.testhub.
MiniHub) while a run executes, and under the hub of `cscale-hub up` (`hub.db_url`) while a
user has a running server.
"""

from __future__ import annotations

import json
import time

import psycopg
import pytest
import requests
from cscale_testing import LocalStack, server_url
from cscale_testing.postgres import Postgres
from cscale_testing.testhub import CHP, MiniHub, Runs, notebook

from cscale_extensions.net import wait_for

pytestmark = pytest.mark.slow
rel = pytest.mark.reliability


@pytest.fixture(scope="module")
def pg():
    db = Postgres()
    try:
        db.start()
        yield db
    finally:
        db.remove()


@pytest.fixture(scope="module")
def hub(pg, tmp_path_factory):
    if not CHP.exists():
        pytest.skip("configurable-http-proxy is not installed (npm install)")
    mini = MiniHub(tmp_path_factory.mktemp("dbdown-hub"))
    mini.settings["db_url"] = pg.url
    try:
        mini.start()
        yield mini
    finally:
        mini.stop()


def _status(hub: MiniHub, user: str, run_id: str) -> dict:
    path = hub.dir / "homes" / user / "runs" / run_id / "status.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@rel(
    injected="the runs database (PostgreSQL) stopped while a run executes; started again after "
    "the run has ended in the user's server",
    expected="503 JSON with Retry-After (no traceback) while down; nothing recorded is lost; "
    "the run executing during the outage is recorded as succeeded with its output afterwards",
)
def test_runs_survive_a_database_outage(hub, pg):
    alice = Runs(hub.runs_url, hub.token("alice"))
    before = alice.ok("POST", "runs", json={"notebook": notebook("print('saved before')")})
    assert alice.wait(before["id"])["state"] == "succeeded"
    busy = alice.ok(
        "POST",
        "runs",
        json={"notebook": notebook("import time; time.sleep(15)", "print('done in the outage')")},
    )
    alice.wait(busy["id"], states=("running",))

    pg.stop()
    try:
        calls = [
            ("GET", "runs", {}),
            ("GET", f"runs/{before['id']}", {}),
            ("GET", f"runs/{before['id']}/output", {}),
            ("POST", "runs", {"json": {"name": "in-outage", "notebook": notebook("1")}}),
            ("GET", "health", {}),
        ]
        for method, path, kw in calls:
            r = alice.call(method, path, **kw)
            assert r.status_code == 503, (method, path, r.status_code, r.text)
            assert "Traceback" not in r.text
            assert "database" in r.json()["detail"], r.text
            assert r.headers.get("Retry-After"), r.headers
        # the run goes on in alice's server and ends there while the database is away
        deadline = time.monotonic() + 120
        while _status(hub, "alice", busy["id"]).get("state") != "succeeded":
            assert time.monotonic() < deadline, _status(hub, "alice", busy["id"])
            time.sleep(1)
    finally:
        pg.start()

    done = alice.wait(busy["id"], timeout=120)
    assert done["state"] == "succeeded", done
    assert "done in the outage" in json.dumps(alice.ok("GET", f"runs/{busy['id']}/output"))
    listed = {r["id"]: r for r in alice.ok("GET", "runs")}
    assert listed[before["id"]]["state"] == "succeeded"
    assert "saved before" in json.dumps(alice.ok("GET", f"runs/{before['id']}/output"))
    # the submission refused with 503 was not half-recorded
    assert not [r for r in listed.values() if r["name"] == "in-outage"]
    # and the service takes new work again
    after = alice.ok("POST", "runs", json={"notebook": notebook("print('after')")})
    assert alice.wait(after["id"])["state"] == "succeeded"


@rel(
    injected="the runs service restarted onto a new, empty database (PostgreSQL) that is "
    "stopped; the database started again afterwards",
    expected="the service starts anyway and answers 503 JSON with Retry-After; when the "
    "database is back its tables are created and runs are accepted and executed",
)
def test_runs_service_starts_while_its_database_is_down(hub, pg):
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE runs_fresh")
    alice = Runs(hub.runs_url, hub.token("alice"))
    kept = hub.settings["db_url"]
    hub.stop_service()
    pg.stop()
    try:
        hub.settings["db_url"] = pg.url.rsplit("/", 1)[0] + "/runs_fresh"
        hub.start_service(ready=False)
        for method, path, kw in (
            ("GET", "health", {}),
            ("GET", "runs", {}),
            ("POST", "runs", {"json": {"notebook": notebook("1")}}),
        ):
            r = alice.call(method, path, **kw)
            assert r.status_code == 503, (method, path, r.status_code, r.text)
            assert "database" in r.json()["detail"] and r.headers.get("Retry-After"), r.text
        time.sleep(3)  # the dispatcher has met the missing database too
        assert hub.service.poll() is None, hub.tail("runs.log")
        assert "the run database is unavailable at start-up" in hub.tail("runs.log")
    finally:
        pg.start()
    try:
        run = alice.ok("POST", "runs", json={"notebook": notebook("print('fresh tables')")})
        assert alice.wait(run["id"], timeout=120)["state"] == "succeeded"
        assert "fresh tables" in json.dumps(alice.ok("GET", f"runs/{run['id']}/output"))
        with psycopg.connect(pg.url.rsplit("/", 1)[0] + "/runs_fresh") as conn:
            assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    finally:
        hub.stop_service()
        hub.settings["db_url"] = kept
        hub.start_service()


@pytest.fixture(scope="module")
def hub_on_pg(pg):
    """`cscale-hub up` with the hub's own database on the PostgreSQL of this module."""
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE jupyterhub")
    url = pg.url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    url += "/jupyterhub"
    stack = LocalStack(
        config={
            "hub": {"db_url": url},
            "federation": {"embedded_sites": False},
            "eomqs": {"enabled": False},
            "runs": {"enabled": False},
            "dask_gateway": {"enabled": False},
        }
    ).start()
    try:
        yield stack
    finally:
        assert stack.stop() == []


@rel(
    injected="the hub's database (PostgreSQL) stopped while a user has a running server, "
    "then started again",
    expected="hub API and pages: 503 with Retry-After and a message naming the database (not "
    "403/login page/500), no traceback; the user's server stays reachable; all back after",
)
def test_hub_says_its_database_is_down_and_recovers(hub_on_pg, pg):
    stack, user = hub_on_pg, "demo-member"
    token = stack.api_token(user)
    server = server_url(stack.url, stack.start_server(token, user)["url"])
    browser = stack.login(user)
    api = {"Authorization": f"token {token}"}
    assert browser.get(server + "api/contents", timeout=30).status_code == 200

    pg.stop()
    try:
        r = requests.get(stack.url + "hub/api/user", headers=api, timeout=60)
        assert r.status_code == 503, (r.status_code, r.text)
        assert "database" in r.json()["message"] and r.headers.get("Retry-After")
        page = browser.get(stack.url + "hub/home", timeout=60)
        assert page.status_code == 503, (page.status_code, page.url, page.text[:300])
        assert "cannot reach its database" in page.text and "Traceback" not in page.text
        assert "/hub/login" not in page.url  # a signed-in user is not sent to sign in again
        # work goes on: the server answers its signed-in user (the hub is only asked later)
        assert browser.get(server + "api/contents", timeout=30).status_code == 200
    finally:
        pg.start()

    assert wait_for(
        lambda: (
            requests.get(stack.url + "hub/api/user", headers=api, timeout=30).status_code == 200
        ),
        60,
        1,
    ), "the hub did not recover when its database came back"
    model = requests.get(stack.url + "hub/api/user", headers=api, timeout=30).json()
    assert model["servers"][""]["ready"], model
    assert browser.get(stack.url + "hub/home", timeout=30).status_code == 200
    assert requests.get(server + "api/contents", headers=api, timeout=30).status_code == 200
