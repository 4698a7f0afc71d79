"""The launcher restarts a stack process that exits (platform.restart_limit / restart_window):
a crashed hub or proxy comes back by itself and the user's server, kernel state and files
survive; past the limit the whole stack stops with a message naming the process."""

from __future__ import annotations

import os
import signal
import time

import pytest
import requests
from cscale_testing import LocalStack, server_url

from cscale_extensions.kernelclient import run_in_kernel
from cscale_extensions.localstack.supervisor import RestartPolicy
from cscale_extensions.processes import alive

pytestmark = pytest.mark.slow

LEAN = {
    "federation": {"embedded_sites": False},
    "eomqs": {"enabled": False},
    "runs": {"enabled": False},
    "dask_gateway": {"enabled": False},
}


def test_policy_counts_restarts_per_process_within_the_window():
    now = [0.0]
    policy = RestartPolicy(limit=2, window=60, clock=lambda: now[0])
    assert policy.allow("hub") == (True, 1)
    assert policy.allow("proxy") == (True, 1)
    now[0] = 10
    assert policy.allow("hub") == (True, 2)
    assert policy.allow("hub") == (False, 2)
    now[0] = 65  # the first restart left the window
    assert policy.allow("hub") == (True, 2)
    assert RestartPolicy(limit=0, window=60).allow("hub") == (False, 0)


def _wait(check, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except (requests.RequestException, LookupError):
            pass
        time.sleep(1)
    return False


@pytest.fixture(scope="module")
def stack():
    # the hub re-adds missing proxy routes (after the proxy's crash) every activity interval
    # (JupyterHub.last_activity_interval; 60 s by default): 5 s, so the test waits 5, not 60
    st = LocalStack(config={**LEAN, "culler": {"activity_interval": 5}}).start()
    try:
        yield st
    finally:
        assert st.finish() == [], "processes of the stack survived its stop"


def test_crashed_hub_and_proxy_come_back_and_nothing_is_lost(stack):
    user = stack.add_user("rs")
    token = stack.api_token(user)
    server = server_url(stack.url, stack.start_server(token, user)["url"])
    run_in_kernel(server, token, "open('keep.txt', 'w').write('kept')")
    api = stack.api(token)

    def server_answers() -> bool:
        # the server itself, not the hub's login page at the end of a redirect (the proxy
        # lacks the route until the hub re-adds it; requests drops the token across hosts)
        r = api.get(server + "api/status", timeout=10, allow_redirects=False)
        return r.status_code == 200 and "started" in r.json()

    def hub_answers() -> bool:
        return api.get(stack.url + "hub/api/user", timeout=10).status_code == 200

    for name, argv_part in (("hub", "jupyterhub -f"), ("proxy", "configurable-http-proxy")):
        pid = stack.child_pid(argv_part)
        os.kill(pid, signal.SIGKILL)
        assert _wait(lambda p=pid, a=argv_part: stack.child_pid(a) != p, 120), (
            f"the launcher did not restart the {name}:\n{stack.log()}"
        )
        assert stack.proc.poll() is None, f"the stack stopped after the {name} crash"
        assert _wait(hub_answers, 180), f"the hub does not answer after the {name} crash"
        assert _wait(server_answers, 120), (
            f"the user's server is unreachable after the {name} crash"
        )
        assert f"restarting {name}" in stack.log(200)
    model = api.get(stack.url + f"hub/api/users/{user}", timeout=30).json()
    assert model["servers"][""]["ready"]
    assert run_in_kernel(server, token, "print(open('keep.txt').read())").strip() == "kept"


def test_past_the_limit_the_stack_stops_and_says_why():
    st = LocalStack(config={**LEAN, "platform": {"restart_limit": 0}}).start()
    try:
        pid = st.child_pid("configurable-http-proxy")
        os.kill(pid, signal.SIGKILL)
        st.proc.wait(120)
        assert st.proc.returncode == 1
        out = st.log(200)
        assert "proxy exited with code -9" in out and "platform.restart_limit 0" in out
        assert not alive(pid)
    finally:
        assert st.finish() == []
