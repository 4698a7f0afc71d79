"""The login-storm benchmark with ~10 participants: every one must reach a working kernel.
Its timings are printed (see docs/workshops.md for recorded figures), never asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "workshop_storm.py"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_login_storm_of_ten(capsys):
    r = subprocess.run(
        [sys.executable, str(BENCH), "--users", "10", "--rate", "2", "--lean"],
        capture_output=True,
        text=True,
        timeout=1700,
        check=False,
    )
    with capsys.disabled():
        print("\n" + r.stdout[-3000:])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for run in ("platform/cold", "vanilla/cold", "platform/prewarmed", "vanilla/prewarmed"):
        assert any(line.startswith(run) and "10/10" in line for line in r.stdout.splitlines()), run
