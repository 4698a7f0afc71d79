"""How many servers ``workshop prewarm`` starts at once, and when it will be done.

Starting a local server is CPU-bound (imports, JupyterLab's extension manager, a kernel), with
idle gaps in between (the hub polling the new server, the server's first requests to the hub).
A fixed parallelism leaves the cores idle on a big machine and overloads a small one; so the
rule comes from one measured start on this machine (:func:`measure_start`, the first server of
the cohort started alone): a start of ``wall`` seconds that keeps the CPU busy for ``cpu``
seconds occupies ``cpu / wall`` of a core, so ``cores × wall / cpu`` starts at once keep every
core busy. :data:`SATURATION` starts a few more, because a start's CPU comes in bursts and an
idle core is time lost for good. Bounded by the hub's ``concurrent_spawn_limit`` (less one slot,
so a participant arriving meanwhile can still start), by the servers that fit in the memory
budget, and by the number of servers to start.

The cost comes from the last measurement on this machine when there is one
(:func:`save_cost` / :func:`load_cost`: ``workshop capacity`` and every measured prewarm write
it into the workshops directory), so a prewarm starts at the machine's rate from its first
second; otherwise prewarm measures its first start (see :mod:`.prewarm`). When the servers'
processes are not on this machine (Kubernetes: pods elsewhere), nothing can be measured here
and the spawn limit is the bound.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

#: starts kept in flight beyond the exact CPU match (see the module docstring)
SATURATION = 1.5
MIB = 1024 * 1024
#: the last measured start, in the workshops directory
COST_FILE = "start-cost.json"
#: a measurement older than this is not trusted (the platform or the machine may have changed)
COST_MAX_AGE = 30 * 86400


@dataclass
class StartCost:
    """One server start measured alone: wall seconds to ready, CPU seconds its processes used
    (server and any pre-started kernel, until they went idle), PSS in MiB."""

    wall: float
    cpu: float
    pss_mib: float


def save_cost(directory: Path, cost: StartCost, source: str) -> None:
    """Keep ``cost`` (measured by ``source``) for the next prewarm on this machine (0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    body = {**asdict(cost), "cores": os.cpu_count() or 1, "at": time.time(), "source": source}
    tmp = directory / f".{COST_FILE}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(body, f)
    os.replace(tmp, directory / COST_FILE)


def load_cost(directory: Path, now: float | None = None) -> StartCost | None:
    """The last measured start on this machine, if recent and made with these cores."""
    try:
        body = json.loads((directory / COST_FILE).read_text())
        cost = StartCost(float(body["wall"]), float(body["cpu"]), float(body["pss_mib"]))
        at, cores = float(body["at"]), int(body["cores"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    fresh = (now if now is not None else time.time()) - at <= COST_MAX_AGE
    ok = cost.wall > 0 and cost.cpu > 0 and cores == (os.cpu_count() or 1)
    return cost if fresh and ok else None


def spawn_slots(concurrent_spawn_limit: int) -> int:
    """Spawns prewarm may have pending: the hub's limit less one slot kept for arrivals
    (0 is JupyterHub's "no limit")."""
    if concurrent_spawn_limit <= 0:
        return 1 << 30
    return max(1, concurrent_spawn_limit - 1)


def parallelism(
    *,
    remaining: int,
    cores: int,
    concurrent_spawn_limit: int,
    cost: StartCost | None = None,
    mem_available_mib: float | None = None,
    memory_fraction: float = 0.8,
) -> int:
    """Starts to keep in flight for ``remaining`` servers (see the module docstring)."""
    bound = min(max(1, remaining), spawn_slots(concurrent_spawn_limit))
    if cost is None or cost.cpu <= 0 or cost.wall <= 0:
        return bound
    cpu_bound = math.ceil(SATURATION * max(1, cores) * cost.wall / cost.cpu)
    if mem_available_mib is not None and cost.pss_mib > 0:
        bound = min(bound, max(1, int(mem_available_mib * memory_fraction // cost.pss_mib)))
    return max(1, min(bound, cpu_bound))


def eta(
    done: int, total: int, elapsed: float, started_at_rate: float | None = None
) -> float | None:
    """Seconds until all ``total`` are done at the rate seen so far (``done`` in ``elapsed``
    seconds); None before the first one is done. ``started_at_rate`` (servers per second,
    e.g. from the measured start) is used until then."""
    left = max(0, total - done)
    if left == 0:
        return 0.0
    if done > 0 and elapsed > 0:
        return left * elapsed / done
    if started_at_rate:
        return left / started_at_rate
    return None


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA unknown"
    seconds = round(seconds)
    return f"ETA {seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"ETA {seconds}s"


def tree(pid: int) -> list[psutil.Process]:
    """``pid`` and all its descendants (none if it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_usage(pid: int) -> dict[str, float]:
    """PSS and RSS in MiB and CPU seconds (user+system) of ``pid`` and its descendants, the
    CPU of descendants that have already exited included (their reaped children's times)."""
    pss = rss = cpu = 0.0
    procs = 0
    for p in tree(pid):
        try:
            mem = p.memory_full_info()  # smaps: PSS, the share of shared pages
            times = p.cpu_times()
        except psutil.Error:
            continue
        procs += 1
        pss += mem.pss / MIB
        rss += mem.rss / MIB
        cpu += times.user + times.system + times.children_user + times.children_system
    return {"pss_mib": pss, "rss_mib": rss, "cpu_s": cpu, "processes": procs}


def settle(
    pid: int, *, idle_cores: float = 0.05, step: float = 0.5, limit: float = 20
) -> tuple[float, float]:
    """Wait until the process tree of ``pid`` uses less than ``idle_cores`` (its start, with a
    pre-started kernel, is over), at most ``limit`` seconds; return its CPU seconds and PSS."""
    cpu = tree_usage(pid)["cpu_s"]
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(step)
        usage = tree_usage(pid)
        if usage["cpu_s"] - cpu < idle_cores * step:
            return usage["cpu_s"], usage["pss_mib"]
        cpu = usage["cpu_s"]
    usage = tree_usage(pid)
    return usage["cpu_s"], usage["pss_mib"]


def server_pid(server: dict[str, Any] | None) -> int | None:
    """The local process of a server model (``admin:server_state``), if it is on this machine."""
    pid = ((server or {}).get("state") or {}).get("pid")
    return pid if isinstance(pid, int) and psutil.pid_exists(pid) else None
