"""A smoke run of the login-storm benchmark (bench/workshop_storm.py): two participants (one
a second: the second arrives while the first one's server is starting) against the lean
platform and the plain JupyterHub, cold and pre-warmed. Each must reach a working kernel;
the figures are printed and kept in test-artifacts/storm-smoke.json, never asserted. The
benchmark itself (10-20 participants, ~30 minutes on 2 cores, the figures of
docs/workshops.md) is run by hand: ``.venv/bin/python bench/workshop_storm.py --users 10``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "workshop_storm.py"
USERS = 2
RUNS = ("platform/cold", "vanilla/cold", "platform/prewarmed", "vanilla/prewarmed")


@pytest.mark.slow
@pytest.mark.timeout(1260)
def test_login_storm_smoke(capsys, artifacts):
    out = artifacts / "storm-smoke.json"
    out.unlink(missing_ok=True)
    r = subprocess.run(
        [sys.executable, str(BENCH), "--users", str(USERS), "--rate", "1", "--lean",
         "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )  # fmt: skip
    with capsys.disabled():
        print("\n" + r.stdout[-3000:])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads(out.read_text())
    for run in RUNS:
        s = report["runs"][run]
        assert (s["ok"], s["n"]) == (USERS, USERS), f"{run}: {s}"
