"""The idle culler against real work, on a stack of its own (`cscale-hub up`, 20 s cull timeout).

Two kinds of work produce no traffic: a kernel busy with a silent computation, and a headless
run, which executes in the user's `runs` server as a detached papermill process with a kernel of
its own (nothing the server's kernel manager sees; no traffic while the runs service is not
polling). Neither server may be culled while the work goes on; an idle one of the same stack is.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from cscale_testing import LocalStack, server_url
from cscale_testing.testhub import Runs, notebook

from cscale_extensions.kernelclient import start_busy_kernel
from cscale_extensions.net import http_ready, wait_for

pytestmark = pytest.mark.slow
rel = pytest.mark.reliability
#: short, with quick reports and checks (2 s each): the lag between work and the culler's view
#: of it (busy check + activity report + culler check, ~6 s) stays well inside it
CULL_TIMEOUT = 20


@pytest.fixture(scope="module")
def stack():
    st = LocalStack(
        config={
            "culler": {"timeout": CULL_TIMEOUT, "every": 2, "activity_interval": 2},
            "federation": {"embedded_sites": False},
            "eomqs": {"enabled": False},
            "dask_gateway": {"enabled": False},
        }
    ).start()
    try:
        yield st
    finally:
        st.stop()


def runs_service_pid(stack: LocalStack) -> int:
    """The runs service the hub started for this stack."""
    return stack.service_process("cscale_extensions.services.runs").pid


def _servers(stack: LocalStack, token: str, user: str) -> dict:
    return stack.api(token).get(stack.url + f"hub/api/users/{user}", timeout=30).json()["servers"]


@rel(
    injected=f"idle culler at {CULL_TIMEOUT} s; a kernel busy with a silent {6 * CULL_TIMEOUT} s "
    f"sleep; a silent {4 * CULL_TIMEOUT} s headless run with the runs service frozen (SIGSTOP), "
    "so nothing polls its server",
    expected="neither the busy kernel's server nor the runs server is culled while the work goes "
    "on (an idle server of the same stack is); the run succeeds",
)
def test_culler_spares_busy_kernels_and_running_headless_runs(stack):
    user = stack.add_user("cullrun")
    idle_user = stack.add_user("cullidle")
    token, idle_token = stack.api_token(user), stack.api_token(idle_user)
    stack.start_server(idle_token, idle_user)  # the control: idle, must be culled
    busy_user = stack.add_user("cullbusy")
    busy_token = stack.api_token(busy_user)
    busy = server_url(stack.url, stack.start_server(busy_token, busy_user)["url"])
    start_busy_kernel(busy, busy_token, seconds=6 * CULL_TIMEOUT)
    runs = Runs(stack.url + "services/runs/", token)
    nb = notebook(f"import time; time.sleep({4 * CULL_TIMEOUT})", "print('finished')")
    run = runs.wait(runs.ok("POST", "runs", json={"notebook": nb})["id"], states=("running",))
    pid = runs_service_pid(stack)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        culled_idle = False
        while time.monotonic() - t0 < 3 * CULL_TIMEOUT:
            assert "runs" in _servers(stack, token, user), (
                f"the runs server was culled {time.monotonic() - t0:.0f} s into the freeze "
                "while its run was executing"
            )
            assert "" in _servers(stack, busy_token, busy_user), (
                f"the server with a busy kernel was culled {time.monotonic() - t0:.0f} s in"
            )
            culled_idle = culled_idle or "" not in _servers(stack, idle_token, idle_user)
            time.sleep(3)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert culled_idle, "the idle control server was not culled: the culler did not run"
    # the thawed service first drops the keep-alive connections that timed out while it was
    # frozen (the proxy answers one request 503 "socket hang up"): wait until it answers again
    health = stack.url + "services/runs/health"
    assert wait_for(lambda: http_ready(health), 30, 0.5), "the runs service did not thaw"
    done = runs.wait(run["id"], timeout=6 * CULL_TIMEOUT)
    assert done["state"] == "succeeded", done
