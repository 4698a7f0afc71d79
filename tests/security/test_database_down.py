"""The runs service with its PostgreSQL database gone, and back.

A real JupyterHub with the runs service (cscale_extensions.runs.testhub.MiniHub) keeps its
runs in a real PostgreSQL 15, which the test stops (fast shutdown, connections cut) while a
run executes and starts again later.
"""

from __future__ import annotations

import json
import time

import pytest
from faultkit import Postgres

from cscale_extensions.runs.testhub import CHP, MiniHub, Runs, notebook

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
