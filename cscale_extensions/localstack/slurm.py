"""The embedded HPC site of the local stack: a real single-node Slurm (munge, slurmctld, slurmd).

Everything lives under ``<data_dir>/slurm/<site>/`` (:class:`Layout`): the generated ``slurm.conf``,
munge's own key and socket (not the system's ``/etc/munge`` and ``/run/munge``), the
controller's state, the node's spool and the daemons' logs. Both daemons listen on 127.0.0.1
only (``CommunicationParameters=NoCtldInAddrAny,NoInAddrAny``), on free ports picked at start.
No systemd, no cgroups: processes are tracked by ``proctrack/linuxproc`` with ``task/none``
(cgroup plugins need a writable cgroup hierarchy that sandboxes and containers rarely give).
The node offers what ``compute.sites.<name>.slurm.node`` says (``SlurmdParameters=
config_overrides``), not what the machine has, so a 2-core machine still runs a scheduler
and two workers.

The three daemons run under one supervised process of the stack, ``python -m
cscale_extensions.localstack.slurm serve ROOT`` (:func:`serve`), each in a session of its own:
the stack's supervisor signals only that process, which stops them in order — cancel every
job (``scancel``) and wait until the queue is empty, then slurmd, slurmctld, munged — so a
stopped stack leaves no job and no daemon. If one daemon dies, ``serve`` stops the others
(jobs are not cancelled: Slurm recovers them from its state) and exits, and the stack's
restart policy starts it again; daemons left by a ``serve`` killed with SIGKILL are found by
their pid files and stopped first.

The partition is open to one POSIX group only (``AllowGroups``; ``slurm.group``, by default
:func:`~cscale_extensions.compute.sitegroups.default_group`, made before slurmctld starts and
removed at a clean stop): the hub keeps in it the accounts whose VOs allow the site, so Slurm
itself refuses a job of anyone else, also one submitted from a terminal
(:mod:`cscale_extensions.compute.sitegroups`).

API: :func:`embedded_sites` (the launcher: the process specs, and ``slurm.conf`` written into
the resolved settings), :class:`EmbeddedSlurm` (one instance: its config, key, process spec
and :meth:`EmbeddedSlurm.site`, a :class:`~cscale_extensions.compute.slurm.SlurmSite` for
``sbatch``/``squeue``/``scancel`` with ``SLURM_CONF`` set), and :func:`running` (a context
manager for tests: a Slurm of its own outside any stack).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from cscale_extensions.compute import sitegroups
from cscale_extensions.compute import sites as compute_sites
from cscale_extensions.compute.slurm import SlurmSite
from cscale_extensions.localstack.supervisor import ProcessSpec
from cscale_extensions.net import free_port, port_open, wait_for

log = logging.getLogger("cscale.slurm")

MUNGED = "/usr/sbin/munged"
SLURMCTLD = "/usr/sbin/slurmctld"
SLURMD = "/usr/sbin/slurmd"
#: Debian 12 packages of the embedded site (scripts/apt-packages.txt)
PACKAGES = ("munge", "slurmctld", "slurmd", "slurm-client", "sudo")
NODE_NAME = "cscale-node"
#: seconds jobs get between SIGTERM and SIGKILL when cancelled (Slurm's KillWait)
KILL_WAIT = 5


class SlurmMissing(RuntimeError):
    """The Slurm or munge programs are not installed."""


def missing_programs() -> list[str]:
    """The daemons and commands of the embedded site that are not installed."""
    from shutil import which

    wanted = [MUNGED, SLURMCTLD, SLURMD]
    out = [p for p in wanted if not os.access(p, os.X_OK)]
    out += [c for c in ("sbatch", "squeue", "scancel", "sinfo") if which(c) is None]
    return out


@dataclass(frozen=True)
class Layout:
    """The files of one embedded Slurm under ``root`` (``<data_dir>/slurm``)."""

    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def plugstack(self) -> Path:
        return self.root / "etc" / "plugstack.conf"

    @property
    def munge_key(self) -> Path:
        return self.root / "munge" / "etc" / "munge.key"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "run" / "munge.socket"

    @property
    def munge_pid(self) -> Path:
        return self.root / "munge" / "run" / "munged.pid"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def logs(self) -> Path:
        return self.root / "log"

    @property
    def ctld_pid(self) -> Path:
        return self.state / "slurmctld.pid"

    @property
    def slurmd_pid(self) -> Path:
        return self.spool / "slurmd.pid"

    @property
    def status(self) -> Path:
        """JSON written by :func:`serve` once the node is idle (pids, ports)."""
        return self.root / "serve.json"

    def directories(self) -> list[tuple[Path, int]]:
        """Every directory with its mode: users read the config and reach munge's socket;
        the key, munge's seed and logs and the controller's state are root's only."""
        m = self.root / "munge"
        return [
            (self.root, 0o755), (self.root / "etc", 0o755), (m, 0o755), (m / "etc", 0o700),
            (m / "run", 0o755), (m / "lib", 0o700), (m / "log", 0o700), (self.state, 0o700),
            (self.spool, 0o755), (self.logs, 0o700),
        ]


