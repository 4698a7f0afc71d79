"""The embedded single-node Slurm on its own (no platform): real munge, slurmctld and slurmd.

Checked: the daemons listen on 127.0.0.1 only; the node offers what the settings say (not
the machine's cores); a job submitted through :class:`SlurmSite` runs as the user's uid with
its files made by that user; stopping cancels every job and leaves no daemon, and a Slurm
started again on the same state has an empty queue; a controller that is gone is an error,
never "the job finished". Before this module there was no Slurm at all (the imports failed).
"""

from __future__ import annotations

import json
import os
import pwd
import time
from pathlib import Path

import psutil
import pytest

from cscale_extensions.compute.slurm import SlurmError
from cscale_extensions.localstack.slurm import running
from cscale_extensions.net import wait_for
from cscale_extensions.processes import alive

USER = "nobody"


def _daemons(root: Path) -> dict[str, int]:
    return json.loads((root / "serve.json").read_text())["daemons"]


def test_job_runs_as_the_user_and_stop_cancels_it_leaving_no_daemon(slurm_root):
    work = slurm_root.parent / "work"
    work.mkdir()
    entry = pwd.getpwnam(USER)
    os.chown(work, entry.pw_uid, entry.pw_gid)
    with running(slurm_root, cpus=6, memory_gib=3) as slurm:
        site = slurm.site()
        daemons = _daemons(slurm_root)
        assert set(daemons) == {"munged", "slurmctld", "slurmd"}
        for pid in daemons.values():
            for conn in psutil.Process(pid).net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    assert conn.laddr.ip == "127.0.0.1", (pid, conn)
        node = site.run(["sinfo", "-h", "-N", "-o", "%c %m"]).stdout.split()
        assert node == ["6", "3072"]  # the settings' node, not this machine's cores

        stage = work / "stage"
        job = site.submit(USER, "#!/bin/sh\nid -u > uid.tmp && mv uid.tmp uid.txt\nsleep 600\n",
                          ["--time=5", f"--chdir={stage}", f"--output={stage}/out.txt"],
                          staging_dir=str(stage), files={"note.txt": "x"}, dirs=["tmp"])
        # written whole then renamed: its existence means its content is there
        assert wait_for(lambda: (stage / "uid.txt").exists(), 60, 0.3)
        assert (stage / "uid.txt").read_text().strip() == str(entry.pw_uid)
        for p in (stage, stage / "note.txt", stage / "tmp", stage / "out.txt"):
            assert p.stat().st_uid == entry.pw_uid, p
        assert oct((stage / "note.txt").stat().st_mode & 0o777) == "0o600"
        assert [j.id for j in site.jobs() if j.state == "R"] == [job]
        assert site.jobs([str(int(job) + 1000)]) == []  # unknown id: gone, not an error

        def sleepers() -> list[psutil.Process]:
            return [p for p in psutil.process_iter(["cmdline", "uids"])
                    if p.info["uids"] and p.info["uids"].real == entry.pw_uid
                    and (p.info["cmdline"] or [])[:2] == ["sleep", "600"]]
        assert wait_for(lambda: bool(sleepers()), 10, 0.2)
        sleeper = sleepers()
    # stopped: the job was cancelled, then every daemon stopped
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
                   for pid in daemons.values())
    # gone, or a zombie its new parent has not reaped yet (this machine's init reaps late)
    assert wait_for(lambda: not any(alive(p.pid) for p in sleeper), 10, 0.2)
    with pytest.raises(SlurmError):
        site.jobs()  # no controller: an error, not "no jobs"
    # the saved state holds no job either
    with running(slurm_root) as again:
        assert again.site().jobs() == []


def test_a_second_start_on_the_same_root_replaces_daemons_left_behind(slurm_root):
    """A ``serve`` killed with SIGKILL leaves its daemons (each in a session of its own);
    the next one stops them by their pid files before starting."""
    import signal
    import subprocess
    import sys

    with running(slurm_root) as slurm:
        first = _daemons(slurm_root)
        serve = json.loads((slurm_root / "serve.json").read_text())["pid"]
        os.kill(serve, signal.SIGKILL)
        time.sleep(0.5)
        assert all(psutil.pid_exists(p) for p in first.values())
        slurm.prepare()
        proc = subprocess.Popen([sys.executable, "-m", "cscale_extensions.localstack.slurm",
                                 "serve", str(slurm_root)], start_new_session=True)
        try:
            assert wait_for(lambda: (slurm_root / "serve.json").exists(), 60, 0.2)
            assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                           for p in first.values())
            assert slurm.site().jobs() == []
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
