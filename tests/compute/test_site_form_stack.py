"""The spawn form of compute sites on the whole platform: /hub/spawn of a real hub over HTTP.

`cscale-hub up` with the embedded Slurm, ``hpc`` open to ``vo.cscale.eu`` only (the
``hpc_stack`` of conftest.py). A member of that VO is shown cloud and hpc with their kinds and
limits; a forged site is refused on the form page with the reason (no 500); choosing hpc puts
the choice into the server's environment, where dask-gateway's client takes it as the default
cluster option: a ``new_cluster()`` without options made with that environment's config lands
on hpc (Slurm jobs of the member). A member of a VO not allowed on hpc gets no form (one site:
the server starts at once, without a site in its environment), and a site forced through the
REST API is refused with 403. Before, the local spawners had no form: /hub/spawn started the
server at once for everyone and a ``site`` option was ignored.
"""

from __future__ import annotations

import html
import re
import time
from urllib.parse import urljoin

import dask.config
import psutil
import pytest
from dask_gateway.client import ClusterStatus

from cscale_extensions.compute import DEFAULT_SITE_ENV
from cscale_extensions.hub.siteform import GATEWAY_SITE_ENV

pytestmark = pytest.mark.slow
MEMBER = "demo-member"


def _form_action(page) -> str:
    m = re.search(r'<form[^>]*?action="([^"]+)"[^>]*id="spawn_form"|'
                  r'<form[^>]*?id="spawn_form"[^>]*?action="([^"]+)"', page.text, re.S)
    assert m, page.text[:1000]
    return urljoin(page.url, html.unescape(m.group(1) or m.group(2)))


def _server_env(stack, user: str, timeout: float = 120) -> dict[str, str]:
    """The environment of ``user``'s running jupyterhub-singleuser of this stack."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in psutil.process_iter(["username", "cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if p.info["username"] == user and "jupyterhub-singleuser" in cmd:
                try:
                    env = p.environ()
                except psutil.Error:
                    continue
                if env.get("CSCALE_STACK_ID") == stack.stack_id:
                    return env
        time.sleep(0.5)
    raise AssertionError(f"no server of {user} running after {timeout} s")


def _ready(stack, token: str, user: str, timeout: float = 120) -> None:
    api = stack.api(token)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = api.get(stack.url + f"hub/api/users/{user}", timeout=30).json()
        if (model.get("servers") or {}).get("", {}).get("ready"):
            return
        time.sleep(0.5)
    raise AssertionError(f"the server of {user} is not ready after {timeout} s")


def test_member_of_the_hpc_vo_chooses_hpc_for_the_servers_clusters(hpc_stack, gateway_for, slurm):
    s = hpc_stack.login(MEMBER)  # the login lands on the form (no server is started)
    page = s.get(hpc_stack.url + "hub/spawn", timeout=60)
    assert page.status_code == 200 and 'id="cscale-site-form"' in page.text, page.text[:500]
    assert re.findall(r'name="site" value="([a-z-]+)"', page.text) == ["cloud", "hpc"]
    assert 'value="cloud" checked' in page.text  # the platform's default preselected
    assert "slurm" in page.text and "jobs of at most 480 min" in page.text

    forged = s.post(_form_action(page), data={"site": "elsewhere"}, timeout=60)
    text = html.unescape(forged.text)
    assert forged.status_code == 400, (forged.status_code, text[:500])
    assert "There is no compute site 'elsewhere'. Sites you may use: cloud, hpc." in text
    assert "Traceback" not in text and 'id="cscale-site-form"' in text  # the form again

    chosen = s.post(_form_action(page), data={"site": "hpc"}, timeout=120)
    assert chosen.status_code < 400, (chosen.status_code, chosen.text[:500])
    token = hpc_stack.api_token(MEMBER)
    _ready(hpc_stack, token, MEMBER)
    env = _server_env(hpc_stack, MEMBER)
    assert env.get(GATEWAY_SITE_ENV) == "hpc" and env.get(DEFAULT_SITE_ENV) == "hpc"

    # dask-gateway's client in that server reads its config from these variables: a cluster
    # made without options goes to the site chosen
    gateway_env = {k: v for k, v in env.items() if k.startswith("DASK_GATEWAY__CLUSTER__")}
    options = dask.config.collect_env(gateway_env)["gateway"]["cluster"]["options"]
    with dask.config.set({"gateway.cluster.options": options}):
        gw = gateway_for(MEMBER)
        assert gw.cluster_options()._fields["site"].value == "hpc"
        cluster = gw.new_cluster()
    try:
        assert any(cluster.name in j.name and j.user == MEMBER for j in slurm.jobs())
    finally:
        cluster.shutdown()
    assert all(c.status != ClusterStatus.RUNNING for c in gw.list_clusters())
    hpc_stack.api(token).delete(hpc_stack.url + f"hub/api/users/{MEMBER}/server", timeout=60)


def _stopped(stack, token: str, user: str, timeout: float = 60) -> None:
    api = stack.api(token)
    api.delete(stack.url + f"hub/api/users/{user}/server", timeout=60)
    deadline = time.monotonic() + timeout
    while (api.get(stack.url + f"hub/api/users/{user}", timeout=30).json().get("servers")):
        assert time.monotonic() < deadline, f"the server of {user} did not stop"
        time.sleep(0.5)


def test_member_of_another_vo_gets_no_form_and_a_forced_site_is_refused(hpc_stack, outsider):
    token = hpc_stack.api_token(outsider)  # its login went through /hub/spawn: no form
    s = hpc_stack.login(outsider)
    page = s.get(hpc_stack.url + "hub/spawn", timeout=60)
    assert page.status_code < 400 and "cscale-site-form" not in page.text, page.text[:500]
    _ready(hpc_stack, token, outsider)
    env = _server_env(hpc_stack, outsider)
    assert GATEWAY_SITE_ENV not in env and DEFAULT_SITE_ENV not in env
    _stopped(hpc_stack, token, outsider)

    api = hpc_stack.api(token)
    r = api.post(hpc_stack.url + f"hub/api/users/{outsider}/server",
                 json={"user_options": {"site": "hpc"}}, timeout=60)
    assert r.status_code == 403, (r.status_code, r.text[:500])
    assert "'hpc' is open to members of vo.cscale.eu only" in r.json()["message"], r.text
    assert "Sites you may use: cloud." in r.json()["message"]
    # the refused choice is not kept: the next start without options (a service's) works
    hpc_stack.start_server(token, outsider)
    _stopped(hpc_stack, token, outsider)
