"""The runs service inside the whole platform (`cscale-hub up`, hub-managed service, real
OIDC logins): runs execute as the submitting user's own account, in their home; the CLI
works from inside a user server with the server's own token."""

from __future__ import annotations

import json
import os
import pwd
import time
from pathlib import Path

import nbformat
import pytest
import requests
from cscale_testing import server_url

from cscale_extensions.kernelclient import run_in_kernel

pytestmark = pytest.mark.slow
TERMINAL = ("succeeded", "failed", "cancelled", "timeout", "lost")


def _nb(code: str) -> dict:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return json.loads(nbformat.writes(nb))


def _wait(api: requests.Session, url: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.get(url, timeout=30).json()
        if run["state"] in TERMINAL:
            return run
        time.sleep(1)
    raise AssertionError(f"not finished: {run}")


@pytest.fixture(scope="module")
def member_server(platform):
    """demo-member's default server: its URL, a token, and who/where it runs (uid, HOME)."""
    token = platform.api_token("demo-member")
    server = platform.start_server(token, "demo-member")
    base = server_url(platform.url, server["url"])
    uid, home = json.loads(
        run_in_kernel(
            base, token, "import os, json\nprint(json.dumps([os.getuid(), os.environ['HOME']]))"
        )
    )
    return base, token, uid, Path(home)


def test_run_executes_as_the_submitting_user_in_their_home(platform, member_server):
    _, _, server_uid, server_home = member_server
    runs_url = platform.url + "services/runs/"
    member = platform.api(platform.api_token("demo-member", ["access:services!service=runs"]))
    code = "import os, json\nprint('WHO', json.dumps([os.getuid(), os.environ['HOME'], os.getcwd(), x]))"
    r = member.post(
        runs_url + "runs", json={"notebook": _nb(code), "parameters": {"x": 3}}, timeout=30
    )
    assert r.status_code == 201, r.text
    run = _wait(member, runs_url + f"runs/{r.json()['id']}")
    assert run["state"] == "succeeded", run
    out = member.get(runs_url + f"runs/{run['id']}/output", timeout=30).text
    uid, home, cwd, x = json.loads(out.split("WHO ")[1].split("\\n")[0].replace('\\"', '"'))
    # the same account and home as the user's interactive server
    assert (uid, home) == (server_uid, str(server_home))
    if os.getuid() == 0:  # system accounts: never root, the user's own POSIX account
        assert uid == pwd.getpwnam("demo-member").pw_uid != 0
    assert cwd == f"{home}/runs/{run['id']}" and x == 3
    admin = platform.api(platform.api_token("demo-admin"))
    listed = admin.get(runs_url + "runs", params={"all": "true"}, timeout=30).json()
    assert run["id"] in {x["id"] for x in listed}
    other = platform.api(platform.api_token("demo-admin", ["access:services!service=runs"]))
    assert other.get(runs_url + "runs", timeout=30).json() == []  # own runs only by default


def test_cli_from_inside_a_user_server(platform, member_server):
    base, token, _, home = member_server
    code = (
        "import json, subprocess, nbformat, os\n"
        "nb = nbformat.v4.new_notebook()\n"
        "nb.cells = [nbformat.v4.new_code_cell('print(\"inside\", 6 * 7)')]\n"
        "nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'P', 'language': 'python'}\n"
        "nbformat.write(nb, 'cli-test.ipynb')\n"
        "r = subprocess.run(['cscale-hub', 'run', 'cli-test.ipynb', '--wait'], capture_output=True,"
        " text=True, timeout=600)\n"
        "print(json.dumps([r.returncode, r.stdout, r.stderr, os.environ.get('CSCALE_RUNS_URL')]))\n"
    )
    rc, stdout, stderr, runs_url = json.loads(run_in_kernel(base, token, code, timeout=600))
    assert runs_url == platform.url + "services/runs/"
    assert rc == 0, stdout + stderr
    run_id = stdout.split()[1]
    assert "inside 42" in (home / f"cli-test.{run_id}.ipynb").read_text()
