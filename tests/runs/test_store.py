"""The run store on sqlite and on a real PostgreSQL 15 (cscale_testing.postgres), and request
validation."""

from __future__ import annotations

import time

import pytest
from cscale_testing.postgres import Postgres
from pydantic import ValidationError

from cscale_extensions.services.runs.dispatcher import next_fire
from cscale_extensions.services.runs.models import RunRequest, ScheduleRequest, SweepRequest
from cscale_extensions.services.runs.store import Store, engine_for


@pytest.fixture(scope="module")
def pg_url():
    with Postgres(prefix="runs-pg-") as pg:
        yield pg.url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = engine_for(url, tmp_path)
    yield Store(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM runs")
        conn.exec_driver_sql("DELETE FROM schedules")
    engine.dispose()


def test_runs_round_trip_and_guarded_transitions(store):
    nb = {"nbformat": 4, "cells": []}
    a, b = store.add_runs(
        [
            {"owner": "alice", "notebook": nb, "parameters": {"x": [1, 2]}},
            {"owner": "alice", "path": "a.ipynb"},
        ]
    )
    assert a["state"] == "queued" and a["parameters"] == {"x": [1, 2]} and a["notebook"] is None
    assert store.get_run(a["id"], with_notebook=True)["notebook"] == nb
    assert store.update_run(a["id"], expect=("queued",), state="dispatching")
    assert not store.update_run(a["id"], expect=("queued",), state="dispatching")  # only once
    assert store.count_active() == {"alice": 1}
    store.update_run(a["id"], state="failed", error={"cell": 2, "ename": "E"})
    assert store.get_run(a["id"])["error"] == {"cell": 2, "ename": "E"}
    assert [r["id"] for r in store.list_runs(owner="alice", oldest_first=True)] == [
        a["id"],
        b["id"],
    ]
    assert store.list_runs(owner="bob") == []
    assert [r["id"] for r in store.list_runs(states=("queued",))] == [b["id"]]


def test_schedules_due_and_deleted(store):
    s = store.add_schedule(
        {"owner": "bob", "cron": "0 6 1 * *", "path": "m.ipynb", "next_fire": time.time() - 1}
    )
    assert [x["id"] for x in store.list_schedules(due_before=time.time())] == [s["id"]]
    store.update_schedule(s["id"], next_fire=next_fire(s["cron"], time.time()))
    assert store.list_schedules(due_before=time.time()) == []
    assert store.delete_schedule(s["id"]) and not store.delete_schedule(s["id"])


def test_next_fire_follows_cron():
    t = time.mktime((2026, 1, 31, 12, 0, 0, 0, 0, -1))
    assert time.localtime(next_fire("0 6 1 * *", t))[:5] == (2026, 2, 1, 6, 0)
    assert next_fire("* * * * * */5", t) - t == 5


def test_request_validation():
    nb = {"nbformat": 4, "cells": []}
    assert SweepRequest(
        notebook=nb, parameters={"a": 1}, grid={"x": [1, 2], "y": ["p", "q"]}
    ).expand() == [
        {"a": 1, "x": 1, "y": "p"},
        {"a": 1, "x": 1, "y": "q"},
        {"a": 1, "x": 2, "y": "p"},
        {"a": 1, "x": 2, "y": "q"},
    ]
    with pytest.raises(ValueError, match="at least one"):
        SweepRequest(notebook=nb).expand()
    for bad in (
        {"notebook": nb, "path": "a.ipynb"},
        {"path": "a.txt"},
        {"path": "x/../../a.ipynb"},
        {"notebook": {"nbformat": 3, "cells": []}},
    ):
        with pytest.raises(ValidationError):
            RunRequest(**bad)
    with pytest.raises(ValidationError, match="cron"):
        ScheduleRequest(path="a.ipynb", cron="61 * * * *")
