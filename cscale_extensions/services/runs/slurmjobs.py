"""Runs on a Slurm site: one batch job per run, one job array per sweep, as the user.

Why this way. A run on the cloud site is an executor started by the user's ``runs`` server
(see :mod:`.userserver`). A run on a Slurm site is the same executor started by Slurm: the
service writes the spec into ``~/runs/<id>/`` as for every run, and the user's launcher
kernel calls ``sbatch`` (:data:`SUBMIT_CODE`). So the job is submitted by the user's own
account from their own environment, the way they would submit it from a login node: Slurm
(munge) records their uid, the job runs as them, in their home, with their environment
(their server's, which carries their own hub token and never the service's), and the runs
service needs no root, no ``sudo`` and no ``--uid`` for it. A sweep of N parameter sets is one
``sbatch --array=0-(N-1)``: task *i* executes run *i* (a ``case`` in the job script).

What stays with the service: it reads Slurm's view of the jobs (``squeue``) to tell a job
still waiting in the queue from one that ended without a status, and it cancels with
``scancel``. Both run as the service's own account with ``--user=<owner>`` (the user's POSIX
account has their hub name, as the local stack's spawner creates it), so whatever job id the
user's side reported (untrusted: it comes from a kernel the user controls) can only ever name
a job *of that user*: a forged id of another user's job matches nothing. Cancelling a user's
job needs Slurm operator rights (root or the SlurmUser; the local stack runs the service as
root) — the commands, ``SLURM_CONF`` and the site's sbatch options come from
:class:`cscale_extensions.compute.slurm.SlurmSite`, shared with the Dask gateway.

Timeout and walltime: a run's ``timeout`` is enforced by the executor as on the cloud site
(SIGINT, then SIGKILL); the job's walltime (``--time``) is the timeout plus
:data:`~.sites.WALLTIME_MARGIN`, at most the site's ``limits.walltime``, so Slurm ends only
runs the executor could not stop. When Slurm ends the job (walltime, ``scancel``) it sends
SIGTERM; the executor then stops the run with the output notebook kept, and the service
records the final state once Slurm says why the job ended (:func:`ended_at_time_limit`:
``timeout``, also for a limit an operator shortened), not by the executor's guess.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from cscale_extensions.compute.slurm import SlurmError
from cscale_extensions.services.runs.sites import Site

#: seconds a squeue answer is reused (all follow-ups of one user's runs in one tick share it)
STATES_TTL = 1.0
#: seconds a squeue/scancel call may take
COMMAND_TIMEOUT = 30.0
#: Slurm job states after which the job does nothing more (anything else may still run)
ENDED = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "REVOKED",
        "SPECIAL_EXIT",
        "TIMEOUT",
    }
)
_JOB_REF = re.compile(r"^[0-9]{1,12}(_[0-9]{1,7})?$")
_JOB_ID = re.compile(r"^[0-9]{1,12}$")
_SUBMITTED = re.compile(r"^submitted ([0-9]{1,12})(;[A-Za-z0-9_.-]{1,64})?$")

#: run in the user's launcher kernel (as the user); formatted with ``req`` = the request dict
SUBMIT_CODE = """
import json as _j, os as _o, shlex as _q, subprocess as _s, sys as _y
def _submit(req):
    root = _o.getcwd()
    dirs = [_o.path.join(root, d) for d in req["dirs"]]
    logs = _o.path.join(root, "runs", ".slurm")
    _o.makedirs(logs, exist_ok=True)
    ex = [_y.executable, "-m", "cscale_extensions.services.runs.executor"]
    lines = ["#!/bin/sh", *req["setup"], 'case "${{SLURM_ARRAY_TASK_ID:-0}}" in']
    lines += ["%d) d=%s ;;" % (i, _q.quote(d)) for i, d in enumerate(dirs)]
    lines += ['*) echo "no run for array task $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;', "esac",
              'exec >>"$d/log.txt" 2>&1',
              "exec " + " ".join(map(_q.quote, ex)) + ' "$d" --root ' + _q.quote(root)]
    out = _o.path.join(logs, "%A_%a.out" if len(dirs) > 1 else "%j.out")
    cmd = [*req["sbatch"], "--parsable", "--chdir", root, "--output", out, *req["args"]]
    env = dict(_o.environ, **req["env"])
    try:
        p = _s.run(cmd, input="\\n".join(lines) + "\\n", text=True, capture_output=True,
                   env=env, timeout=60)
    except (OSError, _s.SubprocessError) as exc:
        return "sbatch failed: %s" % exc
    if p.returncode:
        return "sbatch failed: " + (p.stderr or p.stdout).strip()[-2000:]
    return "submitted " + p.stdout.strip()
