"""Per-user process limits and dashboard routing, without a stack (real processes, real rlimits).

A process started through :meth:`ProcessLimits.then` (as the hub and the gateway start user
processes: limits as root, then the switch to the account) cannot raise its limits again, and
an allocation past its memory limit is a MemoryError in that process. The values come from the
settings: ``mem_limit`` raised by VO entries, Dask memory plus headroom. The gateway's proxy
never gets a direct route to a dashboard.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import subprocess
import sys
from types import SimpleNamespace

import pytest

from cscale_extensions import config as settings
from cscale_extensions.gateway import dask_process_limits
from cscale_extensions.gateway.dashboards import DashboardAccess
from cscale_extensions.userlimits import ProcessLimits, parse_bytes, vo_maximum

as_root = pytest.mark.skipif(os.getuid() != 0, reason="limits are set as root, then setuid")


@pytest.mark.parametrize(("text", "value"), [
    ("4G", 4 * 2**30), ("512M", 512 * 2**20), ("1.5G", int(1.5 * 2**30)), ("2Gi", 2 * 2**30),
    (2048, 2048), (None, None), ("", None), (0, None),
])
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


def test_vo_entries_raise_the_defaults_never_lower_them():
    vo = {"big": {"mem_limit": "8G", "max_processes": 4096}, "small": {"mem_limit": "1G"}}
    assert vo_maximum(["small"], vo, "mem_limit", "2G") == 2 * 2**30
    assert vo_maximum(["small", "big"], vo, "mem_limit", 2 * 2**30) == 8 * 2**30
    assert vo_maximum(["small"], vo, "mem_limit", None) == 2**30
    assert vo_maximum([], vo, "mem_limit", None) is None
    assert vo_maximum(["big"], vo, "max_processes", 1024) == 4096
    assert vo_maximum(["other"], vo, "max_processes", 1024) == 1024


def test_dask_processes_get_their_memory_plus_headroom():
    cfg = settings.defaults()["spawner"]["limits"]
    cluster = SimpleNamespace(config=SimpleNamespace(worker_memory=2 * 2**30,
                                                     scheduler_memory=2**30))
    worker = dask_process_limits(cfg, cluster, "worker-abc", own_account=True)
    assert worker.memory == 2 * 2**30 + 512 * 2**20 and worker.processes == 1024
    scheduler = dask_process_limits(cfg, cluster, "scheduler", own_account=False)
    assert scheduler.memory == 2**30 + 512 * 2**20 and scheduler.processes is None
    assert dask_process_limits({**cfg, "mode": "off"}, cluster, "scheduler",
                               own_account=True) is None


PROBE = """
import json, os, resource
out = {"data": resource.getrlimit(resource.RLIMIT_DATA),
       "nproc": resource.getrlimit(resource.RLIMIT_NPROC),
       "oom": int(open("/proc/self/oom_score_adj").read()), "nice": os.nice(0),
       "uid": os.getuid(), "raised": []}
for name in ("RLIMIT_DATA", "RLIMIT_NPROC"):
    try:
        resource.setrlimit(getattr(resource, name), (resource.RLIM_INFINITY,) * 2)
        out["raised"].append(name)
    except (ValueError, OSError):
        pass
try:
    hoard = bytearray(512 * 2**20)
    out["alloc"] = "ok"
except MemoryError:
    out["alloc"] = "MemoryError"
print(json.dumps(out))
"""


@as_root
def test_a_user_process_keeps_the_limits_root_gave_it():
    nobody = pwd.getpwnam("nobody")

    def switch_user():
        os.setgid(nobody.pw_gid)
        os.setgroups([])
        os.setuid(nobody.pw_uid)

    limits = ProcessLimits(memory=256 * 2**20, processes=300)
    r = subprocess.run([sys.executable, "-I", "-c", PROBE], capture_output=True, text=True,
                       preexec_fn=limits.then(switch_user), cwd="/", timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["uid"] == nobody.pw_uid
    assert out["data"] == [256 * 2**20] * 2 and out["nproc"] == [300] * 2
    assert out["raised"] == [], "the user raised a hard limit"
    assert out["oom"] == 500 and out["nice"] >= 10
    assert out["alloc"] == "MemoryError"


def test_the_gateway_proxy_never_routes_a_dashboard_directly():
    """Upstream adds ``/clusters/<name>`` → the scheduler's dashboard; only the SNI route and
    the gateway's own routes reach the proxy."""
    added: list[tuple] = []

    class Proxy:
        prefix = "/services/dask-gateway"

        def __init__(self):
            self.routes = {("PATH", "/services/dask-gateway/clusters/early"): {}}

        async def add_route(self, kind=None, sni=None, path=None, target=None):
            added.append((kind, sni or path, target))

        async def remove_route(self, kind=None, sni=None, path=None):
            self.routes.pop((kind, self.prefix + path), None)

    class Base:
        async def setup(self, app):
            self.proxy = Proxy()

    class Backend(DashboardAccess, Base):
        log = None

    class App(dict):
        def __init__(self):
            super().__init__()
            self.router_routes: list = []
            self.on_cleanup: list = []

        def add_routes(self, routes):
            self.router_routes.extend(routes)

    async def scenario():
        backend = Backend()
        app = App()
        await backend.setup(app)
        await backend.proxy.add_route(kind="PATH", path="/clusters/abc", target="http://x:1")
        await backend.proxy.add_route(kind="SNI", sni="abc", target="tls://x:2")
        await backend.proxy.add_route(kind="PATH", path="/api", target="http://x:3")
        return backend, app

    backend, app = asyncio.run(scenario())
    assert added == [("SNI", "abc", "tls://x:2"), ("PATH", "/api", "http://x:3")]
    assert not backend.proxy.routes, "a dashboard route added before set-up was kept"
    paths = {r.path for r in app.router_routes}
    assert {"/oauth_callback", "/clusters/{cluster}/{tail:.*}"} <= paths


def test_tasks_of_counts_threads_of_the_uid():
    import threading

    from cscale_extensions.userlimits import tasks_of

    stop = threading.Event()
    threads = [threading.Thread(target=stop.wait) for _ in range(5)]
    for t in threads:
        t.start()
    try:
        assert tasks_of(os.getuid()) >= 6
        assert tasks_of(2**31 - 7) == 0
    finally:
        stop.set()
        for t in threads:
            t.join()