def _hostname() -> str:
    return socket.gethostname().split(".")[0]


@dataclass
class EmbeddedSlurm:
    """One embedded single-node Slurm: where it lives, its ports and what its node offers."""

    root: Path
    controller_port: int
    node_port: int
    cpus: int = 8
    memory_gib: float = 16
    partition: str = "hpc"
    #: POSIX group allowed on the partition (AllowGroups; None: every account)
    group: str | None = None

    @classmethod
    def from_site(cls, root: Path, site: dict[str, Any]) -> EmbeddedSlurm:
        """From a site of :func:`cscale_extensions.compute.sites`; free ports where 0."""
        s = site["slurm"]
        ctld = s["ports"]["controller"] or free_port()
        node = s["ports"]["node"]
        while not node or node == ctld:
            node = free_port()
        return cls(Path(root), ctld, node, int(s["node"]["cpus"]), float(s["node"]["memory"]),
                   s["partition"] or "hpc", s.get("group") or cls.own_group(root))

    @staticmethod
    def own_group(root: Path) -> str | None:
        """The group this site makes itself: only as root, where the hub (one POSIX account
        per user) keeps its members; unprivileged, the partition stays open to all."""
        return sitegroups.default_group(root) if os.geteuid() == 0 else None

    @property
    def layout(self) -> Layout:
        return Layout(Path(self.root))

    def site(self) -> SlurmSite:
        """The client side: ``sbatch``/``squeue``/``scancel`` with this Slurm's ``SLURM_CONF``."""
        return SlurmSite(conf=str(self.layout.conf), partition=self.partition)

    def env(self) -> dict[str, str]:
        """Environment for the Slurm commands (``SLURM_CONF``, ``PATH``)."""
        return self.site().env()

    # -- files ------------------------------------------------------------------------------
    def config_text(self) -> str:
        lay = self.layout
        host = _hostname()
        memory_mib = int(self.memory_gib * 1024)
        lines = {
            "ClusterName": "cscale",
            "SlurmctldHost": f"{host}(127.0.0.1)",
            "SlurmctldPort": self.controller_port,
            "SlurmdPort": self.node_port,
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            "AuthInfo": f"socket={lay.munge_socket}",
            "CommunicationParameters": "NoCtldInAddrAny,NoInAddrAny",
            "StateSaveLocation": lay.state,
            "SlurmdSpoolDir": lay.spool,
            "SlurmctldPidFile": lay.ctld_pid,
            "SlurmdPidFile": lay.slurmd_pid,
            "SlurmctldLogFile": lay.logs / "slurmctld.log",
            "SlurmdLogFile": lay.logs / "slurmd.log",
            "PlugStackConfig": lay.plugstack,
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "JobAcctGatherType": "jobacct_gather/none",
            "AccountingStorageType": "accounting_storage/none",
            "JobCompType": "jobcomp/none",
            "MpiDefault": "none",
            "MailProg": "/bin/true",
            "SchedulerType": "sched/backfill",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core_Memory",
            # without it a job that names no memory would get the whole node
            "DefMemPerCPU": 1024,
            "SlurmdParameters": "config_overrides",
            "ReturnToService": 2,
            "KillWait": KILL_WAIT,
            "SlurmctldTimeout": 30,
            "SlurmdTimeout": 60,
            "InactiveLimit": 0,
            "MinJobAge": 300,
            # AllowGroups: the uids of the partition's group are read again this often (the
            # hub also makes slurmctld read them at once after a change: compute.sitegroups)
            "GroupUpdateTime": 60,
        }
        text = ["# generated by cscale_extensions.localstack.slurm; rewritten at every start"]
        text += [f"{k}={v}" for k, v in lines.items()]
        text.append(f"NodeName={NODE_NAME} NodeAddr=127.0.0.1 NodeHostname={host} "
                    f"CPUs={self.cpus} RealMemory={memory_mib} State=UNKNOWN")
        allow = f" AllowGroups={self.group}" if self.group else ""
        text.append(f"PartitionName={self.partition} Nodes={NODE_NAME} Default=YES "
                    f"MaxTime=INFINITE State=UP{allow}")
        return "\n".join(text) + "\n"

    def prepare(self) -> None:
        """Make the directories, munge's key (once) and the config (every start)."""
        missing = missing_programs()
        if missing:
            raise SlurmMissing(
                f"the embedded Slurm site needs {', '.join(missing)}: install the Debian packages "
                f"{' '.join(PACKAGES)} (scripts/apt-packages.txt, `make setup`), or disable the "
                "site (compute.sites.hpc.enabled: false)")
        lay = self.layout
        for d, mode in lay.directories():
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, mode)
        if self.group:  # before slurmctld starts: it resolves AllowGroups then
            sitegroups.ensure_group(self.group)
        if not lay.munge_key.exists():
            fd = os.open(lay.munge_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(1024))
        for path, text in ((lay.conf, self.config_text()), (lay.plugstack, "")):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        lay.status.unlink(missing_ok=True)

    def spec(self, name: str = "slurm") -> ProcessSpec:
        """The supervised process of the stack (:func:`serve`); ready once the node is up."""
        return ProcessSpec(
            name=name,
            argv=[sys.executable, "-m", "cscale_extensions.localstack.slurm", "serve",
                  str(self.layout.root)],
            cwd="/",
            ready_port=self.node_port,
            ready_timeout=60,
            prestart=self.prepare,
            # serve cancels the jobs (KILL_WAIT each) before stopping its daemons
            stop_timeout=KILL_WAIT * 3 + 30,
        )