print(_submit(_j.loads({req!r})))
"""


def job_name(runs: list[dict[str, Any]]) -> str:
    """The Slurm job name of one submission, unique to exactly these runs in this order (the
    order of the array's tasks): ``cscale-<run>``, or ``cscale-sweep-<sweep>-<digest>`` for a
    job array. A retried submission finds its earlier job by this name (:meth:`SlurmControl.named`)
    and adopts it only when it runs the same runs as the same tasks."""
    if len(runs) == 1:
        return f"cscale-{runs[0]['id']}"
    digest = hashlib.sha256(",".join(r["id"] for r in runs).encode()).hexdigest()[:10]
    return f"cscale-sweep-{runs[0]['sweep_id'] or runs[0]['id']}-{digest}"


def submit_request(site: Site, dirs: list[str], job_name: str, timeout: float) -> dict[str, Any]:
    """What :data:`SUBMIT_CODE` runs with: the run directories (relative to the home), the
    ``sbatch`` command line and the environment it adds (``SLURM_CONF``)."""
    args = ["--job-name", job_name, "--time", str(site.job_minutes(timeout))]
    args += site.slurm.job_options()
    if len(dirs) > 1:
        args += ["--array", f"0-{len(dirs) - 1}"]
    env = {k: v for k, v in site.slurm.env().items() if k != "PATH"}  # the user's PATH stays
    return {
        "dirs": list(dirs),
        "sbatch": site.slurm.command("sbatch"),
        "args": args,
        "env": env,
        "setup": list(site.setup),
    }


def submit_code(request: dict[str, Any]) -> str:
    return SUBMIT_CODE.format(req=json.dumps(request))


def parse_submitted(output: str) -> str:
    """The job id from the launcher's answer (untrusted: only digits are accepted)."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    match = _SUBMITTED.match(last)
    if match:
        return match.group(1)
    if last.startswith("sbatch failed:"):
        raise SlurmError(last[:2000])
    raise SlurmError(f"the job submission gave no job id: {last[-300:]!r}")


def ended_at_time_limit(job: JobState) -> bool:
    """Whether Slurm ended (or is ending) the job at its time limit (walltime, deadline)."""
    return job.state in ("TIMEOUT", "DEADLINE") or job.reason in ("TimeLimit", "DeadLine")


def task_refs(job_id: str, count: int) -> list[str]:
    """How each run's job is named: ``1234`` alone, ``1234_<i>`` for task i of an array."""
    return [job_id] if count == 1 else [f"{job_id}_{i}" for i in range(count)]


def valid_ref(ref: str | None) -> bool:
    return bool(ref) and bool(_JOB_REF.match(ref))


@dataclass
class JobState:
    state: str  # Slurm's (PENDING, RUNNING, COMPLETED, CANCELLED, TIMEOUT, …) or UNKNOWN
    reason: str = ""

    @property
    def ended(self) -> bool:
        return self.state in ENDED or self.state == "UNKNOWN"


class SlurmControl:
    """squeue and scancel for the runs service, always restricted to one user's jobs."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], tuple[float, dict[str, JobState]]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def _run(self, site: Site, argv: list[str]) -> str:
        env = site.slurm.env()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            raise SlurmError(f"{argv[0]}: {exc}") from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise SlurmError(f"{argv[0]} did not answer in {COMMAND_TIMEOUT:g} s") from None
        if proc.returncode:
            text = (err or out).decode(errors="replace").strip()
            raise SlurmError(f"{' '.join(argv[:1])} failed: {text[-500:]}")
        return out.decode(errors="replace")

    async def states(self, site: Site, owner: str) -> dict[str, JobState]:
        """Slurm's state of every job (array tasks one by one) of ``owner`` it still knows."""
        key = (site.name, owner)
        async with self._locks.setdefault(key, asyncio.Lock()):
            cached = self._cache.get(key)
            if cached and time.monotonic() - cached[0] < STATES_TTL:
                return cached[1]
            argv = [*site.slurm.command("squeue"), "--noheader", "--array", "--states=all"]
            argv += ["--user", owner, "--format", "%i|%T|%r"]
            found: dict[str, JobState] = {}
            for line in (await self._run(site, argv)).splitlines():
                parts = line.strip().split("|")
                if len(parts) == 3 and valid_ref(parts[0]):
                    found[parts[0]] = JobState(parts[1].strip(), parts[2].strip()[:200])
            self._cache[key] = (time.monotonic(), found)
            return found

    async def named(self, site: Site, owner: str, name: str) -> list[str]:
        """Ids (oldest first; an array's base id) of the jobs of ``owner`` called ``name``
        that Slurm still knows, in any state: what an earlier submission of the same runs
        queued even when its answer (the job id) was lost."""
        argv = [*site.slurm.command("squeue"), "--noheader", "--states=all", "--user", owner]
        argv += ["--name", name, "--format", "%F"]
        out = await self._run(site, argv)
        return sorted({x.strip() for x in out.splitlines() if _JOB_ID.match(x.strip())}, key=int)

    async def state(self, site: Site, owner: str, ref: str) -> JobState:
        """The state of job ``ref`` of ``owner`` (UNKNOWN once Slurm forgot it)."""
        return (await self.states(site, owner)).get(ref, JobState("UNKNOWN"))

    async def cancel(self, site: Site, owner: str, refs: list[str]) -> None:
        """``scancel --user=<owner> <refs>``: a ref that is not one of owner's jobs matches
        nothing, so an id forged by the user's side cannot cancel someone else's job."""
        refs = [r for r in refs if valid_ref(r)]
        if refs:
            await self._run(site, [*site.slurm.command("scancel"), "--user", owner, *refs])
            self._cache.pop((site.name, owner), None)
