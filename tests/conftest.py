"""Shared fixtures: one real local stack per test session (``platform``)."""

from __future__ import annotations

import os

import pytest

from cscale_extensions.testing import LocalStack

#: settings for the shared test stack: fast culling and activity reports so culling is testable
TEST_CONFIG = {
    "culler": {"timeout": 45, "every": 5, "activity_interval": 5},
    "embedded_oidc": {"access_token_ttl": 120},
    "auth": {"refresh_age": 10},
}


@pytest.fixture(scope="session")
def platform():
    """The whole platform started with `cscale-hub up` on free loopback ports, stopped at the end."""
    stack = LocalStack(config=TEST_CONFIG).start()
    try:
        yield stack
    finally:
        leftovers = stack.stop()
        if not os.environ.get("CSCALE_KEEP_TEST_DATA"):
            import shutil

            shutil.rmtree(stack.data_dir, ignore_errors=True)
        assert not leftovers, f"processes of the stack left running: {leftovers}"
