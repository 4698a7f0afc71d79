"""A cancelled run says why, whichever of the executor's watchdog or Slurm's SIGTERM is first.

The runs service cancels a run on a Slurm site by writing the run's ``cancel`` file and then
calling ``scancel``, which signals every process of the job, the kernel too. The executor
(real, a subprocess with a real ipykernel) used to lose the reason when its watchdog saw the
file before the SIGTERM arrived: the run ended ``cancelled`` with the message
"DeadKernelError: Kernel died" (seen in CI on ``test_hpc_site.py::test_cancel_reaches_scancel``).
Here each order is produced on purpose: the file alone (the watchdog), and the file with
SIGTERM to the executor and its kernel at once (as Slurm does).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from cscale_extensions.services.runs import executor as ex

REASON = "cancelled by its owner (scancel 4242)"


def _notebook() -> dict:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("print('started', flush=True)"),
        nbformat.v4.new_code_cell("import time\ntime.sleep(120)"),
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return json.loads(nbformat.writes(nb))


def _status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / ex.STATUS).read_text())
    except (OSError, ValueError):
        return {}


def _start(tmp_path: Path, slurm: bool) -> tuple[subprocess.Popen, Path]:
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    spec = {"id": "r1", "notebook": _notebook(), "parameters": {}, "timeout": 0}
    (run_dir / ex.SPEC).write_text(json.dumps(spec))
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("SLURM_JOB_ID", None)
    if slurm:
        env["SLURM_JOB_ID"] = "4242"  # the executor then takes SIGTERM as Slurm's notice
    proc = subprocess.Popen(
        [sys.executable, "-m", "cscale_extensions.services.runs.executor", str(run_dir),
         "--root", str(tmp_path)],
        stdout=open(tmp_path / "log.txt", "wb"), stderr=subprocess.STDOUT, env=env,  # noqa: SIM115
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while _status(run_dir).get("cell", 0) < 2:  # in the sleeping cell
        assert proc.poll() is None, (tmp_path / "log.txt").read_text()[-3000:]
        assert time.monotonic() < deadline, (tmp_path / "log.txt").read_text()[-3000:]
        time.sleep(0.2)
    return proc, run_dir


def _signal_job(proc: subprocess.Popen, sig: int) -> None:
    """``sig`` to the executor and everything it started (its kernel), as Slurm signals a job."""
    for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(sig)


def _finish(proc: subprocess.Popen, run_dir: Path) -> dict:
    try:
        proc.wait(90)
    finally:
        if proc.poll() is None:
            _signal_job(proc, signal.SIGKILL)
            proc.wait(10)
    return _status(run_dir)


@pytest.mark.parametrize("slurm_sigterm", [False, True], ids=["watchdog", "sigterm"])
def test_the_cancel_reason_is_the_message(tmp_path, slurm_sigterm):
    proc, run_dir = _start(tmp_path, slurm=slurm_sigterm)
    (run_dir / ex.CANCEL).write_text(REASON + "\n")
    if slurm_sigterm:  # scancel: every process of the job at once
        _signal_job(proc, signal.SIGTERM)
    status = _finish(proc, run_dir)
    assert status["state"] == "cancelled", status
    assert status["message"].startswith(REASON), status["message"]
    output = json.loads((run_dir / ex.OUTPUT).read_text())
    assert "started" in "".join(
        "".join(o.get("text", "")) for c in output["cells"] for o in c.get("outputs", [])
    )  # the output so far is kept


def test_an_empty_cancel_file_still_says_cancelled(tmp_path):
    proc, run_dir = _start(tmp_path, slurm=False)
    (run_dir / ex.CANCEL).write_text("")
    status = _finish(proc, run_dir)
    assert status["state"] == "cancelled" and status["message"].startswith("cancelled"), status


def test_a_fifo_planted_as_the_cancel_file_does_not_hang_the_watchdog(tmp_path):
    """Attack on one's own limits: a FIFO opened for reading blocks until a writer comes, which
    in the watchdog would also stop it enforcing the run's timeout."""
    proc, run_dir = _start(tmp_path, slurm=False)
    os.mkfifo(run_dir / ex.CANCEL)
    status = _finish(proc, run_dir)
    assert status["state"] == "cancelled" and status["message"].startswith("cancelled"), status