def embedded_sites(cfg: dict[str, Any], data_dir: Path) -> list[ProcessSpec]:
    """The processes of the enabled embedded Slurm sites; fills each site's ``slurm.conf``,
    ``slurm.ports`` and ``slurm.partition`` into ``cfg`` (the resolved settings)."""
    specs = []
    for name, site in compute_sites(cfg).items():
        if site["kind"] != "slurm" or not site["slurm"]["embedded"] or site["gateway"]:
            continue
        base = Path(data_dir) / "slurm"
        base.mkdir(parents=True, exist_ok=True)
        os.chmod(base, 0o755)
        root = base / name
        slurm = EmbeddedSlurm.from_site(root, site)
        entry = cfg["compute"]["sites"][name]
        entry.setdefault("slurm", {})
        entry["slurm"].update({
            "conf": str(slurm.layout.conf), "partition": slurm.partition, "group": slurm.group,
            "ports": {"controller": slurm.controller_port, "node": slurm.node_port},
        })
        specs.append(slurm.spec(f"slurm-{name}"))
    return specs


# -- the supervised process ---------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _stop_pid(pid: int, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not wait_for(lambda: not _alive(pid), timeout, 0.1):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _alive(pid), 5, 0.1)


def _stale_daemons(lay: Layout) -> list[int]:
    """Daemons of an earlier :func:`serve` of this layout still running (by their pid files)."""
    out = []
    for pidfile, program in ((lay.slurmd_pid, SLURMD), (lay.ctld_pid, SLURMCTLD),
                             (lay.munge_pid, MUNGED)):
        try:
            pid = int(pidfile.read_text().split()[0])
            exe = os.readlink(f"/proc/{pid}/exe")
        except (OSError, ValueError, IndexError):
            continue
        if os.path.basename(exe) == os.path.basename(program) and _alive(pid):
            out.append(pid)
    return out


