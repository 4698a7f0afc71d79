"""Fixtures: a real JupyterHub with the runs service (see cscale_testing.testhub).

The runs service is an external service there, so tests can kill and restart it.
"""

from __future__ import annotations

import pytest
from cscale_testing.testhub import CHP, MiniHub, Runs, notebook


@pytest.fixture(scope="session")
def minihub(tmp_path_factory):
    if not CHP.exists():
        pytest.skip("configurable-http-proxy is not installed (npm install)")
    hub = MiniHub(tmp_path_factory.mktemp("runs-hub"))
    try:
        hub.start()
        yield hub
    finally:
        hub.stop()


@pytest.fixture(scope="session")
def alice(minihub) -> Runs:
    return Runs(minihub.runs_url, minihub.token("alice"))


@pytest.fixture(scope="session")
def bob(minihub) -> Runs:
    return Runs(minihub.runs_url, minihub.token("bob"))


@pytest.fixture(scope="session")
def make_nb():
    return notebook


@pytest.fixture(scope="session")
def runs_for(minihub):
    """Runs API of a user with a token of the given scopes (None: the user's full rights)."""

    def make(user: str, scopes: list[str] | None = None) -> Runs:
        return Runs(minihub.runs_url, minihub.token(user, scopes))

    return make


@pytest.fixture(scope="session")
def carol(minihub) -> Runs:
    return Runs(minihub.runs_url, minihub.token("carol"))


@pytest.fixture(scope="session")
def dave(minihub) -> Runs:
    return Runs(minihub.runs_url, minihub.token("dave"))


@pytest.fixture(scope="session")
def erin(minihub) -> Runs:
    return Runs(minihub.runs_url, minihub.token("erin"))
