"""Find and stop the processes of one local stack, whoever started them (hub, launcher, tests).

Every process the launcher starts carries ``CSCALE_STACK_ID=<stack id>`` in its environment,
and so do their children (user servers, kernels, Dask schedulers): that marker, read with
psutil, finds what is left of a stack after a crash. Shared by the launcher's supervisor and the
hub (which stops its own services' leftovers on shutdown), so neither imports the other.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable

import psutil

#: environment variable marking every process of one local stack
STACK_ENV = "CSCALE_STACK_ID"


def kill_quietly(pid: int, sig: int) -> None:
    """Send ``sig`` to ``pid``; a process already gone (or not ours) is no error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def stop_processes(pids: Iterable[int], timeout: float = 5) -> None:
    """SIGTERM ``pids``, then SIGKILL what is still alive after ``timeout`` seconds."""
    pids = list(pids)
    for pid in pids:
        kill_quietly(pid, signal.SIGTERM)
    if pids and not wait_until_gone(pids, timeout):
        for pid in pids:
            kill_quietly(pid, signal.SIGKILL)


def stack_processes(stack_id: str, having: str | None = None) -> list[int]:
    """PIDs of live processes whose environment carries ``CSCALE_STACK_ID=stack_id``
    (and, with ``having``, a variable of that name)."""
    me = os.getpid()
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        if proc.info["pid"] == me or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if env.get(STACK_ENV) == stack_id and (having is None or having in env):
            found.append(proc.info["pid"])
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_until_gone(pids: Iterable[int], timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for all ``pids`` to end; True if they did."""
    pids = list(pids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return not any(alive(p) for p in pids)
