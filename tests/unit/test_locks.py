"""The two locks agree: the runtime lock (every per-process extra) carries no test tooling, the
dev/CI lock is the runtime lock plus the ``test`` extra at the very same pins (so tests run what
the images run). The images' own locks: tests/helm/test_image_extras.py.

``make lock`` compiles requirements-test.lock with requirements.lock as constraints; this test
catches a hand edit, or a lock compiled the old way, that lets the two drift apart.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(\S+)")


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        m = PIN.match(line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(3)
    return out


def test_runtime_pins_are_the_same_in_the_test_lock():
    runtime = pins(REPO / "requirements.lock")
    full = pins(REPO / "requirements-test.lock")
    assert runtime, "requirements.lock holds no pins"
    differ = {n: (v, full.get(n)) for n, v in runtime.items() if full.get(n) != v}
    assert not differ, f"runtime pins missing or changed in requirements-test.lock: {differ}"


def test_test_extra_only_in_the_test_lock():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = pins(REPO / "requirements.lock")
    full = pins(REPO / "requirements-test.lock")
    # the runtime: the core and every per-process extra (`localstack` includes them all)
    runtime_deps = {_name(r) for r in project["dependencies"]} | {
        _name(r)
        for extra, reqs in project["optional-dependencies"].items()
        if extra != "test"
        for r in reqs
    }
    runtime_deps.discard(_name(project["name"]))  # the extras' references to each other
    test_only = {_name(r) for r in project["optional-dependencies"]["test"]} - runtime_deps
    assert test_only <= set(full), f"test extra not locked: {test_only - set(full)}"
    leaked = sorted(test_only & set(runtime))
    assert not leaked, f"test tooling in the runtime lock (the images): {leaked}"
    assert runtime_deps <= set(runtime), f"not locked: {runtime_deps - set(runtime)}"