class _Daemons:
    """The three daemons of one :func:`serve`, in start order."""

    def __init__(self, lay: Layout):
        self.lay = lay
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.site = SlurmSite(conf=str(lay.conf))
        self.env = {**os.environ, "SLURM_CONF": str(lay.conf)}

    def _start(self, name: str, argv: list[str]) -> subprocess.Popen:
        out = open(self.lay.logs / f"{name}.out", "ab")  # noqa: SIM115 (kept by the child)
        proc = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, cwd="/", start_new_session=True)
        out.close()
        self.procs.append((name, proc))
        return proc

    def _tail(self, name: str) -> str:
        lines = []
        for path in (self.lay.logs / f"{name}.out", self.lay.logs / f"{name}.log"):
            with contextlib.suppress(OSError):
                lines += path.read_text(errors="replace").splitlines()[-8:]
        return "\n".join(lines)

    def _wait(self, name: str, proc: subprocess.Popen, ready, timeout: float) -> None:
        if not wait_for(lambda: proc.poll() is not None or ready(), timeout, 0.1) or \
                proc.poll() is not None:
            raise RuntimeError(f"{name} did not start (exit {proc.poll()}):\n{self._tail(name)}")

    def start(self, ctld_port: int, node_port: int) -> None:
        lay = self.lay
        lay.munge_socket.unlink(missing_ok=True)
        munged = self._start("munged", [
            MUNGED, "--foreground", f"--socket={lay.munge_socket}", f"--key-file={lay.munge_key}",
            f"--pid-file={lay.munge_pid}", f"--seed-file={lay.root / 'munge' / 'lib' / 'munged.seed'}",
            f"--log-file={lay.root / 'munge' / 'log' / 'munged.log'}",
        ])
        self._wait("munged", munged, lay.munge_socket.exists, 20)
        ctld = self._start("slurmctld", [SLURMCTLD, "-D", "-f", str(lay.conf)])
        self._wait("slurmctld", ctld, lambda: port_open("127.0.0.1", ctld_port), 30)
        slurmd = self._start("slurmd", [SLURMD, "-D", "-f", str(lay.conf), "-N", NODE_NAME])
        self._wait("slurmd", slurmd, lambda: port_open("127.0.0.1", node_port), 30)
        self._wait("slurmd", slurmd, self.node_ready, 30)

    def node_ready(self) -> bool:
        out = subprocess.run(["sinfo", "-h", "-N", "-n", NODE_NAME, "-o", "%T"], env=self.env,
                             capture_output=True, text=True, check=False, timeout=10).stdout
        state = out.strip().rstrip("*~#!%$@^-")
        return state in ("idle", "mixed", "allocated", "completing")

    def dead(self) -> list[tuple[str, int]]:
        return [(n, p.returncode) for n, p in self.procs if p.poll() is not None]

    def cancel_jobs(self, timeout: float) -> None:
        """Cancel every job and wait until the queue is empty (at most ``timeout``)."""
        try:
            jobs = self.site.jobs()
        except Exception as exc:  # the controller is gone: nothing to cancel through it
            log.warning("cannot list jobs to cancel them: %s", exc)
            return
        if jobs:
            log.info("cancelling %d job(s)", len(jobs))
            self.site.cancel(sorted({j.id.split("_")[0] for j in jobs}))

        def empty() -> bool:
            try:
                return not self.site.jobs()
            except Exception:
                return True

        if not wait_for(empty, timeout, 0.3):
            log.warning("jobs still in the queue after %.0fs", timeout)

    def steps(self) -> list[psutil.Process]:
        """The live processes under slurmd: job steps (slurmstepd) and what runs in them."""
        out = []
        for name, proc in self.procs:
            if name == "slurmd" and proc.poll() is None:
                with contextlib.suppress(psutil.Error):
                    out = [p for p in psutil.Process(proc.pid).children(recursive=True)
                           if p.status() != psutil.STATUS_ZOMBIE]
        return out

    def stop(self, cancel: bool) -> None:
        """Stop in reverse order (cancelling every job first when ``cancel``, and waiting
        until no job step is left under slurmd)."""
        if cancel and all(p.poll() is None for _, p in self.procs[1:]):
            self.cancel_jobs(KILL_WAIT * 3)
            if not wait_for(lambda: not self.steps(), KILL_WAIT + 10, 0.2):
                log.warning("job steps still running: %s", [p.pid for p in self.steps()])
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                log.info("stopping %s (pid %d)", name, proc.pid)
                _stop_pid(proc.pid, 15)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


