"""Talking to a Slurm site: its commands, ``SLURM_CONF``, and jobs submitted as the user.

:class:`SlurmSite` is built from a site's ``slurm`` settings (``compute.sites.<name>.slurm``),
the same for the embedded single-node Slurm of the local stack and for an existing cluster.
Every call that acts for a user (submit, cancel) runs as that user's POSIX account through
``sudo -nHu <user>`` and the small stdlib-only helper :mod:`cscale_extensions.compute.as_user`
(run by path with ``python -I``: nothing of the user's environment is imported), so that the
job belongs to the user and every file of the job (staging directory, TLS files, logs) is
made by the user, never by root. Listing jobs (``squeue``) runs as the calling account.

The gateway (:mod:`cscale_extensions.gateway.slurm`) uses the ``argv`` builders with asyncio;
the synchronous helpers (:meth:`SlurmSite.run`, :meth:`submit`, :meth:`cancel`,
:meth:`jobs`) serve the runs service, the local stack and tests.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the helper run as the user (by path: see the module docstring)
AS_USER = Path(__file__).with_name("as_user.py")
SUDO = "/usr/bin/sudo"
#: squeue states of a job that still holds (or will hold) resources
ACTIVE_STATES = frozenset({"PD", "R", "CG", "CF", "S", "RQ", "RS", "RF", "SO", "ST"})
#: squeue -o format of :meth:`SlurmSite.jobs` (fields separated by "|")
QUEUE_FORMAT = "%i|%j|%u|%t"


class SlurmError(RuntimeError):
    """A Slurm command failed; the message carries its output."""


@dataclass(frozen=True)
class Job:
    """One line of ``squeue``."""

    id: str
    name: str
    user: str
    state: str


@dataclass
class SlurmSite:
    """A Slurm site's commands and environment.

    ``conf``: ``SLURM_CONF`` for every command (None: their default). ``commands``: command
    lines of ``sbatch``, ``squeue`` and ``scancel``. ``python``: the interpreter that runs
    :data:`AS_USER` (it must be readable by users; the platform's own by default).
    """

    conf: str | None = None
    commands: dict[str, str] = field(default_factory=lambda: {
        "sbatch": "sbatch", "squeue": "squeue", "scancel": "scancel"})
    partition: str = ""
    account: str = ""
    qos: str = ""
    python: str = sys.executable
    sudo: str = SUDO

    @classmethod
    def from_settings(cls, slurm: dict[str, Any]) -> SlurmSite:
        """The site of ``compute.sites.<name>.slurm`` (defaults filled in, see
        :func:`cscale_extensions.compute.sites`)."""
        return cls(conf=slurm.get("conf"), commands=dict(slurm["commands"]),
                   partition=slurm.get("partition", ""), account=slurm.get("account", ""),
                   qos=slurm.get("qos", ""))

    # -- what to run ------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """Environment for the Slurm commands (``SLURM_CONF`` and a ``PATH``)."""
        env = {"PATH": os.environ.get("PATH") or "/usr/local/bin:/usr/bin:/bin"}
        if self.conf:
            env["SLURM_CONF"] = self.conf
        return env

    def command(self, name: str) -> list[str]:
        """The argv prefix of ``sbatch``, ``squeue`` or ``scancel``."""
        return shlex.split(self.commands[name])

    def job_options(self) -> list[str]:
        """``sbatch`` options of every job of the site (partition, account, qos)."""
        out = []
        for key in ("partition", "account", "qos"):
            if getattr(self, key):
                out.append(f"--{key}={getattr(self, key)}")
        return out

    def as_user_argv(self, user: str) -> list[str]:
        """``sudo`` running :data:`AS_USER` as ``user`` (it reads one JSON request on stdin)."""
        return [self.sudo, "-nHu", user, "--", self.python, "-I", str(AS_USER)]

    def queue_argv(self, job_ids: list[str] | None = None) -> list[str]:
        argv = [*self.command("squeue"), "-h", "-o", QUEUE_FORMAT]
        if job_ids:
            argv.append("--jobs=" + ",".join(job_ids))
        return argv

    @staticmethod
    def parse_queue(stdout: str) -> list[Job]:
        jobs = []
        for line in stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 4:
                jobs.append(Job(*parts))
        return jobs

    @staticmethod
    def parse_as_user(stdout: str, stderr: str, returncode: int) -> dict[str, Any]:
        """The answer of :data:`AS_USER`; :class:`SlurmError` when it could not run."""
        try:
            answer = json.loads(stdout)
        except ValueError:
            raise SlurmError(f"the job helper failed (exit {returncode}): "
                             f"{(stderr or stdout).strip()[-500:]}") from None
        if not answer.get("ok"):
            raise SlurmError(answer.get("error") or "the job helper failed")
        return answer

    # -- synchronous helpers ----------------------------------------------------------------
    def run(self, argv: list[str], *, timeout: float = 60, check: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run a Slurm command as the calling account with :meth:`env`."""
        proc = subprocess.run(argv, env=self.env(), input=input, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise SlurmError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def as_user(self, user: str, request: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        """Run one :data:`AS_USER` request as ``user``; its answer (``returncode``, ``stdout``,
        ``stderr`` of the command it ran)."""
        proc = subprocess.run(self.as_user_argv(user), input=json.dumps(request),
                              capture_output=True, text=True, timeout=timeout, env={}, check=False)
        return self.parse_as_user(proc.stdout, proc.stderr, proc.returncode)

    def submit(self, user: str, script: str, options: list[str] | None = None, *,
               env: dict[str, str] | None = None, staging_dir: str | None = None,
               files: dict[str, str] | None = None, dirs: list[str] | None = None) -> str:
        """Submit ``script`` (a shell script) as ``user``; return the job id.

        ``options``: more ``sbatch`` options (``--time``, ``--array``, ``--output`` …; the
        site's partition/account/qos come first). ``env``: the job's environment besides
        ``SLURM_*`` (``sbatch --export`` of exactly these names). ``staging_dir``/``files``/
        ``dirs``: made first by the user (the directory with mode 0700, files 0600).
        """
        job_env = {**self.env(), **(env or {})}
        argv = [*self.command("sbatch"), "--parsable", *self.job_options(), *(options or []),
                "--export=" + ",".join(sorted(job_env))]
        answer = self.as_user(user, {"action": "submit", "argv": argv, "env": job_env,
                                     "stdin": script, "staging_dir": staging_dir,
                                     "files": files or {}, "dirs": dirs or []})
        if answer["returncode"] != 0:
            raise SlurmError(f"sbatch failed ({answer['returncode']}): {answer['stderr'].strip()}")
        return answer["stdout"].strip().split(";")[0]

    def cancel(self, job_ids: list[str], user: str | None = None) -> None:
        """``scancel`` the jobs, as ``user`` (None: as the calling account, e.g. root)."""
        if not job_ids:
            return
        argv = [*self.command("scancel"), *job_ids]
        if user is None:
            self.run(argv, check=False)
            return
        self.as_user(user, {"action": "run", "argv": argv, "env": self.env()})

    def jobs(self, job_ids: list[str] | None = None) -> list[Job]:
        """The jobs in the queue (all, or those of ``job_ids``)."""
        proc = self.run(self.queue_argv(job_ids), check=False)
        return self.parse_queue_answer(proc.stdout, proc.stderr, proc.returncode)

    @classmethod
    def parse_queue_answer(cls, stdout: str, stderr: str, returncode: int) -> list[Job]:
        """The jobs of a ``squeue`` answer; :class:`SlurmError` when the controller did not
        answer (an unknown job id only means that job is gone)."""
        if returncode != 0 and "Invalid job id" not in stderr:
            raise SlurmError(f"squeue failed ({returncode}): {stderr.strip()}")
        return cls.parse_queue(stdout)
