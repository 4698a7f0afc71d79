"""One user's processes cannot take the machine, and a hostile username gets a clear page.

The attacker is a VO member with a server on the security stack (``spawner.mem_limit`` and
``spawner.limits.max_processes`` of seckit): from a kernel she allocates past the memory limit,
tries to lower her processes' OOM score and to raise her limits back, forks without end, and
starts a Dask cluster expecting its workers to be unlimited. What must hold: the allocation is
a ``MemoryError`` in her own kernel and the hub keeps answering; her processes are the OOM
killer's first choice (score above the hub's and the proxy's) and she cannot change that or
her limits; the fork bomb stops at the process limit and she can work again afterwards;
JupyterLab and a Dask worker still run under the limits, the worker with its own memory bound.
A second attacker signs up with a username that is the name of a system group (``disk``,
``shadow``): no account is made (it would hold the group's rights), she gets a 403 page
saying why, never a 500.
"""

from __future__ import annotations

import json
import os
import pwd

import pytest
import requests
from seckit import MAX_PROCESSES, MEM_LIMIT, assert_clean_page, child_pid, hub_pid

from cscale_extensions.kernelclient import delete_kernel, run_in_kernel, start_kernel
from cscale_extensions.userlimits import parse_bytes

rel = pytest.mark.reliability
pytestmark = pytest.mark.skipif(
    os.getuid() != 0, reason="limits are set as root before the switch to the user"
)
USER = "sec-hog"
LIMIT = parse_bytes(MEM_LIMIT)


@pytest.fixture(scope="module")
def hog(sec):
    sec.member(USER)
    token = sec.token(USER)
    return token, sec.start_server(token, USER)


def _hub_answers(sec) -> None:
    r = requests.get(sec.url + "hub/api/", timeout=10)
    assert r.status_code == 200, f"the hub does not answer: HTTP {r.status_code}"


