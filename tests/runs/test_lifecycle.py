"""Sweeps, schedules, a service restart, and runs lost to a crash (then re-run)."""

from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pytest

from cscale_extensions.net import wait_for

TERMINAL = {"succeeded", "failed", "cancelled", "timeout", "lost"}


KERNEL_SOCKETS = """
import os, time
from ipykernel.kernelapp import IPKernelApp
app = IPKernelApp.instance()
print('transport', app.transport, 'mode', oct(os.stat(os.path.dirname(app.ip)).st_mode & 0o777))
print('sockets', os.path.dirname(app.ip))
time.sleep(1)
print('square', x * x)
"""


def test_sweep_of_eight_runs_concurrently_within_the_user_limit(alice, make_nb, minihub):
    """Eight kernels start at once: each on Unix sockets in a private directory of its run
    (over TCP they raced for the same free ports and one died), removed when the run ends."""
    nb = make_nb(KERNEL_SOCKETS)
    out = alice.ok("POST", "sweeps", json={"notebook": nb, "grid": {"x": list(range(8))}})
    ids = [r["id"] for r in out["runs"]]
    assert len(ids) == 8 and {r["sweep_id"] for r in out["runs"]} == {out["sweep_id"]}
    limit = minihub.settings["max_concurrent_per_user"]
    most_active = 0
    deadline = time.monotonic() + 300
    while True:
        sweep = alice.ok("GET", f"sweeps/{out['sweep_id']}")
        active = sum(r["state"] in ("dispatching", "running") for r in sweep["runs"])
        most_active = max(most_active, active)
        if all(r["state"] in TERMINAL for r in sweep["runs"]):
            break
        assert time.monotonic() < deadline, sweep["counts"]
        time.sleep(0.3)
    assert sweep["counts"] == {"succeeded": 8}
    assert 1 < most_active <= limit
    for run in sweep["runs"]:
        x = run["parameters"]["x"]
        output = json.dumps(alice.ok("GET", f"runs/{run['id']}/output"))
        assert f"square {x * x}" in output and "transport ipc mode 0o700" in output
        sockets = output.split("sockets ", 1)[1].split("\\n", 1)[0]
        assert sockets.startswith("/") and not os.path.exists(sockets), sockets


def test_schedule_fires_and_stops_when_deleted(bob, make_nb):
    nb = make_nb("print('monthly product', x)")
    s = bob.ok(
        "POST",
        "schedules",
        json={
            "notebook": nb,
            "cron": "* * * * * */2",
            "parameters": {"x": 2026},
            "name": "monthly",
        },
    )
    assert s["next_fire"] > time.time() - 1
    deadline = time.monotonic() + 120
    while not (fired := [r for r in bob.ok("GET", "runs") if r["schedule_id"] == s["id"]]):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert bob.call("DELETE", f"schedules/{s['id']}").status_code == 204
    done = bob.wait(fired[-1]["id"])
    assert done["state"] == "succeeded", done
    assert "monthly product 2026" in json.dumps(bob.ok("GET", f"runs/{done['id']}/output"))
    count = len([r for r in bob.ok("GET", "runs") if r["schedule_id"] == s["id"]])
    time.sleep(4)  # two more firing periods: nothing new after the delete
    assert len([r for r in bob.ok("GET", "runs") if r["schedule_id"] == s["id"]]) == count
    assert bob.call("GET", f"schedules/{s['id']}").status_code == 404


def test_service_restart_loses_no_queued_or_running_run(carol, make_nb, minihub):
    nb = make_nb("import time\ntime.sleep(4)\nprint('survived', x)")
    out = carol.ok("POST", "sweeps", json={"notebook": nb, "grid": {"x": list(range(6))}})
    ids = [r["id"] for r in out["runs"]]
    deadline = time.monotonic() + 180
    while True:
        states = [r["state"] for r in carol.ok("GET", f"sweeps/{out['sweep_id']}")["runs"]]
        if "running" in states and "queued" in states:
            break
        assert time.monotonic() < deadline and not set(states) & TERMINAL, states
        time.sleep(0.2)
    minihub.stop_service(signal.SIGKILL)  # a crash: no clean shutdown
    time.sleep(2)
    minihub.start_service()
    for run_id in ids:
        done = carol.wait(run_id)
        assert done["state"] == "succeeded", done
        x = done["parameters"]["x"]
        assert f"survived {x}" in json.dumps(carol.ok("GET", f"runs/{run_id}/output"))
        log = carol.ok("GET", f"runs/{run_id}/logs").text
        assert log.count("run finished") == 1, log  # executed exactly once


@pytest.mark.slow
def test_run_cut_off_by_a_crash_is_lost_and_can_be_rerun(dave, make_nb, minihub):
    home = minihub.dir / "homes" / "dave"
    flag = home / "may-finish"
    nb = make_nb(
        "import pathlib, time\nwhile not pathlib.Path(flag).exists():\n    time.sleep(0.2)\n"
        "print('finished after rerun')",
        params="flag = ''",
    )
    run = dave.ok("POST", "runs", json={"notebook": nb, "parameters": {"flag": str(flag)}})
    status_file = home / "runs" / run["id"] / "status.json"
    deadline = time.monotonic() + 180
    while dave.ok("GET", f"runs/{run['id']}")["cell"] < 3:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    executor = psutil.Process(json.loads(status_file.read_text())["pid"])
    victims = [executor, *executor.children(recursive=True)]
    for p in victims:
        os.kill(p.pid, signal.SIGKILL)  # the executor and its kernel die without a word
    lost = dave.wait(run["id"], timeout=120)
    assert lost["state"] == "lost", lost
    flag.write_text("ok")
    again = dave.ok("POST", f"runs/{run['id']}/rerun")
    assert again["rerun_of"] == run["id"] and again["parameters"] == {"flag": str(flag)}
    done = dave.wait(again["id"])
    assert done["state"] == "succeeded", done
    assert "finished after rerun" in json.dumps(dave.ok("GET", f"runs/{again['id']}/output"))


def _forkservers(home) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "cscale_extensions.services.runs.forkserver" in cmd and str(home) in cmd:
            found.append(p)
    return found


def test_executor_fork_server_is_used_and_replaced_when_it_dies(erin, make_nb, minihub):
    home = minihub.dir / "homes" / "erin"
    nb = make_nb("print('ran', x)")
    for x in (1, 2):  # the first run starts the fork server, the second uses it
        run = erin.ok("POST", "runs", json={"notebook": nb, "parameters": {"x": x}})
        assert erin.wait(run["id"])["state"] == "succeeded"
    servers = _forkservers(home)
    assert len(servers) == 1 and (home / "runs" / ".executor.sock").is_socket()
    assert f"forked for {run['id']}" in (home / "runs" / "forkserver.log").read_text()
    servers[0].kill()  # (stays a zombie of the launcher kernel until that reaps it)
    assert wait_for(lambda: not _forkservers(home), 10)
    run = erin.ok("POST", "runs", json={"notebook": nb, "parameters": {"x": 3}})
    done = erin.wait(run["id"])
    assert done["state"] == "succeeded", done  # launched directly while a new server starts
    assert "ran 3" in json.dumps(erin.ok("GET", f"runs/{run['id']}/output"))
    assert wait_for(lambda: len(_forkservers(home)) == 1, 30)
