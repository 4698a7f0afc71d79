"""Culling and shutdown on a stack of their own (short culler timeout).

The idle culler must stop idle servers but never one whose kernel is busy computing; Ctrl-C
on `cscale-hub up` must leave no process of the stack running (servers and Dask workers too).
"""

from __future__ import annotations

import os
import pwd
import signal
import time

import psutil
import pytest
import requests
from cscale_testing import LocalStack, server_url

from cscale_extensions.kernelclient import run_in_kernel, start_busy_kernel
from cscale_extensions.processes import alive, stack_processes

pytestmark = pytest.mark.slow
#: short, with quick reports and checks (2 s each): the lag between work and the culler's view
#: of it (busy check + activity report + culler check, ~6 s) stays well inside it
CULL_TIMEOUT = 20


@pytest.fixture(scope="module")
def stack():
    st = LocalStack(config={
        "culler": {"timeout": CULL_TIMEOUT, "every": 2, "activity_interval": 2},
        "federation": {"embedded_sites": False},
    }).start()
    try:
        yield st
    finally:
        st.stop()


def _servers(stack, token, user):
    r = requests.get(stack.url + f"hub/api/users/{user}", headers={"Authorization": f"token {token}"},
                     timeout=30)
    return r.json().get("servers", {})


def test_culler_spares_a_busy_kernel_and_stops_an_idle_server(stack):
    busy_token = stack.api_token("demo-member")
    idle_token = stack.api_token("demo-admin")
    busy = server_url(stack.url, stack.start_server(busy_token, "demo-member")["url"])
    stack.start_server(idle_token, "demo-admin")
    t0 = time.monotonic()
    start_busy_kernel(busy, busy_token, seconds=4 * CULL_TIMEOUT)
    culled_at = None
    while time.monotonic() - t0 < 3 * CULL_TIMEOUT:
        if culled_at is None and "" not in _servers(stack, idle_token, "demo-admin"):
            culled_at = time.monotonic() - t0
        if culled_at is not None and time.monotonic() - t0 > 2 * CULL_TIMEOUT:
            break
        time.sleep(2)
    assert culled_at is not None, "the idle server was not culled"
    # well past the timeout the busy server is still there (its kernel never went quiet)
    assert time.monotonic() - t0 > 2 * CULL_TIMEOUT
    assert "" in _servers(stack, busy_token, "demo-member"), "a server with a busy kernel was culled"


def test_ctrl_c_leaves_no_process_behind(stack):
    # an account of this stack alone, so its processes cannot be another stack's
    user = stack.add_user("lifecycle")
    token = stack.api_token(user)
    server = server_url(stack.url, stack.start_server(token, user)["url"])
    # a running Dask cluster with a worker, deliberately not shut down
    out = run_in_kernel(server, token, "\n".join([
        "from dask_gateway import Gateway",
        "c = Gateway().new_cluster(shutdown_on_close=False)",
        "c.scale(1)",
        "cl = c.get_client(); cl.wait_for_workers(1, timeout=120)",
        "print(len(cl.scheduler_info()['workers']))",
    ]), timeout=240)
    assert out.strip().endswith("1")
    assert len(stack_processes(stack.stack_id)) > 3
    os.killpg(stack.proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    stack.proc.wait(90)
    assert stack.proc.returncode == 0
    assert stack_processes(stack.stack_id) == []
    if os.getuid() == 0:
        uid = pwd.getpwnam(user).pw_uid
        owned = [p.pid for p in psutil.process_iter(["uids"])
                 if p.info["uids"] and p.info["uids"].effective == uid and alive(p.pid)]
        assert owned == [], f"processes of {user} still running: {owned}"
    assert "stopped." in stack.log()