def _remove_own_group(lay: Layout) -> None:
    """At a clean stop: delete the partition's group if it is the one this site made
    (:func:`~cscale_extensions.compute.sitegroups.default_group`, never a group an operator
    named); the next start makes it again and the hub fills it."""
    own = sitegroups.default_group(lay.root)
    for line in lay.conf.read_text().splitlines():
        if line.startswith("PartitionName") and f" AllowGroups={own} " in f"{line} ":
            try:
                sitegroups.remove_group(own)
            except (OSError, subprocess.SubprocessError) as exc:
                log.warning("group %s not removed: %s", own, exc)


def serve(root: Path) -> int:
    """Run munged, slurmctld and slurmd of the layout at ``root`` until SIGTERM/SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s slurm %(levelname)s %(message)s")
    lay = Layout(Path(root))
    conf = dict(line.split("=", 1) for line in lay.conf.read_text().splitlines()
                if "=" in line and not line.startswith(("#", "NodeName", "PartitionName")))
    for pid in _stale_daemons(lay):
        log.warning("stopping daemon %d left by an earlier run", pid)
        _stop_pid(pid, 15)
    stopping: dict[str, int | None] = {"signal": None}

    def on_signal(signum, _frame) -> None:
        stopping["signal"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    daemons = _Daemons(lay)
    try:
        daemons.start(int(conf["SlurmctldPort"]), int(conf["SlurmdPort"]))
    except RuntimeError as exc:
        log.error("%s", exc)
        daemons.stop(cancel=False)
        return 1
    tmp = lay.status.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # root's: pids of the daemons
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps({"pid": os.getpid(), "daemons": {n: p.pid for n, p in daemons.procs},
                            "conf": str(lay.conf)}))
    os.replace(tmp, lay.status)
    log.info("Slurm is up: SLURM_CONF=%s", lay.conf)
    code = 0
    while stopping["signal"] is None:
        dead = daemons.dead()
        if dead:
            log.error("%s exited (%s); stopping the others:\n%s", dead[0][0], dead[0][1],
                      daemons._tail(dead[0][0]))
            code = 1
            break
        time.sleep(0.5)
    daemons.stop(cancel=code == 0)
    lay.status.unlink(missing_ok=True)
    if code == 0:
        _remove_own_group(lay)
    log.info("Slurm stopped")
    return code


@contextlib.contextmanager
def running(root: Path, *, cpus: int = 8, memory_gib: float = 16, partition: str = "hpc",
            stack_id: str | None = None) -> Iterator[EmbeddedSlurm]:
    """A Slurm of its own under ``root`` for tests, stopped (jobs cancelled) on exit.

    ``stack_id``: put ``CSCALE_STACK_ID`` into the daemons' environment (so that leftover
    checks of a stack see them).
    """
    for parent in Path(root).resolve().parents:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            raise ValueError(f"{parent} is not traversable by users (mode "
                             f"{oct(parent.stat().st_mode & 0o777)}): they could not reach the "
                             "munge socket and slurm.conf under it")
    slurm = EmbeddedSlurm(Path(root), free_port(), free_port(), cpus, memory_gib, partition)
    while slurm.node_port == slurm.controller_port:
        slurm.node_port = free_port()
    slurm.prepare()
    env = dict(os.environ)
    if stack_id:
        env["CSCALE_STACK_ID"] = stack_id
    logf = open(slurm.layout.root / "serve.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(slurm.spec().argv, env=env, stdin=subprocess.DEVNULL, stdout=logf,
                            stderr=subprocess.STDOUT, start_new_session=True)
    logf.close()
    try:
        if not wait_for(lambda: proc.poll() is not None or slurm.layout.status.exists(), 60, 0.1) \
                or proc.poll() is not None:
            tail = (slurm.layout.root / "serve.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the embedded Slurm did not start:\n{tail}")
        yield slurm
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(slurm.spec().stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cscale_extensions.localstack.slurm")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the daemons of a prepared layout (the stack does this)")
    s.add_argument("root", type=Path)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.root)
    return 2


if __name__ == "__main__":
    sys.exit(main())
