"""Per-user resource limits of the local stack: one user's processes cannot take the machine.

On a shared machine a notebook that allocates without bound, or a fork bomb, would otherwise
push the kernel's OOM killer onto whatever is largest (often the hub) or exhaust the process
table for everyone. Every process started *for* a user (their servers, hence their kernels and
headless runs; the Dask schedulers and workers the gateway starts for them) gets, in the
``preexec`` of its ``fork``, while still root, before it drops to the user's account:

- ``RLIMIT_DATA`` (soft = hard): the process can map at most this much private writable
  memory (heap, anonymous mappings), so an allocation past it fails in the process itself
  (``MemoryError`` in Python) instead of driving the machine into the OOM killer. It bounds
  each process, not the user's sum: a user with *k* kernels may use *k* times the limit.
  ``RLIMIT_DATA`` rather than ``RLIMIT_AS``: reservations without access (``PROT_NONE``, as
  jemalloc, Go and Java runtimes make) are not counted, only memory a process can write.
- ``RLIMIT_NPROC`` (soft = hard): processes *and threads* of the user's uid, counted by the
  kernel over the whole machine; a fork bomb stops there (``fork`` fails with ``EAGAIN``).
  Not set when the process keeps the hub's own account (same-user mode): it would count the
  platform's processes, and root is exempt anyway.
- ``oom_score_adj`` raised (``+500``): when the machine as a whole runs out of memory, users'
  processes are killed before the platform's. The launcher lowers its own value (``-500``)
  at start; the proxy, the hub, the identity provider and the hub's services inherit it.
  Written with ``CAP_SYS_RESOURCE`` (root's), +500 is also the floor the user cannot go
  below; without it (containers that drop it) the platform stays at 0, which is then the
  floor of user processes.
- a nice value (``+10``): user computations yield the CPU to the hub and services. CPU cores
  (``spawner.cpu_limit``) cannot be bounded by an rlimit; ``RLIMIT_CPU`` would kill long
  legitimate computations, so it is not used.

cgroups (one memory/pids/cpu budget for all of a user's processes together) are not used: on
cgroup v2 machines with delegated controllers that is the better mechanism, see the section
"Per-user limits" of docs/security.md for what is left.
"""

from __future__ import annotations

import logging
import os
import resource
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("cscale.limits")
#: oom_score_adj of every user process (the kernel's range is -1000 … 1000)
USER_OOM_SCORE_ADJ = 500
#: oom_score_adj of the launcher and, inherited, of everything the platform runs itself
PLATFORM_OOM_SCORE_ADJ = -500
#: nice value of user processes (the platform stays at 0)
USER_NICE = 10

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(value: str | int | float | None) -> int | None:
    """``"4G"``, ``"512M"``, ``2147483648`` → bytes (None/empty/0: no limit)."""
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip().upper().removesuffix("B").removesuffix("I")
    unit = text[-1:] if text[-1:] in _UNITS else ""
    number = float(text[: len(text) - len(unit)] if unit else text)
    return int(number * _UNITS[unit]) or None


@dataclass(frozen=True)
class ProcessLimits:
    """What :meth:`apply` sets in a process about to run as a user."""

    #: RLIMIT_DATA in bytes (None: unlimited)
    memory: int | None = None
    #: RLIMIT_NPROC: processes + threads of the user's uid (None: unlimited)
    processes: int | None = None
    oom_score_adj: int = USER_OOM_SCORE_ADJ
    nice: int = USER_NICE

    def apply(self) -> None:
        """Set the limits on the calling process (meant for a ``preexec_fn``, as root, before
        the switch to the user: the oom floor and the hard limits are then the user's to
        keep). Errors propagate: a process that cannot be limited must not start."""
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(self.oom_score_adj))
        current = os.getpriority(os.PRIO_PROCESS, 0)
        if self.nice > current:
            os.setpriority(os.PRIO_PROCESS, 0, self.nice)
        if self.memory:
            resource.setrlimit(resource.RLIMIT_DATA, (self.memory, self.memory))
        if self.processes:
            resource.setrlimit(resource.RLIMIT_NPROC, (self.processes, self.processes))

    def describe(self) -> str:
        mem = f"{self.memory / 2**30:.2f} GiB" if self.memory else "unlimited"
        return (f"memory (RLIMIT_DATA per process) {mem}, processes (RLIMIT_NPROC of the uid) "
                f"{self.processes or 'unlimited'}, oom_score_adj {self.oom_score_adj:+d}, "
                f"nice {self.nice}")

    def then(self, switch_user: Callable[[], None]) -> Callable[[], None]:
        """A ``preexec_fn``: these limits, then ``switch_user`` (setgid/setgroups/setuid …)."""

        def preexec() -> None:
            self.apply()
            switch_user()

        return preexec


def enabled(limits_cfg: Mapping[str, Any]) -> bool:
    return limits_cfg.get("mode", "rlimits") != "off"


def vo_maximum(groups: Iterable[str], vo_limits: Mapping[str, Mapping[str, Any]], key: str,
               default: Any) -> Any:
    """``default`` raised by the entries of the user's VOs for ``key`` (memory as bytes)."""
    values = [v for g in groups if (v := vo_limits.get(g, {}).get(key)) is not None]
    if key == "mem_limit":
        sized = [parse_bytes(v) for v in (default, *values)]
        known = [s for s in sized if s]
        return max(known) if known else None
    known = [v for v in (default, *values) if v]
    return max(known) if known else None


def protect_platform(score: int = PLATFORM_OOM_SCORE_ADJ) -> bool:
    """Lower this process's ``oom_score_adj`` (root only; children inherit it). Returns
    whether it was set."""
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(score))
    except OSError as exc:  # no CAP_SYS_RESOURCE (some containers): users are still at +500
        log.warning("oom_score_adj of the platform not lowered to %d: %s", score, exc)
        return False
    return True


def tasks_of(uid: int) -> int:
    """Processes and threads whose real uid is ``uid`` (what RLIMIT_NPROC counts)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:  # gone meanwhile
            continue
        if int(fields.get("Uid", "-1 ").split()[0]) == uid:
            total += int(fields.get("Threads", "1").strip() or 1)
    return total
