"""Headless runs on the ``hpc`` site of the whole platform (`cscale-hub up`): a real Slurm.

The local stack's embedded single-node Slurm (munge, slurmctld, slurmd) executes the runs:
each run is a batch job submitted from the user's own ``runs`` server, a sweep one job array.
Checked: the job runs as the member's POSIX account in their home with papermill, and the
service's token is not in its environment; 8 parameter sets are the 8 tasks of one array; a
failing run keeps its output notebook; cancel reaches ``scancel`` (Slurm records the job
CANCELLED); the CLI's ``--site``; refusals name the reason. None of this existed before (the
API had no ``site``: the field was ignored and every run executed on the cloud site, so each
test's ``site``/``site_job`` assertions failed).
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest
import requests

from cscale_extensions.compute.slurm import SlurmSite

pytestmark = pytest.mark.slow
TERMINAL = ("succeeded", "failed", "cancelled", "timeout", "lost")
USER = "demo-member"


def _nb(*cells: str) -> dict:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(c) for c in cells)]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return json.loads(nbformat.writes(nb))


WHO = (
    "import os, json\n"
    "print('WHO ' + json.dumps({'uid': os.getuid(), 'home': os.environ['HOME'], 'cwd': os.getcwd(),"
    " 'job': os.environ.get('SLURM_JOB_ID'), 'array': os.environ.get('SLURM_ARRAY_JOB_ID'),"
    " 'task': os.environ.get('SLURM_ARRAY_TASK_ID'), 'x': x}))"
)


def _who(output: str) -> dict:
    """The WHO line printed by the notebook, from the output notebook's JSON."""
    nb = json.loads(output)
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            text = "".join(out.get("text", ""))
            if text.startswith("WHO "):
                return json.loads(text[4:].strip())
    raise AssertionError("no WHO line in the output notebook")


class Api:
    def __init__(self, platform, user: str = USER):
        self.url = platform.url + "services/runs/"
        self.token = platform.api_token(user, ["access:services!service=runs"])
        self.http = platform.api(self.token)

    def post(self, path: str, body: dict) -> requests.Response:
        return self.http.post(self.url + path, json=body, timeout=60)

    def get(self, path: str) -> dict:
        r = self.http.get(self.url + path, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, run_id: str, timeout: float = 300, until=lambda run: run["state"] in TERMINAL):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.get(f"runs/{run_id}")
            if until(run):
                return run
            time.sleep(0.5)
        raise AssertionError(f"run not there in {timeout} s: {run}")

    def output(self, run_id: str) -> str:
        r = self.http.get(self.url + f"runs/{run_id}/output", timeout=60)
        assert r.status_code == 200, r.text
        return r.text


@pytest.fixture(scope="module")
def api(platform) -> Api:
    return Api(platform)


@pytest.fixture(scope="module")
def hpc(platform) -> SlurmSite:
    """The Slurm commands of the stack's hpc site (SLURM_CONF of its embedded Slurm)."""
    return SlurmSite.from_settings(platform.cfg["compute"]["sites"]["hpc"]["slurm"])


def _slurm_state(hpc: SlurmSite, ref: str) -> str:
    argv = [*hpc.command("squeue"), "-h", "-r", "--states=all", "-o", "%i %T"]
    lines = hpc.run(argv).stdout.split("\n")
    found = dict(line.split() for line in lines if line.strip())
    return found.get(ref, "UNKNOWN")


def _slurm_ends(hpc: SlurmSite, ref: str, states: tuple[str, ...], timeout: float = 60) -> None:
    """Wait until Slurm has the job in one of ``states`` (it ends a moment after the executor
    wrote its final status: the kernel shuts down, the output is saved)."""
    deadline = time.monotonic() + timeout
    while (state := _slurm_state(hpc, ref)) not in states:
        assert time.monotonic() < deadline, f"job {ref} is {state}, not one of {states}"
        time.sleep(0.5)


