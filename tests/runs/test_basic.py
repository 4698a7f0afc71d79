"""Submit, follow and fetch runs over real HTTP through the hub's proxy."""

from __future__ import annotations

import json
import time


def test_submit_follow_and_fetch_output(alice, make_nb, minihub):
    nb = make_nb("y = x * 2\nprint('result', y)", "import os\nprint('home', os.environ['HOME'])")
    run = alice.ok("POST", "runs", json={"notebook": nb, "parameters": {"x": 21}})
    assert run["state"] == "queued" and run["owner"] == "alice"
    done = alice.wait(run["id"])
    assert done["state"] == "succeeded", done
    assert done["cells"] == 4 and done["cell"] == 4  # parameters, injected parameters, 2 cells
    out = alice.ok("GET", f"runs/{run['id']}/output")
    text = json.dumps(out)
    assert "result 42" in text
    assert str(minihub.dir / "homes" / "alice") in text  # ran in alice's home
    logs = alice.ok("GET", f"runs/{run['id']}/logs").text
    assert "result 42" in logs
    assert (minihub.dir / "homes" / "alice" / "runs" / run["id"] / "output.ipynb").exists()


def test_failing_notebook_keeps_output_and_traceback(alice, make_nb):
    nb = make_nb("print('before')", "raise ValueError('boom ' + str(x))", "print('never')")
    run = alice.ok("POST", "runs", json={"notebook": nb, "parameters": {"x": 7}})
    done = alice.wait(run["id"])
    assert done["state"] == "failed"
    assert done["error"]["ename"] == "ValueError" and done["error"]["evalue"] == "boom 7"
    assert "boom 7" in done["message"]
    out = alice.ok("GET", f"runs/{run['id']}/output")
    outputs = [o for c in out["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o["output_type"] == "error"]
    assert errors and errors[0]["evalue"] == "boom 7" and errors[0]["traceback"]
    assert not any("never" in "".join(o.get("text", "")) for o in outputs)
    assert any("before" in "".join(o.get("text", "")) for o in outputs)


def test_notebook_from_the_home_runs_in_its_directory(carol, make_nb, minihub):
    home = minihub.dir / "homes" / "carol"
    (home / "analysis").mkdir(parents=True, exist_ok=True)
    (home / "analysis" / "data.txt").write_text("17")
    nb = make_nb("print('data', int(open('data.txt').read()) + x)")
    (home / "analysis" / "monthly.ipynb").write_text(json.dumps(nb))
    run = carol.ok("POST", "runs", json={"path": "analysis/monthly.ipynb", "parameters": {"x": 3}})
    done = carol.wait(run["id"])
    assert done["state"] == "succeeded", done
    assert "data 20" in json.dumps(carol.ok("GET", f"runs/{run['id']}/output"))


def test_cancel_running_and_queued(dave, make_nb):
    slow = make_nb("print('started', flush=True)", "import time\ntime.sleep(600)", "print('end')")
    running = dave.ok("POST", "runs", json={"notebook": slow})
    deadline = time.monotonic() + 180
    while True:
        r = dave.ok("GET", f"runs/{running['id']}")
        if r["state"] == "running" and r["cell"] >= 3:
            break
        assert time.monotonic() < deadline, r
        time.sleep(0.5)
    cancelled = dave.ok("POST", f"runs/{running['id']}/cancel")
    assert cancelled["cancel_requested"]
    done = dave.wait(running["id"])
    assert done["state"] == "cancelled", done
    out = json.dumps(dave.ok("GET", f"runs/{running['id']}/output"))
    assert "started" in out and "KeyboardInterrupt" in out
    # a cancelled run cannot be cancelled again, but can be re-run
    assert dave.call("POST", f"runs/{running['id']}/cancel").status_code == 409


def test_timeout_stops_the_run(erin, make_nb):
    run = erin.ok(
        "POST", "runs", json={"notebook": make_nb("import time\ntime.sleep(600)"), "timeout": 3}
    )
    done = erin.wait(run["id"])
    assert done["state"] == "timeout", done
    assert "timeout" in done["message"]


def test_openapi_document(minihub):
    import requests

    doc = requests.get(minihub.runs_url + "openapi.json", timeout=10).json()
    paths = set(doc["paths"])
    assert {
        "/services/runs/runs",
        "/services/runs/runs/{run_id}/cancel",
        "/services/runs/sweeps",
        "/services/runs/schedules",
    } <= paths
