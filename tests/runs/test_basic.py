"""Submit, follow and fetch runs over real HTTP through the hub's proxy."""

from __future__ import annotations

import json


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
    # the run directory lives in the user's home
    assert (minihub.dir / "homes" / "alice" / "runs" / run["id"] / "output.ipynb").exists()
