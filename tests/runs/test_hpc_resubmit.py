"""A submission to Slurm whose answer is lost is not submitted twice (real Slurm, real stack).

The ``hpc`` site of this stack submits with a wrapper ``sbatch`` that queues the job and then
prints nothing, as a login-node connection that drops after the controller queued the job
would: the launcher's answer has no job id, so the dispatcher tries the submission again.
Before this fix the retry ran ``sbatch`` again (every attempt queued a job that nothing
followed, and the run failed after three attempts with three jobs queued): now the retry finds
the job of the run by its name (``squeue --user <owner> --name cscale-<run>``) and adopts it.
Checked for one run and for a sweep (one job array): exactly one job, and the runs succeed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from cscale_testing import LocalStack

from cscale_extensions.compute import sites
from cscale_extensions.compute.slurm import SlurmSite

from .test_hpc_site import USER, WHO, Api, _nb, _who

pytestmark = pytest.mark.slow

#: queues the job, then loses sbatch's answer (prints nothing, exit status 0)
LOSSY_SBATCH = "#!/bin/sh\nsbatch \"$@\" >/dev/null 2>&1\nexit 0\n"


@pytest.fixture(scope="module")
def lossy_stack():
    d = Path(tempfile.mkdtemp(prefix="cscale-lossy-sbatch-", dir="/tmp"))
    os.chmod(d, 0o755)  # users' launcher kernels run the wrapper
    wrapper = d / "sbatch"
    wrapper.write_text(LOSSY_SBATCH)
    wrapper.chmod(0o755)
    config = {
        "compute": {"sites": {"hpc": {"slurm": {"commands": {"sbatch": str(wrapper)}}}}},
        "federation": {"embedded_sites": False},
        "eomqs": {"enabled": False},
    }
    stack = LocalStack(config=config).start()
    try:
        yield stack
    finally:
        stack.finish()
        shutil.rmtree(d, ignore_errors=True)


def _jobs(slurm: SlurmSite) -> set[str]:
    """Every job (an array's base id) of the member that Slurm knows, in any state."""
    argv = [*slurm.command("squeue"), "-h", "--states=all", "--user", USER, "-o", "%F"]
    return {x.strip() for x in slurm.run(argv).stdout.split() if x.strip()}


def test_lost_sbatch_answer_adopts_the_queued_job(lossy_stack):
    api = Api(lossy_stack)
    slurm = SlurmSite.from_settings(sites(lossy_stack.cfg)["hpc"]["slurm"])
    r = api.post("runs", {"notebook": _nb(WHO), "parameters": {"x": 3}, "site": "hpc"})
    assert r.status_code == 201, r.text
    run = api.wait(r.json()["id"], timeout=300)
    assert run["state"] == "succeeded", run
    assert _jobs(slurm) == {run["site_job"]}  # one job, the one followed
    assert _who(api.output(run["id"]))["job"] == run["site_job"]

    body = {"notebook": _nb(WHO), "site": "hpc", "parameter_sets": [{"x": i} for i in range(3)]}
    r = api.post("sweeps", body)
    assert r.status_code == 201, r.text
    runs = [api.wait(x["id"], timeout=300) for x in r.json()["runs"]]
    assert [x["state"] for x in runs] == ["succeeded"] * 3, runs
    array = runs[0]["site_job"].split("_")[0]
    assert [x["site_job"] for x in runs] == [f"{array}_{i}" for i in range(3)]
    assert _jobs(slurm) == {run["site_job"], array}
    # Slurm's own log of every job: two jobs in all (the run's and the sweep's array)
    logs = lossy_stack.state_dir / "homes" / USER / "runs" / ".slurm"
    assert {p.name.split("_")[0].split(".")[0] for p in logs.iterdir()} == {run["site_job"], array}


def test_job_names_are_unique_to_the_runs_of_a_submission():
    """A retry may adopt only a job of exactly its runs, in the order of the array's tasks."""
    from cscale_extensions.services.runs.slurmjobs import job_name

    a, b, c = ({"id": i, "sweep_id": "s1"} for i in ("r1", "r2", "r3"))
    assert job_name([{"id": "r9", "sweep_id": None}]) == "cscale-r9"
    names = {job_name([a, b, c]), job_name([a, b]), job_name([b, a, c]), job_name([a, c])}
    assert len(names) == 4 and all(n.startswith("cscale-sweep-s1-") for n in names)
    assert job_name([a, b, c]) == job_name([dict(a), dict(b), dict(c)])
