"""Fast tests of the runs service's defences against careless or hostile users (pure logic).

What a user controls — their status file, their cron expression, the size and rate of what
they submit — is tried here with the values an attacker would send. The stack-level versions
(over a real hub, proxy and user server) are in tests/security/test_runs_abuse.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from cscale_extensions.services.runs.cronrules import (
    NEVER,
    CronRefused,
    check_schedule,
    next_fire,
    smallest_interval,
)
from cscale_extensions.services.runs.dispatcher import PURGE_EVERY, Dispatcher
from cscale_extensions.services.runs.limits import BodyLimit, SubmissionRate, sweep_size
from cscale_extensions.services.runs.store import Store, engine_for
from cscale_extensions.services.runs.untrusted import STATUS_MAX_BYTES, BadStatus, parse_status

GOOD = {"state": "running", "pid": 42, "heartbeat": 1.7e9, "cell": 2, "cells": 5}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"cell": "not-a-number"}, "cell"),
        ({"cell": 10**30}, "cell"),
        ({"cells": -1}, "cells"),
        ({"pid": [1, 2]}, "pid"),
        ({"heartbeat": "soon"}, "heartbeat"),
        ({"heartbeat": float("nan")}, "heartbeat"),
        ({"state": "queued"}, "state"),
        ({"state": {"$gt": ""}}, "state"),
        ({"error": "boom"}, "error"),
        ({"message": "x" * 100_000}, "message"),
    ],
)
def test_hostile_status_fields_are_refused_by_name_without_echo(change, words):
    """A user rewrites fields of their own status.json: each is refused, naming the field,
    never echoing what they wrote (it ends up in a message an admin may read)."""
    text = json.dumps({**GOOD, **change})
    with pytest.raises(BadStatus) as info:
        parse_status(text)
    reason = str(info.value)
    assert words in reason
    assert "not-a-number" not in reason and "soon" not in reason and "boom" not in reason


@pytest.mark.parametrize(
    "text",
    ["", "{", "not json", "[1, 2]", '"a string"', "[" * 100_000 + "]" * 100_000, "1" * 5000],
)
def test_status_that_is_not_a_json_object_is_refused(text):
    with pytest.raises(BadStatus):
        parse_status(text)


def test_status_larger_than_the_limit_is_refused_before_parsing():
    big = json.dumps({**GOOD, "message": "x" * (STATUS_MAX_BYTES + 1)})
    with pytest.raises(BadStatus, match="larger than"):
        parse_status(big)


def test_executor_status_is_accepted_and_bounded():
    status = parse_status(json.dumps({**GOOD, "extra": "ignored", "error": None}))
    assert (status.cell, status.cells, status.pid, status.state) == (2, 5, 42, "running")
    assert parse_status("{}").state == "running"  # the executor's very first write


def test_impossible_cron_is_refused_and_never_raises():
    """February 31st: croniter raised at the next-date computation (a 500 at submission)."""
    with pytest.raises(CronRefused, match="does not fire within the next year"):
        check_schedule("0 0 31 2 *", 300)
    assert next_fire("0 0 31 2 *", time.time()) == NEVER


@pytest.mark.parametrize(
    ("cron", "gap"),
    [
        ("* * * * * *", 1),  # every second (seconds last)
        ("* * * * * */2", 2),
        ("* * * * *", 60),
        ("0,1 0 1 1 *", 60),  # once a year, but two firings a minute apart
        ("*/10 * * * * 0", 600),
        ("*/5 * * * *", 300),
        ("59 23 * * *", 86400),
        ("0 0 1,L * *", 86400),  # the last of a month and the 1st of the next
    ],
)
def test_smallest_interval_of_cron(cron, gap):
    assert smallest_interval(cron) == gap


@pytest.mark.parametrize("cron", ["* * * * * *", "* * * * *", "0,1 0 1 1 *", "*/4 * * * *"])
def test_too_frequent_cron_is_refused(cron):
    with pytest.raises(CronRefused, match="runs.min_schedule_interval"):
        check_schedule(cron, 300)


def test_reasonable_cron_is_accepted():
    now = time.time()
    first = check_schedule("*/5 * * * *", 300, now)
    assert now < first <= now + 300


def test_sweep_size_comes_from_the_grid_shape_without_expanding_it():
    grid = {f"p{i}": list(range(100)) for i in range(4)}  # 100**4 sets: ~40 GB expanded
    assert sweep_size([{}, {}], grid) == 2 + 100**4
    assert sweep_size(None, {"x": []}) == 0


def test_submission_rate_is_a_sliding_minute_per_user():
    now = [1000.0]
    rate = SubmissionRate(3, clock=lambda: now[0])
    assert [rate.check("eve") for _ in range(3)] == [0, 0, 0]
    wait = rate.check("eve")
    assert 59 <= wait <= 60
    assert rate.check("alice") == 0  # others are not affected
    now[0] += 60.5
    assert rate.check("eve") == 0


def _echo_app(limit: int) -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict:
        return {"read": len(await request.body())}

    app.add_middleware(BodyLimit, limit=limit, names="test.limit")
    return app


def test_body_limit_counts_bytes_read_chunked_or_not():
    """A body without Content-Length (chunked) is cut off at the limit too, with a 413."""
    client = TestClient(_echo_app(1000))
    assert client.post("/echo", content=b"x" * 1000).json() == {"read": 1000}
    r = client.post("/echo", content=b"x" * 1001)
    assert r.status_code == 413 and "test.limit" in r.json()["detail"]

    def chunks():
        for _ in range(100):
            yield b"y" * 100

    r = client.post("/echo", content=chunks())
    assert r.status_code == 413 and "1000 bytes" in r.json()["detail"]


def _settings(**kw) -> dict:
    return {
        "max_concurrent_per_user": 1,
        "poll_interval": 1,
        "heartbeat_timeout": 60,
        "server_start_timeout": 60,
        "retention_days": 30,
        **kw,
    }


def test_retention_removes_only_old_ended_records_never_user_files(tmp_path):
    """A workshop leaves thousands of ended runs: records ended over retention_days ago (and
    the service's own copies of their outputs) go; recent, queued and running runs stay; the
    run directories in the users' homes are out of the service's reach and stay."""
    store = Store(engine_for(None, tmp_path / "state"))
    d = Dispatcher(store, None, tmp_path / "state", _settings())  # no user servers needed
    now = time.time()
    day = 86400
    old, recent, running, queued = store.add_runs([{"owner": "eve"} for _ in range(4)])
    store.update_run(old["id"], state="succeeded", finished=now - 31 * day)
    store.update_run(recent["id"], state="failed", finished=now - 29 * day)
    store.update_run(running["id"], state="running", started=now - 40 * day)
    d.output_path(old["id"]).write_text("{}")
    d.log_path(old["id"]).write_text("log")
    home_copy = tmp_path / "homes" / "eve" / "runs" / old["id"] / "output.ipynb"
    home_copy.parent.mkdir(parents=True)
    home_copy.write_text("{}")

    assert d.purge_ended(now) == 1
    assert store.get_run(old["id"]) is None
    assert {r["id"] for r in store.list_runs()} == {recent["id"], running["id"], queued["id"]}
    assert not d.output_path(old["id"]).exists() and not d.log_path(old["id"]).exists()
    assert home_copy.exists()
    # at most once every PURGE_EVERY seconds; 0 keeps everything
    store.update_run(recent["id"], finished=now - 40 * day)
    assert d.purge_ended(now + 1) == 0
    assert d.purge_ended(now + PURGE_EVERY + 1) == 1
    keep = Dispatcher(store, None, tmp_path / "state", _settings(retention_days=0))
    store.update_run(queued["id"], state="cancelled", finished=now - 400 * day)
    assert keep.purge_ended(now + 10 * PURGE_EVERY) == 0
    assert store.get_run(queued["id"]) is not None


def test_delete_run_only_in_the_expected_states(tmp_path):
    store = Store(engine_for(None, tmp_path))
    a, b = store.add_runs([{"owner": "eve"}, {"owner": "eve"}])
    store.update_run(b["id"], state="running")
    assert not store.delete_run(b["id"], expect=("queued", "succeeded"))
    assert store.delete_run(a["id"], expect=("queued",))
    assert store.get_run(a["id"]) is None and store.get_run(b["id"]) is not None
    assert Path(tmp_path / "runs.sqlite").exists()
