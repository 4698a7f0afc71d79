"""``workshop capacity``: what one user server really costs on this machine, and whether N fit.

Starts a few probe servers through the hub (concurrently, timing each spawn), finds each
server's process tree from its PID (the hub's server state, ``admin:server_state``), runs a
small cell in a kernel, and reads with psutil: PSS (proportional set size: shared libraries
counted once across servers, so N x PSS is what N servers take), RSS, and CPU time, plus the
CPU an idle server with a kernel uses over a few seconds. Local spawners only (the servers'
processes must be on this machine).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

import psutil

from cscale_extensions.kernelclient import delete_kernel, run_in_kernel, start_kernel
from cscale_extensions.workshop.hubapi import HubAPI
from cscale_extensions.workshop.model import Workshop, WorkshopError, save
from cscale_extensions.workshop.prewarm import prewarm
from cscale_extensions.workshop.rate import MIB, tree_usage

CELL = "import numpy as np\nx = np.random.rand(500, 500)\nprint(float((x @ x).sum()) > 0)"


def mem_available_mib() -> float:
    return psutil.virtual_memory().available / MIB


@dataclass
class Capacity:
    users: int
    probes: int
    spawn_seconds: list[float] = field(default_factory=list)
    spawn_wall: float = 0.0
    per_server: list[dict[str, float]] = field(default_factory=list)
    idle_cpu: list[float] = field(default_factory=list)
    mem_available_mib: float = 0.0
    cores: int = 1
    memory_fraction: float = 0.8
    concurrent_spawn_limit: int = 20
    start_timeout: int = 120

    def mean(self, key: str) -> float:
        return sum(s[key] for s in self.per_server) / max(1, len(self.per_server))

    def verdict(self) -> dict[str, Any]:
        pss = self.mean("pss_mib")
        budget = self.mem_available_mib * self.memory_fraction
        fit_mem = int(budget // pss) if pss else 0
        idle = sum(self.idle_cpu) / max(1, len(self.idle_cpu))
        rate = self.probes / self.spawn_wall if self.spawn_wall else 0.0
        storm = self.users / rate if rate else float("inf")
        return {
            "memory_per_server_mib": round(pss, 1),
            "rss_per_server_mib": round(self.mean("rss_mib"), 1),
            "cpu_seconds_per_start": round(self.mean("cpu_s"), 2),
            "idle_cpu_cores_per_server": round(idle, 4),
            "servers_fitting_in_memory": fit_mem,
            "memory_needed_mib": round(self.users * pss),
            "memory_budget_mib": round(budget),
            "fits_memory": self.users <= fit_mem,
            "idle_cores_needed": round(self.users * idle, 2),
            "cores": self.cores,
            "fits_cores": self.users * idle <= self.cores,
            "spawns_per_second": round(rate, 3),
            "seconds_to_start_all": round(storm, 1),
            "start_all_within_start_timeout": storm <= self.start_timeout,
        }

    def report(self) -> str:
        v = self.verdict()
        ok = v["fits_memory"] and v["fits_cores"]
        lines = [
            f"Measured {self.probes} probe servers on this machine ({self.cores} cores, "
            f"{self.mem_available_mib:.0f} MiB available):",
            f"  memory per server with a kernel: {v['memory_per_server_mib']} MiB PSS "
            f"({v['rss_per_server_mib']} MiB RSS, shared pages counted in full)",
            f"  CPU to start one server and run a cell: {v['cpu_seconds_per_start']} s; "
            f"idle server: {v['idle_cpu_cores_per_server']} cores",
            f"  spawn times: {', '.join(f'{s:.1f}s' for s in self.spawn_seconds)}; "
            f"{v['spawns_per_second']} spawns/s with {self.probes} at once",
            f"For {self.users} users:",
            f"  memory: {v['memory_needed_mib']} MiB needed of a {v['memory_budget_mib']} MiB budget "
            f"({self.memory_fraction:.0%} of available) -> {'fits' if v['fits_memory'] else 'DOES NOT FIT'}"
            f" (room for {v['servers_fitting_in_memory']} servers)",
            f"  cores: {v['idle_cores_needed']} cores busy when idle, of {self.cores} -> "
            f"{'fits' if v['fits_cores'] else 'DOES NOT FIT'} (computation on top of that shares the cores)",
            f"  starting all: ~{v['seconds_to_start_all']} s at the measured rate "
            f"(spawner.start_timeout {self.start_timeout} s; concurrent_spawn_limit "
            f"{self.concurrent_spawn_limit})"
            + (
                ""
                if v["start_all_within_start_timeout"]
                else " -> pre-warm with `workshop prewarm` before the event"
            ),
            f"Verdict: {self.users} users {'FIT' if ok else 'DO NOT FIT'} on this machine.",
        ]
        return "\n".join(lines)


def measure(
    api: HubAPI,
    hub_url: str,
    users: int,
    *,
    probes: int,
    cfg: dict[str, Any],
    workshops: Path | None = None,
    idle_seconds: float = 5.0,
    log=print,
) -> Capacity:
    """Start ``probes`` servers of throw-away hub users, measure them, stop and remove them."""
    names = [f"capacity-probe-{i}" for i in range(1, probes + 1)]
    h, s = cfg["hub"], cfg["spawner"]
    cap = Capacity(
        users=users,
        probes=probes,
        mem_available_mib=mem_available_mib(),
        cores=os.cpu_count() or 1,
        memory_fraction=cfg["workshop"]["capacity_memory_fraction"],
        concurrent_spawn_limit=h["concurrent_spawn_limit"],
        start_timeout=s["start_timeout"],
    )
    probe_dir = None
    if workshops is not None:
        # a throw-away cohort, so the hub lets these never-logged-in users spawn (see hub.py)
        probe_dir = workshops / "capacity-probe"
        probe_dir.mkdir(parents=True, exist_ok=True)
        save(probe_dir, Workshop(name="capacity-probe", users=names, provider="none"))
    t0 = time.monotonic()
    try:
        result = prewarm(
            api, names, parallel=probes, retries=0, timeout=s["start_timeout"], log=log
        )
        cap.spawn_wall = time.monotonic() - t0
        failed = {n: r["error"] for n, r in result.items() if r["state"] != "ready"}
        if failed:
            raise WorkshopError(f"probe servers failed to start: {failed}")
        cap.spawn_seconds = [result[n]["seconds"] for n in names]
        kernels = []
        for n in names:
            server = api.user(n)["servers"][""]
            pid = (server.get("state") or {}).get("pid")
            if not pid or not psutil.pid_exists(pid):
                raise WorkshopError(
                    "the servers' processes are not on this machine (or the token lacks "
                    "admin:server_state); capacity measures local spawners only"
                )
            token = api.token_for(n, "capacity probe", 600)
            url = urljoin(hub_url, server["url"])  # absolute with per-user hosts
            try:
                kid = start_kernel(url, token)
                run_in_kernel(url, token, CELL, kernel_id=kid)
            except (RuntimeError, OSError) as exc:  # incl. TimeoutError, requests' errors
                raise WorkshopError(f"the probe server of {n} cannot run a cell: {exc}") from exc
            kernels.append((n, pid, url, token, kid))
        for _n, pid, *_ in kernels:
            cap.per_server.append(tree_usage(pid))
        before = [tree_usage(pid)["cpu_s"] for _n, pid, *_ in kernels]
        time.sleep(idle_seconds)
        after = [tree_usage(pid)["cpu_s"] for _n, pid, *_ in kernels]
        cap.idle_cpu = [(a - b) / idle_seconds for a, b in zip(after, before, strict=True)]
        for _n, _pid, url, token, kid in kernels:
            delete_kernel(url, token, kid)
    finally:
        for n in names:
            api.stop(n)
        api.wait_stopped(names, timeout=60)
        for n in names:
            api.request("DELETE", f"users/{quote(n)}", ok=(204, 404))
        if probe_dir is not None:
            shutil.rmtree(probe_dir, ignore_errors=True)
    return cap
