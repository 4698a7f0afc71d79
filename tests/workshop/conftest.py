"""A small local stack for the workshop tests: hub, proxy, OIDC provider and spawner, with the
platform's own hub configuration (which wires workshops in: ``configure_workshops``)."""

from __future__ import annotations

import pytest
from cscale_testing import LocalStack

#: a small stack: what workshops need (hub, proxy, provider, spawner), not the data services
WORKSHOP_STACK = {
    "federation": {"embedded_sites": False},
    "eomqs": {"enabled": False},
    "runs": {"enabled": False},
    "dask_gateway": {"enabled": False},
    "hub": {"concurrent_spawn_limit": 3},
}


@pytest.fixture(scope="session")
def ws_stack():
    """The platform with workshop wiring, started with `cscale-hub up`; stopped at the end."""
    stack = LocalStack(config=WORKSHOP_STACK)
    try:
        stack.start()
        yield stack
    finally:
        leftovers = stack.finish()
        assert not leftovers, f"processes of the stack left running: {leftovers}"


@pytest.fixture(scope="session")
def admin_token(ws_stack):
    return ws_stack.api_token("demo-admin", note="workshop tests")


@pytest.fixture
def cli(ws_stack, admin_token, capsys):
    """Run `cscale-hub workshop …` in-process against the test stack; returns (rc, stdout, stderr)."""
    from cscale_extensions.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        extra = [] if "--token" in argv else ["--token", admin_token]
        rc = main(["workshop", *argv, "--data-dir", str(ws_stack.state_dir), *extra])
        out = capsys.readouterr()
        return rc, out.out, out.err

    return run
