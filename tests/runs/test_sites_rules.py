"""Which compute site a run may use, and what the runs service accepts from a job submission.

Fast, no stack: the real settings model (`compute.sites`, the embedded defaults plus a VO-only
site), the real store (sqlite) and dispatcher for schedules. Before this change none of these
existed (a run had no site; a schedule fired on the cloud site whatever it was meant for).
"""

from __future__ import annotations

import time

import pytest

from cscale_extensions import config
from cscale_extensions.compute.slurm import SlurmError
from cscale_extensions.services.runs.dispatcher import Dispatcher
from cscale_extensions.services.runs.sites import WALLTIME_MARGIN, SiteError, Sites
from cscale_extensions.services.runs.slurmjobs import (
    parse_submitted,
    submit_code,
    submit_request,
    task_refs,
    valid_ref,
)
from cscale_extensions.services.runs.store import Store, engine_for
from cscale_extensions.services.runs.userserver import UserServers


@pytest.fixture
def sites() -> Sites:
    compute = config.defaults()["compute"]
    compute["sites"]["vo-hpc"] = {"kind": "slurm", "vos": ["vo.example.org"]}
    compute["sites"]["k8s"] = {"kind": "kubernetes"}
    return Sites(compute)


def test_default_and_named_sites(sites):
    assert sites.choose(None, []).name == "cloud"
    assert sites.choose("hpc", []).slurm is not None
    assert sites.choose("vo-hpc", ["vo.example.org"]).name == "vo-hpc"
    assert set(sites.batch) == {"hpc", "vo-hpc"}


def test_refusals_are_4xx_that_name_the_reason(sites):
    with pytest.raises(SiteError) as refused:
        sites.choose("vo-hpc", ["other.vo"])
    assert refused.value.status == 403
    assert "vo.example.org" in str(refused.value) and "other.vo" in str(refused.value)
    assert "cloud" in str(refused.value)  # what the user may use instead
    with pytest.raises(SiteError) as unknown:
        sites.choose("nowhere", [])
    assert unknown.value.status == 422 and "nowhere" in str(unknown.value)
    with pytest.raises(SiteError) as kind:
        sites.choose("k8s", [])
    assert kind.value.status == 422 and "kubernetes" in str(kind.value)
    listed = {s["name"] for s in sites.describe(["other.vo"])}
    assert listed == {"cloud", "hpc"}


def test_no_sites_configured_keeps_runs_where_they_were():
    none = Sites(None)
    assert none.choose(None, []) is None and none.choose("cloud", []) is None
    with pytest.raises(SiteError):
        none.choose("hpc", [])


def test_walltime_from_timeout(sites):
    hpc = sites.all["hpc"]
    assert hpc.walltime == 480 * 60  # limits.walltime, minutes
    assert hpc.job_minutes(60) == (60 + WALLTIME_MARGIN) // 60
    assert hpc.job_minutes(0) == 480  # no timeout: the site's longest job
    assert hpc.job_minutes(10**9) == 480
    assert hpc.longest_timeout() == 480 * 60 - WALLTIME_MARGIN


def test_submission_is_one_array_for_a_sweep(sites):
    hpc = sites.all["hpc"]
    dirs = [f"runs/r{i}" for i in range(8)]
    req = submit_request(hpc, dirs, "cscale-sweep-x", 600)
    assert req["dirs"] == dirs and "--array" in req["args"]
    assert req["args"][req["args"].index("--array") + 1] == "0-7"
    assert "--partition=hpc" in req["args"]
    assert "PATH" not in req["env"]  # the user's own PATH stays in the job
    single = submit_request(hpc, dirs[:1], "cscale-r0", 600)
    assert "--array" not in single["args"]
    code = submit_code(req)
    compile(code, "<submit>", "exec")  # valid Python for the launcher kernel
    assert "services.runs.executor" in code
    assert task_refs("41", 1) == ["41"]
    assert task_refs("42", 3) == ["42_0", "42_1", "42_2"]


@pytest.mark.parametrize(
    "answer",
    [
        "submitted 12; scancel --user=bob 7",
        "submitted 1_2",
        "submitted -1",
        "submitted 12345678901234567890",
        "hello",
        "",
    ],
)
def test_forged_submission_answers_are_refused(answer):
    """The launcher kernel is the user's: only a plain job id is taken from its output."""
    with pytest.raises(SlurmError):
        parse_submitted(answer)


def test_submission_answers():
    assert parse_submitted("noise\nsubmitted 1234\n") == "1234"
    assert parse_submitted("submitted 77;cluster-a") == "77"
    with pytest.raises(SlurmError, match="sbatch failed: no partition"):
        parse_submitted("sbatch failed: no partition")
    assert valid_ref("12_3") and valid_ref("12")
    assert not valid_ref("12,13") and not valid_ref("--user=x") and not valid_ref(None)


def test_a_schedule_fires_on_its_site(sites, tmp_path):
    store = Store(engine_for(None, tmp_path))
    servers = UserServers("http://127.0.0.1:9/hub/api", "http://127.0.0.1:9", "t", "runs")
    settings = config.defaults()["runs"]
    dispatcher = Dispatcher(store, servers, tmp_path, settings, sites)
    s = store.add_schedule(
        {
            "owner": "u1",
            "cron": "0 6 * * *",
            "next_fire": time.time() - 1,
            "path": "a.ipynb",
            "site": "hpc",
        }
    )
    dispatcher._fire_schedules()
    run = store.get_run(store.get_schedule(s["id"])["last_run"])
    assert run["site"] == "hpc" and run["schedule_id"] == s["id"]
    # batch runs do not count against the per-user concurrency limit of the cloud site
    store.update_run(run["id"], state="running")
    assert store.count_active(except_sites=dispatcher.batch_sites) == {}
    assert store.count_active() == {"u1": 1}
