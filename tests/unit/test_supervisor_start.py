"""How the supervisor starts a stack's processes (cscale_extensions.localstack.supervisor):
processes that need nothing of each other start together, one with ``needs`` only once those
are ready, one without (the default) only after everything listed before it; after a failure
nothing more starts. Real child processes (short Python scripts), no stack.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

import pytest

from cscale_extensions.localstack.supervisor import ChildFailed, ProcessSpec, Supervisor
from cscale_extensions.processes import stack_processes

WAIT = 20  # bound on a prestart's wait for a sibling's process: generous, never reached when right


def _script(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _touch_and_wait(flag: Path) -> list[str]:
    """A child that leaves ``flag`` behind and then lives until it is stopped."""
    return _script(f"import pathlib, time; pathlib.Path({str(flag)!r}).touch(); time.sleep(120)")


def _wait_for(flag: Path, what: str):
    def prestart() -> None:
        deadline = time.monotonic() + WAIT
        while not flag.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not run while this process was starting")
            time.sleep(0.05)

    return prestart


@pytest.fixture
def sup(tmp_path):
    s = Supervisor(tmp_path / "logs", f"supervisor-test-{uuid.uuid4().hex[:8]}")
    yield s
    s.stop()
    assert stack_processes(s.stack_id) == []


def test_independent_processes_start_together(sup, tmp_path):
    """``first`` cannot get ready before ``second`` runs: started one after the other (the old
    sequential start), ``first``'s prestart would wait in vain; started together, both run."""
    flag = tmp_path / "second-ran"
    first = ProcessSpec("first", _script("import time; time.sleep(120)"), needs=(),
                        prestart=_wait_for(flag, "second"))
    second = ProcessSpec("second", _touch_and_wait(flag), needs=())
    sup.start_all([first, second])
    assert sorted(s.name for s, p in sup.children if p.poll() is None) == ["first", "second"]


def test_needs_and_the_default_order(sup, tmp_path):
    """``late`` (needs nothing named: the default) starts after both before it are ready;
    ``child`` starts only once ``parent`` is ready, although listed first."""
    seen: dict[str, list[str]] = {}

    def record(name: str):
        def prestart() -> None:
            seen[name] = sorted(s.name for s, p in sup.children if p.poll() is None)

        return prestart

    sleeper = _script("import time; time.sleep(120)")
    child = ProcessSpec("child", sleeper, needs=("parent",), prestart=record("child"))
    parent = ProcessSpec("parent", sleeper, needs=())
    late = ProcessSpec("late", sleeper, prestart=record("late"))
    sup.start_all([child, parent, late])
    assert "parent" in seen["child"]
    assert seen["late"] == ["child", "parent"]


def test_after_a_failure_nothing_more_starts_and_the_failure_is_raised(sup, tmp_path):
    broken = ProcessSpec("broken", _script("raise SystemExit(3)"), ready_port=1, needs=())
    after = ProcessSpec("after", _script("import time; time.sleep(120)"))
    with pytest.raises(ChildFailed, match="broken exited with code 3"):
        sup.start_all([broken, after])
    assert [s.name for s, _ in sup.children] == ["broken"]


def test_unknown_needs_are_refused_before_anything_starts(sup):
    spec = ProcessSpec("lonely", _script("pass"), needs=("nobody",))
    with pytest.raises(ValueError, match="lonely needs"):
        sup.start_all([spec])
    assert sup.children == []
