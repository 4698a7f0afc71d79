"""The runs service against a careless or hostile participant, over the real stack.

A workshop puts strangers on one hub and one runs service. Each test here is what one of them
could do with nothing but their own token and their own home: rewrite the status file of
their own run, send a tiny sweep whose grid expands to a million runs, schedule the
impossible or every second, flood submissions or parameters. What must hold: only their own
request or run fails, with a message saying why; everyone else's runs go on; the service
stays responsive and its memory does not jump.
"""

from __future__ import annotations

import json
import threading

import pytest
import requests
from cscale_testing.testhub import Runs, notebook
from seckit import SecStack

from cscale_extensions.config import defaults
from cscale_extensions.net import wait_for

rel = pytest.mark.reliability
RUNS = defaults()["runs"]
MiB = 1024 * 1024

# each writes hostile content into the run's own status.json, then kills the executor so that
# nothing rewrites the file (ipykernel then ends itself: its parent is gone)
HOSTILE = {
    "not-a-number": 'json.dump({"state": "running", "heartbeat": time.time(), '
    '"cell": "not-a-number", "cells": 3}, open(p, "w"))',
    "huge-number": 'json.dump({"state": "running", "heartbeat": time.time(), '
    '"cell": 10**30, "cells": 3}, open(p, "w"))',
    "wrong-types": 'json.dump({"state": ["running"], "heartbeat": "soon", "error": "boom"}, '
    'open(p, "w"))',
    "invalid-json": 'open(p, "w").write(\'{"state": "runn\')',
    "50-MB": 'json.dump({"state": "running", "heartbeat": time.time(), '
    '"message": "x" * 50_000_000}, open("big", "w")); os.replace("big", p)',
    "symlink": "os.remove(p); os.symlink('/etc/passwd', p)",
}
REASON = {
    "not-a-number": "cell",
    "huge-number": "cell",
    "wrong-types": "state",
    "invalid-json": "not JSON",
    "50-MB": "larger than",
    "symlink": "not JSON",
}


def hostile_notebook(kind: str) -> dict:
    write = HOSTILE[kind]
    small = kind not in ("50-MB", "symlink")
    code = (
        "import json, os, signal, time\n"
        "p = 'status.json'\n"
        f"{write}\n"
        + ("" if small else "open('hostile-done', 'w').close()\n")
        + "os.kill(os.getppid(), signal.SIGKILL)  # the executor: nothing rewrites the file now\n"
        # written again in case the executor's heartbeat came in between (the kernel itself
        # ends about a second after its parent)
        + (f"{write}\nopen('hostile-done', 'w').close()\n" if small else "")
        + "time.sleep(30)\n"
    )
    return notebook(code)


def service_rss(sec: SecStack) -> int:
    """Resident memory (bytes) of this stack's runs service."""
    return sec.stack.service_process("cscale_extensions.services.runs").memory_info().rss


def user_runs(sec: SecStack, name: str) -> Runs:
    sec.member(name)
    return Runs(sec.url + "services/runs/", sec.token(name))


@pytest.fixture(scope="module")
def victim(sec) -> Runs:
    return user_runs(sec, "sec-victim")


@pytest.fixture(scope="module")
def hostile(sec) -> Runs:
    return user_runs(sec, "sec-hostile")


@rel(
    injected="a user overwrites the status.json of their own running run ({param}) and kills "
    "its executor so nothing repairs it; another user submits a run meanwhile",
    expected="only that run fails, with a message naming its status file and what is wrong "
    "(not its content); the other user's run is dispatched and succeeds; the service's "
    "memory does not jump",
)
@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_status_file_fails_only_its_own_run(sec, hostile, victim, kind):
    rss_before = service_rss(sec)
    run = hostile.ok("POST", "runs", json={"notebook": hostile_notebook(kind), "name": kind})
    done_flag = sec.stack.state_dir / "homes" / "sec-hostile" / "runs" / run["id"] / "hostile-done"
    assert wait_for(done_flag.exists, 180, 0.3), hostile.ok("GET", f"runs/{run['id']}")
    # the hostile file is in place: everyone else's queue must go on
    other = victim.ok("POST", "runs", json={"notebook": notebook("print('victim ok')")})
    ok = victim.wait(other["id"], timeout=180)
    assert ok["state"] == "succeeded", ok
    bad = hostile.wait(run["id"], timeout=120)
    assert bad["state"] == "failed", bad
    message = bad["message"]
    assert "status file" in message and "status.json" in message and REASON[kind] in message
    assert "not-a-number" not in message and "root:" not in message and "xxxx" not in message
    assert bad["error"]["ename"] == "InvalidStatusFile"
    assert service_rss(sec) - rss_before < 40 * MiB


