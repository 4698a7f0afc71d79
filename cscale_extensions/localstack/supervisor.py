"""Start, watch and stop the processes of the local stack.

Each process is described by a :class:`ProcessSpec`. The :class:`Supervisor` starts each
once what it ``needs`` is ready (by default everything listed before it; processes that need
nothing of each other start together, which makes a stack's start-up about as long as its
slowest process rather than the sum of all), watches them, restarts a child that exits (within a
:class:`RestartPolicy`; the launcher decides), and on stop terminates them in reverse order, each in its own process group, escalating to
SIGKILL after a grace period. Every child carries ``CSCALE_STACK_ID`` in its environment;
:func:`stack_processes` finds anything of a stack that is still alive (e.g. user servers
or Dask workers started by the hub) so that shutdown can leave no orphan.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cscale_extensions.net import http_ready, port_open, wait_for
from cscale_extensions.processes import (
    STACK_ENV,
    stack_processes,
    stop_processes,
    wait_until_gone,
)

log = logging.getLogger("cscale.supervisor")


@dataclass
class ProcessSpec:
    """One long-running process of the stack.

    ``ready_url`` (HTTP status < 500) or ``ready_port`` (TCP accept on 127.0.0.1) tells when
    it is up; ``prestart`` runs (in the launcher) just before it starts, e.g. ``initdb``.
    ``needs``: the names of the processes that must be ready before this one's ``prestart``
    runs; None (the default) means every process listed before it in ``start_all``.
    """

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    ready_url: str | None = None
    ready_port: int | None = None
    ready_timeout: float = 60.0
    prestart: Callable[[], None] | None = None
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 10.0
    needs: tuple[str, ...] | None = None


class ChildFailed(RuntimeError):
    """A child exited or did not become ready."""


class RestartPolicy:
    """Restart a child that exits, at most ``limit`` times per child within ``window`` seconds
    (like a service manager's restart limit); beyond that the stack stops."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self.history: dict[str, list[float]] = {}

    def allow(self, name: str) -> tuple[bool, int]:
        """Whether ``name`` may be restarted now, and how many restarts that makes in the window."""
        now = self.clock()
        recent = [t for t in self.history.get(name, []) if now - t < self.window]
        if len(recent) >= self.limit:
            self.history[name] = recent
            return False, len(recent)
        recent.append(now)
        self.history[name] = recent
        return True, len(recent)


class Supervisor:
    """Runs a list of :class:`ProcessSpec` as one stack."""

    def __init__(self, log_dir: Path, stack_id: str, base_env: dict[str, str] | None = None):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.stack_id = stack_id
        self.base_env = dict(base_env if base_env is not None else os.environ)
        self.base_env[STACK_ENV] = stack_id
        self.children: list[tuple[ProcessSpec, subprocess.Popen]] = []
        # start_all's threads start children while stop() may run (a signal during start-up):
        # a start_all begun before a stop() starts nothing after it, and every child started
        # before it is in ``children`` (stop() counts up ``_stops``)
        self._lock = threading.Lock()
        self._stops = 0

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def tail(self, name: str, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path(name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(
        self, spec: ProcessSpec, prestart: bool = True, *, stops: int | None = None
    ) -> subprocess.Popen:
        """Start one process and wait until it is ready; raise ChildFailed otherwise (also,
        with ``stops``, when stop() was called since ``_stops`` had that value)."""
        if prestart and spec.prestart:
            spec.prestart()
        env = {**self.base_env, **spec.env}
        with self._lock:
            if stops is not None and stops != self._stops:
                raise ChildFailed(f"{spec.name} not started: the stack is stopping")
            logf = open(self.log_path(spec.name), "ab")  # noqa: SIM115 (kept open for the child)
            log.info("starting %s: %s", spec.name, " ".join(spec.argv))
            proc = subprocess.Popen(
                spec.argv,
                env=env,
                cwd=spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            logf.close()
            self.children.append((spec, proc))

        def ready() -> bool:
            if proc.poll() is not None:
                return True
            if spec.ready_url:
                return http_ready(spec.ready_url)
            if spec.ready_port:
                return port_open("127.0.0.1", spec.ready_port)
            return True

        ok = wait_for(ready, spec.ready_timeout, 0.1)
        if proc.poll() is not None:
            raise ChildFailed(
                f"{spec.name} exited with code {proc.returncode} while starting; "
                f"last lines of {self.log_path(spec.name)}:\n{self.tail(spec.name)}"
            )
        if not ok:
            raise ChildFailed(
                f"{spec.name} was not ready after {spec.ready_timeout:.0f}s; "
                f"last lines of {self.log_path(spec.name)}:\n{self.tail(spec.name)}"
            )
        return proc

    def start_all(self, specs: Iterable[ProcessSpec]) -> None:
        """Start every spec once what it ``needs`` is ready, concurrently where nothing orders
        them; raise the first failure (in spec order) once no start is under way. After a
        failure nothing more is started."""
        specs = list(specs)
        names = [s.name for s in specs]
        needs = {}
        for i, spec in enumerate(specs):
            needs[spec.name] = names[:i] if spec.needs is None else list(spec.needs)
            unknown = [n for n in needs[spec.name] if n not in names or n == spec.name]
            if unknown:
                raise ValueError(f"{spec.name} needs {unknown}, which are not started with it")
        done = {name: threading.Event() for name in names}
        errors: dict[str, BaseException] = {}
        stops = self._stops

        def run(spec: ProcessSpec) -> None:
            try:
                for name in needs[spec.name]:
                    done[name].wait()
                if not errors:  # nothing more after a failure
                    self.start(spec, stops=stops)
            except BaseException as exc:  # re-raised in the caller's thread
                errors[spec.name] = exc
            finally:
                done[spec.name].set()

        threads = [
            threading.Thread(target=run, args=(s,), name=f"start-{s.name}", daemon=True)
            for s in specs
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for name in names:
            if name in errors:
                raise errors[name]

    def restart(self, spec: ProcessSpec) -> subprocess.Popen:
        """Start an exited child again the same way (its ``prestart`` already ran once)."""
        old = [(s, p) for s, p in self.children if s is spec]
        for entry in old:
            _terminate(spec.name, entry[1], spec.stop_signal, spec.stop_timeout)
            self.children.remove(entry)
        return self.start(spec, prestart=False)

    def dead(self) -> list[tuple[ProcessSpec, int]]:
        """Children that have exited, with their exit codes."""
        return [(s, p.returncode) for s, p in self.children if p.poll() is not None]

    def stop(self) -> None:
        """Stop every child in reverse start order, then anything left of the stack."""
        with self._lock:
            self._stops += 1
        for spec, proc in reversed(self.children):
            _terminate(spec.name, proc, spec.stop_signal, spec.stop_timeout)
        self.children.clear()
        # what the children left (user servers, kernels, Dask schedulers and workers); a nanny
        # may restart a worker while we stop it, so sweep until nothing of the stack is left
        for _ in range(5):
            leftovers = stack_processes(self.stack_id)
            if not leftovers:
                break
            log.warning("stopping %d leftover process(es) of the stack", len(leftovers))
            stop_processes(leftovers, timeout=5)
            wait_until_gone(leftovers, 5)


def _terminate(name: str, proc: subprocess.Popen, sig: int, timeout: float) -> None:
    if proc.poll() is None:
        log.info("stopping %s (pid %s)", name, proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %ss; killing it", name, timeout)
    # the group may hold grandchildren even after the leader exited
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(5)