def _has_cap_sys_resource(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        eff = next(line for line in f if line.startswith("CapEff:"))
    return bool(int(eff.split()[1], 16) >> 24 & 1)  # CAP_SYS_RESOURCE = 24


def _spawn_failure(sec, api: requests.Session, server: str) -> str:
    """The message of the failed-spawn event of ``server`` (the hub's progress stream)."""
    url = sec.url + f"hub/api/users/{USER}/servers/{server}/progress"
    with api.get(url, stream=True, timeout=180) as r:
        assert r.status_code == 200, r.text[:300]
        for line in r.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                event = json.loads(line[5:])
                if event.get("failed"):
                    return event.get("message", "")
                if event.get("ready"):
                    raise AssertionError("the server started beyond the process limit")
    raise AssertionError("no failure reported")


def _oom_score_adj(pid: int) -> int:
    with open(f"/proc/{pid}/oom_score_adj") as f:
        return int(f.read())


@rel(
    injected=f"a kernel allocates 3 GiB with spawner.mem_limit {MEM_LIMIT}",
    expected="MemoryError in that kernel, which keeps running; the hub keeps answering",
)
def test_kernel_allocating_past_its_limit_gets_memory_error(sec, hog):
    token, url = hog
    code = "\n".join([
        "try:",
        "    hoard = bytearray(3 * 2**30)",
        "    print('allocated', len(hoard))",
        "except MemoryError:",
        "    print('MemoryError')",
        "import resource; print(resource.getrlimit(resource.RLIMIT_DATA))",
    ])
    out = run_in_kernel(url, token, code, timeout=120)
    assert "MemoryError" in out and "allocated" not in out, out
    assert f"({LIMIT}, {LIMIT})" in out, out
    _hub_answers(sec)
    assert run_in_kernel(url, token, "print(sum(range(10)))").strip() == "45"


@rel(
    injected="a user reads her kernel's oom_score_adj, tries to lower it to 0 and -1000, and to "
    "raise her RLIMIT_DATA / RLIMIT_NPROC",
    expected="her score (+500) above the hub's and the proxy's (-500); every change refused",
)
def test_user_processes_are_the_oom_killers_first_choice(sec, hog):
    token, url = hog
    code = "\n".join([
        "import json, os, resource",
        "out = {'score': int(open('/proc/self/oom_score_adj').read()), 'refused': []}",
        "for value in ('0', '-1000'):",
        "    try:",
        "        with open('/proc/self/oom_score_adj', 'w') as f: f.write(value)",
        "    except OSError:",
        "        out['refused'].append(value)",
        "for name in ('RLIMIT_DATA', 'RLIMIT_NPROC'):",
        "    which = getattr(resource, name)",
        "    try:",
        "        resource.setrlimit(which, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))",
        "    except (ValueError, OSError):",
        "        out['refused'].append(name)",
        "out['after'] = int(open('/proc/self/oom_score_adj').read())",
        "out['nice'] = os.nice(0)",
        "print(json.dumps(out))",
    ])
    doc = json.loads(run_in_kernel(url, token, code).strip().splitlines()[-1])
    hub = _oom_score_adj(hub_pid(sec.stack))
    proxy = _oom_score_adj(child_pid(sec.stack, "configurable-http-proxy"))
    assert doc["score"] >= 500 and doc["score"] > max(hub, proxy), (doc, hub, proxy)
    assert doc["nice"] >= 10, doc
    assert {"-1000", "RLIMIT_DATA", "RLIMIT_NPROC"} <= set(doc["refused"]), doc
    if _has_cap_sys_resource(hub_pid(sec.stack)):
        # root sets the floor: the user cannot go below +500, the platform is at -500
        assert hub <= -500 and proxy <= -500, (hub, proxy)
        assert "0" in doc["refused"] and doc["after"] == doc["score"], doc
    else:
        # a sandbox without CAP_SYS_RESOURCE (no negative scores, no floor): the platform
        # stays at 0, and the user cannot get below it
        assert hub == proxy == 0 and doc["after"] >= hub, (doc, hub)


@rel(
    injected=f"a fork bomb in a kernel (up to 2000 children; spawner.limits.max_processes "
    f"{MAX_PROCESSES})",
    expected="fork fails with EAGAIN before the limit; after the children are gone she runs "
    "code again and the hub answers",
)
def test_fork_bomb_stops_at_the_process_limit(sec, hog):
    token, url = hog
    code = "\n".join([
        "import os, signal, time",
        "pids, error = [], None",
        "try:",
        "    for _ in range(2000):",
        "        pid = os.fork()",
        "        if pid == 0:",
        "            time.sleep(120)",
        "            os._exit(0)",
        "        pids.append(pid)",
        "except OSError as exc:",
        "    error = type(exc).__name__",
        "for pid in pids:",
        "    os.kill(pid, signal.SIGKILL)",
        "for pid in pids:",
        "    os.waitpid(pid, 0)",
        "print(len(pids), error)",
    ])
    forked, error = run_in_kernel(url, token, code, timeout=300).split()[-2:]
    assert error == "BlockingIOError" and int(forked) < MAX_PROCESSES, (forked, error)
    _hub_answers(sec)
    assert run_in_kernel(url, token, "print(6 * 7)").strip() == "42"


@rel(
    injected="while her fork bomb holds every process slot of her account, the user starts "
    "another server",
    expected="503 naming the process limit and what to stop, not a 500; the hub answers",
)
def test_server_start_at_the_process_limit_is_a_clear_error(sec, hog):
    token, url = hog
    kid = start_kernel(url, token)
    fill = "\n".join([
        "import os, time",
        "pids = []",
        "try:",
        "    for _ in range(2000):",
        "        pid = os.fork()",
        "        if pid == 0:",
        "            time.sleep(300)",
        "            os._exit(0)",
        "        pids.append(pid)",
        "except OSError as exc:",
        "    print('full', len(pids), type(exc).__name__)",
    ])
    api = sec.api(token)
    try:
        assert "BlockingIOError" in run_in_kernel(url, token, fill, kernel_id=kid, timeout=300)
        r = api.post(sec.url + f"hub/api/users/{USER}/servers/at-limit", timeout=60)
        if r.status_code == 202:  # still starting after the hub's slow-spawn timeout
            msg = _spawn_failure(sec, api, "at-limit")
        else:
            assert r.status_code == 503, f"HTTP {r.status_code}: {r.text[:300]}"
            msg = r.json()["message"]
        assert str(MAX_PROCESSES) in msg and "stop some" in msg, msg
        _hub_answers(sec)
    finally:
        run_in_kernel(url, token, "\n".join([
            "import os, signal",
            "for pid in pids: os.kill(pid, signal.SIGKILL)",
            "for pid in pids: os.waitpid(pid, 0)",
        ]), kernel_id=kid, timeout=120)
        delete_kernel(url, token, kid)
        api.delete(sec.url + f"hub/api/users/{USER}/servers/at-limit", json={"remove": True},
                   timeout=60)


@rel(
    injected="the user opens JupyterLab and starts a Dask cluster with one worker under the "
    "limits",
    expected="/lab loads; the worker computes; its RLIMIT_DATA is worker_memory + "
    "dask_headroom, its oom_score_adj +500, RLIMIT_NPROC the user's",
)
def test_jupyterlab_and_dask_worker_run_under_the_limits(sec, hog):
    token, url = hog
    r = requests.get(url + "lab", headers={"Authorization": f"token {token}"}, timeout=60)
    assert r.status_code == 200 and "jupyter" in r.text.lower(), r.status_code
    code = "\n".join([
        "import json",
        "from dask_gateway import Gateway",
        "gw = Gateway()",
        "cluster = gw.new_cluster()",
        "try:",
        "    cluster.scale(1)",
        "    client = cluster.get_client()",
        "    client.wait_for_workers(1, timeout=180)",
        "    total = client.submit(sum, range(100)).result()",
        "    def probe():",
        "        import os, resource",
        "        return [resource.getrlimit(resource.RLIMIT_DATA)[0],",
        "                resource.getrlimit(resource.RLIMIT_NPROC)[0],",
        "                int(open('/proc/self/oom_score_adj').read()), os.getuid()]",
        "    seen = list(client.run(probe).values())",
        "    client.close()",
        "finally:",
        "    cluster.shutdown()",
        "print(json.dumps({'total': total, 'seen': seen}))",
    ])
    doc = json.loads(run_in_kernel(url, token, code, timeout=400).strip().splitlines()[-1])
    assert doc["total"] == 4950
    worker_memory = int(sec.stack.cfg["dask_gateway"]["defaults"]["worker_memory"] * 2**30)
    headroom = parse_bytes(sec.stack.cfg["spawner"]["limits"]["dask_headroom"])
    uid = pwd.getpwnam(USER).pw_uid
    assert doc["seen"] == [[worker_memory + headroom, MAX_PROCESSES, 500, uid]], doc


@rel(
    injected="a VO member signs up as `{param}` (an existing system group) and starts a server",
    expected="403 naming the reason, from the API and as a page; no account, no 500",
)
@pytest.mark.parametrize("name", ["disk", "shadow"])
def test_username_of_a_system_group_gets_a_clear_refusal(sec, name):
    sec.member(name)
    token = sec.token(name)
    r = sec.api(token).post(sec.url + f"hub/api/users/{name}/server", timeout=60)
    assert r.status_code == 403, f"HTTP {r.status_code}: {r.text[:300]}"
    assert "system group" in r.json()["message"], r.text
    page = sec.login(name).get(sec.url + "hub/spawn", timeout=60)
    assert_clean_page(page)
    assert page.status_code == 403 and "system group" in page.text, page.text[:500]
    assert "Unhandled error" not in page.text
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
    _hub_answers(sec)
