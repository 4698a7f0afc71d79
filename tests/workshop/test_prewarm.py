"""`workshop prewarm` on a real stack: the measured parallelism, progress with an ETA, and the
pre-started kernel of each server (a child of the participant's own server, running as the
participant in their home, handed to their first kernel request in the directory it asks for)."""

from __future__ import annotations

import json
import pwd
import re
import time
from pathlib import Path

import psutil
import requests
from cscale_testing import server_url

from cscale_extensions.kernelclient import run_in_kernel
from cscale_extensions.workshop.hubapi import HubAPI

N = 3


def _prestarted(pid: int, timeout: float = 90) -> psutil.Process:
    """The ipykernel process below the server ``pid`` (waits for the pool to start it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in psutil.Process(pid).children(recursive=True):
            try:
                if any("ipykernel" in a for a in p.cmdline()):
                    return p
            except psutil.Error:
                continue
        time.sleep(0.5)
    raise AssertionError(f"no pre-started kernel below server process {pid}")


def test_prewarm_measures_reports_progress_and_prestarts_kernels(
    ws_stack, admin_token, cli, tmp_path
):
    course = tmp_path / "course"
    (course / "day1").mkdir(parents=True)
    (course / "day1" / "data.txt").write_text("x")
    rc, _, err = cli("create", "pw", "--users", str(N), "--materials", str(course))
    assert rc == 0, err
    users = [f"pw-{i:02d}" for i in range(1, N + 1)]
    api = HubAPI(ws_stack.url, admin_token)
    saved = Path(ws_stack.state_dir) / "workshops" / "start-cost.json"
    saved.unlink(missing_ok=True)  # `workshop capacity` may have measured one: measure here
    try:
        rc, out, err = cli("prewarm", "pw")
        assert rc == 0, out + err
        assert "measuring this machine's rate" in out
        m = re.search(
            r"one start measured: ([\d.]+)s, ([\d.]+) CPU-s, \d+ MiB; \d+ cores -> (\d+) at a time",
            out,
        )
        assert m, out
        assert float(m[2]) > 0 and 1 <= int(m[3]) <= 2  # the stack's spawn limit 3, less one
        progress = re.findall(r"\[(\d)/3, \d+ starting, ETA (?:\d+m)?\d+s\]", out)
        assert sorted(progress) == ["1", "2", "3"], out
        assert f"prewarm: {N}/{N} ready in" in out
        kept = json.loads(saved.read_text())  # the next prewarm starts at this rate at once
        assert kept["source"] == "workshop prewarm" and round(kept["cpu"], 1) == float(m[2])
        assert saved.stat().st_mode & 0o077 == 0

        for u in users:
            server = api.user(u)["servers"][""]
            assert server["ready"]
            pid = server["state"]["pid"]
            kernel = _prestarted(pid)
            account = pwd.getpwnam(u)
            assert kernel.uids().real == account.pw_uid != 0  # the participant's, not root's
            home = Path(ws_stack.state_dir) / "homes" / u
            assert Path(kernel.cwd()) == home

        # the first kernel asked for is the pre-started one, moved to the notebook's directory
        u = users[0]
        kernel = _prestarted(api.user(u)["servers"][""]["state"]["pid"])
        token = api.token_for(u, "prewarm test")
        base = server_url(ws_stack.url, api.user(u)["servers"][""]["url"]).rstrip("/")
        auth = {"Authorization": f"token {token}"}
        listed = requests.get(f"{base}/api/kernels", headers=auth, timeout=30).json()
        assert listed == []  # not the participant's until handed out
        t = time.monotonic()
        r = requests.post(
            f"{base}/api/kernels", json={"name": "python3", "path": "pw/day1"}, headers=auth,
            timeout=60,
        )  # fmt: skip
        assert r.status_code == 201, r.text
        kid = r.json()["id"]
        assert any(kid in a for a in kernel.cmdline()), (kid, kernel.cmdline())
        out = run_in_kernel(
            base, token, "import os\nprint(os.getcwd(), open('data.txt').read())", kernel_id=kid
        )
        first_cell = time.monotonic() - t
        assert out.split() == [str(Path(ws_stack.state_dir) / "homes" / u / "pw" / "day1"), "x"]
        print(f"\nfirst cell in the pre-started kernel: {first_cell:.2f}s after asking for it")
        # taken kernels are not replaced: the next one is a fresh start, listed as usual
        r = requests.post(f"{base}/api/kernels", json={"name": "python3"}, headers=auth, timeout=60)
        assert r.status_code == 201 and r.json()["id"] != kid
        ids = {
            k["id"] for k in requests.get(f"{base}/api/kernels", headers=auth, timeout=30).json()
        }
        assert ids == {kid, r.json()["id"]}
    finally:
        rc, out, err = cli("end", "pw")
        assert rc == 0, out + err