@rel(
    injected="five 1.4 KB POST /sweeps whose grid is 100 x 100 x 100 (a million runs), while "
    "/health is polled",
    expected="each refused at once with 413 naming runs.max_sweep, before the grid is "
    "expanded; /health answers throughout; nothing stored; the service's memory does not jump",
)
def test_sweep_grid_bomb_is_refused_from_its_shape(sec):
    api = user_runs(sec, "sec-sweeper")
    body = {
        "notebook": notebook("print(a, b, c)"),
        "grid": {name: list(range(100)) for name in ("a", "b", "c")},
    }
    assert len(json.dumps(body)) < 2500
    health = sec.url + "services/runs/health"
    answers: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                answers.append(requests.get(health, timeout=30).status_code)
            except requests.RequestException:
                answers.append(0)

    rss_before = service_rss(sec)
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        for _ in range(5):
            r = api.call("POST", "sweeps", json=body)
            assert r.status_code == 413, r.text
            detail = r.json()["detail"]
            assert "runs.max_sweep" in detail and "1,000,000" in detail, detail
    finally:
        stop.set()
        poller.join(60)
    assert answers and set(answers) == {200}, answers
    assert service_rss(sec) - rss_before < 40 * MiB
    assert api.ok("GET", "runs") == []


@rel(
    injected="schedules with an impossible cron (0 0 31 2 *: February 31st) and one firing "
    "every second (* * * * * *)",
    expected="both refused with 400 and a clear message (no 500, no traceback); a schedule "
    "every 10 minutes is accepted",
)
def test_impossible_and_too_frequent_cron_are_refused(sec):
    api = user_runs(sec, "sec-cron")
    nb = notebook("print(1)")
    for cron, words in (
        ("0 0 31 2 *", "does not fire within the next year"),
        ("* * * * * *", "runs.min_schedule_interval"),
        ("* * * * *", f"at most once every {RUNS['min_schedule_interval']:g} s"),
    ):
        r = api.call("POST", "schedules", json={"notebook": nb, "cron": cron})
        assert r.status_code == 400, (cron, r.status_code, r.text)
        assert words in r.json()["detail"] and "Traceback" not in r.text
    assert api.ok("GET", "schedules") == []
    s = api.ok("POST", "schedules", json={"notebook": nb, "cron": "*/10 * * * *"})
    assert api.call("DELETE", f"schedules/{s['id']}").status_code == 204


@rel(
    injected=f"{RUNS['max_submissions_per_minute'] + 1} submissions by one user within a minute",
    expected="the one past runs.max_submissions_per_minute is refused with 429, Retry-After "
    "and a message naming the limit; another user submits normally",
)
def test_submission_flood_is_rate_limited(sec, victim):
    api = user_runs(sec, "sec-flooder")
    nb = notebook("1")
    limit = RUNS["max_submissions_per_minute"]
    accepted: list[str] = []
    try:
        for _ in range(limit):
            r = api.call("POST", "runs", json={"notebook": nb})
            assert r.status_code in (201, 429), r.text  # 429 here: the queue limit
            assert "max_submissions_per_minute" not in r.text
            if r.status_code == 201:
                accepted.append(r.json()["id"])
        r = api.call("POST", "runs", json={"notebook": nb})
        assert r.status_code == 429, r.text
        detail = r.json()["detail"]
        assert "runs.max_submissions_per_minute" in detail and str(limit) in detail
        assert 0 < int(r.headers["Retry-After"]) <= 60
        assert victim.call("POST", "runs", json={"notebook": nb}).status_code == 201
    finally:
        for rid in accepted:
            api.call("POST", f"runs/{rid}/cancel")


@rel(
    injected="a run with 2 MiB of parameters; a request body of 20 MiB (notebook)",
    expected="413 naming runs.max_parameters_bytes, resp. the body limit "
    "(runs.max_notebook_bytes + runs.max_parameters_bytes), before anything is stored",
)
def test_oversized_parameters_and_bodies_are_refused_before_storing(sec):
    api = user_runs(sec, "sec-bigparams")
    nb = notebook("print(len(blob))", params="blob = ''")
    r = api.call("POST", "runs", json={"notebook": nb, "parameters": {"blob": "x" * 2 * MiB}})
    assert r.status_code == 413, r.text[:300]
    assert "runs.max_parameters_bytes" in r.json()["detail"]
    huge = notebook("x = 1")
    huge["cells"][1]["source"] = "#" * 20 * MiB
    r = api.call("POST", "runs", json={"notebook": huge})
    assert r.status_code == 413, r.text[:300]
    assert "runs.max_notebook_bytes" in r.json()["detail"]
    assert api.ok("GET", "runs") == []
