"""Shared fixtures: one real local stack per test session (``platform``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from cscale_extensions.testing import LocalStack

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"

#: settings of the shared test stack. Access tokens live 60 s and the hub re-checks them every
#: 10 s, so token refresh happens during the tests; the culler is tested on a stack of its own.
TEST_CONFIG = {
    "embedded_oidc": {"access_token_ttl": 60},
    "auth": {"refresh_age": 10},
    "culler": {"activity_interval": 5},
}


@pytest.fixture(scope="session")
def notebook_source():
    """A copy of workflow_notebooks/ that tests may change (to test template updates)."""
    d = Path(tempfile.mkdtemp(prefix="cscale-nbsrc-", dir="/tmp"))
    os.chmod(d, 0o755)
    src = d / "workflow_notebooks"
    shutil.copytree(REPO / "workflow_notebooks", src)
    yield src
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def platform(notebook_source):
    """The whole platform started with `cscale-hub up` on free loopback ports, stopped at the end."""
    config = {**TEST_CONFIG, "notebooks": {"source": str(notebook_source)}}
    stack = LocalStack(config=config).start()
    try:
        yield stack
    finally:
        leftovers = stack.finish()
        assert not leftovers, f"processes of the stack left running: {leftovers}"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests keep screenshots and other artifacts (test-artifacts/, git-ignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