def _dead(proc: psutil.Process, timeout: float) -> None:
    """Wait until ``proc`` has exited: gone, or a zombie its parent has not reaped yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        assert time.monotonic() < deadline, f"pid {proc.pid} still runs {timeout} s after SIGKILL"
        time.sleep(0.2)


def test_sites_listed(api):
    names = {s["name"]: s for s in api.get("sites")}
    assert {"cloud", "hpc"} <= set(names)
    assert names["hpc"]["kind"] == "slurm" and names["hpc"]["max_timeout"] > 0


def test_run_on_hpc_is_a_slurm_job_of_the_member(platform, api):
    r = api.post("runs", {"notebook": _nb(WHO), "parameters": {"x": 7}, "site": "hpc"})
    assert r.status_code == 201, r.text
    assert r.json()["site"] == "hpc"
    run = api.wait(r.json()["id"])
    assert run["state"] == "succeeded", run
    who = _who(api.output(run["id"]))
    assert run["site_job"] == who["job"] and who["job"].isdigit()
    assert who["uid"] == pwd.getpwnam(USER).pw_uid != 0  # the member's own account, never root
    home = str(platform.state_dir / "homes" / USER)  # the home of their servers
    assert who["home"] == home and who["cwd"] == f"{home}/runs/{run['id']}"
    assert who["x"] == 7
    assert run["progress"] == {"cell": 3, "cells": 3}
    # the runs service's own token never reaches the job (its environment is the user's)
    service = platform.service_process("cscale_extensions.services.runs")
    secret = service.environ()["JUPYTERHUB_API_TOKEN"]
    env_nb = _nb("import os, json\nprint('WHO ' + json.dumps(dict(os.environ)))")
    r = api.post("runs", {"notebook": env_nb, "site": "hpc"})
    env_run = api.wait(r.json()["id"])
    assert env_run["state"] == "succeeded", env_run
    job_env = _who(api.output(env_run["id"]))
    assert job_env.get("SLURM_JOB_ID") == env_run["site_job"]
    assert all(secret not in value for value in job_env.values())


def test_sweep_of_8_is_one_job_array(api, hpc):
    body = {"notebook": _nb(WHO), "site": "hpc", "parameter_sets": [{"x": i} for i in range(8)]}
    r = api.post("sweeps", body)
    assert r.status_code == 201, r.text
    ids = [x["id"] for x in r.json()["runs"]]
    runs = [api.wait(i, timeout=600) for i in ids]
    assert [x["state"] for x in runs] == ["succeeded"] * 8, runs
    array = runs[0]["site_job"].split("_")[0]
    assert [x["site_job"] for x in runs] == [f"{array}_{i}" for i in range(8)]
    for i, run in enumerate(runs):
        who = _who(api.output(run["id"]))
        assert (who["array"], who["task"], who["x"]) == (array, str(i), i)
    for run in runs:
        _slurm_ends(hpc, run["site_job"], ("COMPLETED", "UNKNOWN"))


def test_failing_run_keeps_its_output(api):
    nb = _nb("print('partial result', 6 * 7)", "1 / 0", "print('never')")
    r = api.post("runs", {"notebook": nb, "site": "hpc"})
    assert r.status_code == 201, r.text
    run = api.wait(r.json()["id"])
    assert run["state"] == "failed", run
    assert run["error"]["ename"] == "ZeroDivisionError" and run["site_job"]
    output = api.output(run["id"])
    assert "partial result 42" in output and "ZeroDivisionError" in output
    assert "never" not in "".join(
        "".join(o.get("text", ""))
        for c in json.loads(output)["cells"]
        for o in c.get("outputs", [])
    )


def test_cancel_reaches_scancel(api, hpc):
    nb = _nb("print('started', flush=True)", "import time\ntime.sleep(600)")
    r = api.post("runs", {"notebook": nb, "site": "hpc"})
    assert r.status_code == 201, r.text
    run = api.wait(r.json()["id"], until=lambda x: x["state"] == "running" and x["cell"] >= 3)
    ref = run["site_job"]
    assert _slurm_state(hpc, ref) == "RUNNING"
    r = api.post(f"runs/{run['id']}/cancel", {})
    assert r.status_code == 202, r.text
    done = api.wait(run["id"], timeout=120)
    assert done["state"] == "cancelled", done
    assert "scancel" in done["message"]
    _slurm_ends(hpc, ref, ("CANCELLED", "UNKNOWN"))  # Slurm ended the job
    assert "started" in api.output(run["id"])  # the output so far is kept


def test_slurm_ends_the_run_at_its_walltime_timeout_with_the_output_kept(api, hpc):
    """Slurm, not the executor, stops this run: while it works, its job's time limit is cut to
    1 minute (Slurm's shortest ``--time``; as an operator's ``scontrol`` would, or a site
    whose walltime is shorter than the work) with the run's own timeout far away. At the limit
    Slurm's SIGTERM ends the executor; the run ends ``timeout`` with Slurm's reason, and the
    output so far is kept. Before, the run's state came from the executor's guess by its own
    clock: ``cancelled`` ("scancel, preemption or the node going down")."""
    nb = _nb("print('before the limit', flush=True)", "import time\ntime.sleep(900)",
             "print('never')")
    r = api.post("runs", {"notebook": nb, "site": "hpc", "timeout": 1200})
    assert r.status_code == 201, r.text
    run = api.wait(r.json()["id"], until=lambda x: x["state"] == "running" and x["cell"] >= 3)
    ref = run["site_job"]
    hpc.run(["scontrol", "update", f"JobId={ref}", "TimeLimit=1"])  # as root (SlurmUser)
    done = api.wait(run["id"], timeout=240)
    assert done["state"] == "timeout", done
    assert f"Slurm ended the job {ref} at its time limit" in done["message"], done["message"]
    assert "compute.sites.hpc.limits.walltime" in done["message"]
    _slurm_ends(hpc, ref, ("TIMEOUT",))
    outputs = "".join("".join(o.get("text", "")) for c in json.loads(api.output(run["id"]))["cells"]
                      for o in c.get("outputs", []))
    assert "before the limit" in outputs and "never" not in outputs


def test_refusals_name_the_reason(api):
    r = api.post("runs", {"notebook": _nb("1"), "site": "no-such-site"})
    assert r.status_code == 422 and "no compute site 'no-such-site'" in r.text, r.text
    assert "hpc" in r.json()["detail"]  # the sites the user may use
    r = api.post("runs", {"notebook": _nb("1"), "site": "hpc", "timeout": 10**7})
    assert r.status_code == 422 and "walltime" in r.text, r.text


def test_cli_run_on_hpc(platform, api, tmp_path):
    path = tmp_path / "cli-hpc.ipynb"
    path.write_text(json.dumps(_nb(WHO)))
    cli = Path(sys.executable).with_name("cscale-hub")
    env = {**os.environ, "CSCALE_HUB_URL": platform.url, "CSCALE_HUB_TOKEN": api.token}
    proc = subprocess.run(
        [
            str(cli),
            "run",
            str(path),
            "--site",
            "hpc",
            "-p",
            "x",
            "5",
            "--wait",
            "--output-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " on hpc" in proc.stdout
    run_id = proc.stdout.split()[1]
    who = _who((tmp_path / f"cli-hpc.{run_id}.ipynb").read_text())
    assert who["x"] == 5 and who["job"]
    listed = subprocess.run(
        [str(cli), "runs", "sites"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert listed.returncode == 0 and "hpc" in listed.stdout, listed.stdout + listed.stderr


def test_a_restarted_service_follows_the_job_again(platform, api):
    """SIGKILL of the runs service mid-run: the hub starts it again, and it picks the run up
    from its database (the job ran on in Slurm meanwhile). Last in the module: the service is
    away for up to JupyterHub's service poll interval (30 s)."""
    nb = _nb("import time\ntime.sleep(12)", "print('after the restart')")
    r = api.post("runs", {"notebook": nb, "site": "hpc"})
    assert r.status_code == 201, r.text
    run = api.wait(r.json()["id"], until=lambda x: x["state"] == "running" and x["cell"] >= 2)
    old = platform.service_process("cscale_extensions.services.runs")
    old.kill()
    _dead(old, 30)  # a zombie until the hub's poll (every 30 s) reaps it and starts a new one
    deadline = time.monotonic() + 120
    while True:
        try:
            if requests.get(api.url + "health", timeout=5).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "the runs service did not come back"
        time.sleep(1)
    assert platform.service_process("cscale_extensions.services.runs").pid != old.pid
    done = api.wait(run["id"], timeout=300)
    assert done["state"] == "succeeded", done
    assert done["site_job"] == run["site_job"]  # the same job, not submitted again
    assert "after the restart" in api.output(run["id"])
