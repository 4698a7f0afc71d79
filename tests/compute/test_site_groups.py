"""Slurm itself enforces who may use the ``hpc`` site: its partition is open to one POSIX group.

Attacks checked over the whole platform (`cscale-hub up`, the embedded Slurm, ``hpc`` open to
``vo.cscale.eu`` only while the hub also admits :data:`OTHER_VO`): a user of the other VO
types ``sbatch`` in her own terminal (``sudo -u`` her account, past the gateway's and the runs
service's checks) and Slurm refuses the job, while a member's is accepted; a user who leaves
``vo.cscale.eu`` (her entitlement gone at the next sign-in) loses the group and with it Slurm;
and her cron schedule on ``hpc`` fires afterwards into a failed run that says why, with
nothing submitted; the stack's clean stop removes the group. Before the site groups Slurm accepted every local account's job (the
partition had no ``AllowGroups``), and a schedule's runs were submitted whatever the owner's
VOs had become.
"""

from __future__ import annotations

import grp
import subprocess
import time
import uuid

import pytest
from cscale_testing import LocalStack

from cscale_extensions.compute import sites
from cscale_extensions.compute.slurm import SlurmSite
from cscale_extensions.localstack.oidc import accounts
from cscale_extensions.localstack.oidc.embedded import accounts_path

from .conftest import OTHER_VO

pytestmark = pytest.mark.slow
VO = "vo.cscale.eu"
MEMBER = "demo-member"
RUNS_SCOPES = ["access:services!service=runs"]


@pytest.fixture(scope="module")
def stack():
    config = {
        "auth": {"vos": [VO, OTHER_VO]},
        "compute": {"sites": {"hpc": {"vos": [VO]}}},
        "runs": {"min_schedule_interval": 1},
        "federation": {"embedded_sites": False},  # Slurm, the hub and runs only: no data here
        "eomqs": {"enabled": False},
    }
    s = LocalStack(config=config).start()
    group = s.cfg["compute"]["sites"]["hpc"]["slurm"]["group"]
    try:
        yield s
    finally:
        s.finish()
    with pytest.raises(KeyError):  # the site's own group is gone with the stack
        grp.getgrnam(group)


@pytest.fixture(scope="module")
def slurm(stack) -> SlurmSite:
    return SlurmSite.from_settings(sites(stack.cfg)["hpc"]["slurm"])


@pytest.fixture(scope="module")
def group(stack) -> str:
    name = stack.cfg["compute"]["sites"]["hpc"]["slurm"]["group"]
    assert name and name.startswith("cscale-hpc-")
    return name


def _entitlement(stack, vo: str) -> str:
    a = stack.cfg["auth"]
    return accounts.entitlement(vo, "member", namespace=a["entitlement_namespace"],
                                authority=a["entitlement_authority"])


def _new_user(stack, prefix: str, vos: list[str]) -> tuple[str, str]:
    """A user of ``vos`` with a POSIX account (their server started once); their token."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    password = accounts.add_account(
        accounts_path(stack.cfg, stack.state_dir), name,
        entitlements=[_entitlement(stack, vo) for vo in vos], name=name,
        email=f"{name}@example.org")
    stack.extra_credentials[name] = password
    token = stack.api_token(name)
    stack.start_server(token, name)
    return name, token


def _sbatch(slurm: SlurmSite, user: str) -> subprocess.CompletedProcess:
    """``sbatch`` typed by ``user`` in a terminal: her own uid, no platform code involved."""
    return subprocess.run(
        ["sudo", "-nu", user, "env", f"SLURM_CONF={slurm.conf}", "sbatch", "--parsable",
         "--chdir=/tmp", "--output=/dev/null", "--wrap", "sleep 30"],
        capture_output=True, text=True, timeout=60, cwd="/", check=False)


def _accepted(slurm: SlurmSite, user: str) -> bool:
    proc = _sbatch(slurm, user)
    if proc.returncode == 0:
        slurm.cancel([proc.stdout.strip().split(";")[0]])
        return True
    assert "not permitted to use this partition" in proc.stderr, proc.stderr
    return False


def test_slurm_refuses_the_sbatch_of_a_vo_not_allowed_and_accepts_a_member(stack, slurm, group):
    outsider, _ = _new_user(stack, "outside", [OTHER_VO])
    stack.start_server(stack.api_token(MEMBER), MEMBER)
    assert MEMBER in grp.getgrnam(group).gr_mem
    assert outsider not in grp.getgrnam(group).gr_mem
    assert not _accepted(slurm, outsider)
    assert _accepted(slurm, MEMBER)
    assert not any(j.user == outsider for j in slurm.jobs())


def test_leaving_the_vo_loses_the_group_and_the_schedule_fires_into_a_clear_refusal(
        stack, slurm, group):
    leaver, token = _new_user(stack, "leaver", [VO, OTHER_VO])
    assert leaver in grp.getgrnam(group).gr_mem
    assert _accepted(slurm, leaver)
    runs = stack.api(stack.api_token(leaver, RUNS_SCOPES))
    url = stack.url + "services/runs/"
    nb = {"cells": [{"cell_type": "code", "source": "print('scheduled')", "metadata": {},
                     "outputs": [], "execution_count": None}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                      "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    r = runs.post(url + "schedules", json={"notebook": nb, "cron": "* * * * * */15",
                                           "site": "hpc", "name": "nightly"}, timeout=60)
    assert r.status_code == 201, r.text
    schedule = r.json()["id"]
    try:
        # the IdP drops her vo.cscale.eu membership; her next sign-in brings the change
        accounts.set_entitlements(accounts_path(stack.cfg, stack.state_dir), leaver,
                                  [_entitlement(stack, OTHER_VO)])
        stack.login(leaver)
        lost_at = time.time()
        assert leaver not in grp.getgrnam(group).gr_mem
        assert not _accepted(slurm, leaver)  # at once: the hub made slurmctld re-read it
        deadline = time.monotonic() + 120
        while True:
            fired = [x for x in runs.get(url + "runs", timeout=60).json()
                     if x["schedule_id"] == schedule and x["created"] > lost_at + 1]
            done = [x for x in fired if x["state"] == "failed"]
            if done:
                break
            assert time.monotonic() < deadline, fired
            time.sleep(1)
        run = done[0]
        assert run["site"] == "hpc" and not run["site_job"], run
        assert "not submitted" in run["message"] and f"schedule {schedule}" in run["message"]
        assert f"open to members of {VO} only" in run["message"], run["message"]
        assert not any(run["id"] in j.name for j in slurm.jobs())
    finally:
        runs.delete(url + f"schedules/{schedule}", timeout=60)
