"""Shared fixtures: one real local stack per test session (``platform``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import cscale_testing as testing
import pytest
import yaml
from cscale_testing import LocalStack

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
        assert not stack.ownership_changes, f"root handed out paths: {stack.ownership_changes}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session when any LocalStack saw ``/``, ``/etc`` or the private data dirs
    change owner or mode (cscale_extensions.localstack.ownership), whichever fixture started it."""
    if testing.OWNERSHIP_CHANGES:
        print("\nownership of guarded paths changed while a stack ran:\n  "
              + "\n  ".join(testing.OWNERSHIP_CHANGES))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests keep screenshots and other artifacts (test-artifacts/, git-ignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium for the browser tests of one module (cscale_testing.browser)."""
    from cscale_testing.browser import chromium

    with chromium() as b:
        yield b


@pytest.fixture
def page(browser):
    """A fresh page (its own context: no cookies from another test) in a desktop-sized window."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture(scope="module")
def offline_kubeconfig(tmp_path_factory):
    """A kubeconfig naming a Kubernetes API server that does not exist: KubeSpawner loads one
    when it is created, and building pod manifests never contacts it (the stand-in for the one
    part that cannot run here)."""
    from kubernetes_asyncio.config import kube_config

    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "offline",
                "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:9"}}],
                "contexts": [{"name": "offline", "context": {"cluster": "offline", "user": "u"}}],
                "users": [{"name": "u", "user": {"token": "not-used"}}],
            }
        )
    )
    old = kube_config.KUBE_CONFIG_DEFAULT_LOCATION
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(path)
    # inside a pod (CI on Kubernetes) KubeSpawner would prefer the in-cluster config
    saved = {
        k: os.environ.pop(k)
        for k in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
        if k in os.environ
    }
    yield path
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = old
    os.environ.update(saved)


# --------------------------------------------------------------------------- skips in CI


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "opt_in: needs something CI never has (a real Kubernetes cluster, chart repositories); "
        "the only tests that may skip when CI=true",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """In CI (``CI=true``) a skipped test is a failure unless it is marked ``opt_in``: a skip
    there means a part of the platform (node, Chromium, PostgreSQL, the proxy, root) is
    missing, which the set-up must have installed."""
    outcome = yield
    report = outcome.get_result()
    if (
        report.skipped
        and os.environ.get("CI", "").lower() in ("1", "true", "yes")
        and item.get_closest_marker("opt_in") is None
        and not hasattr(report, "wasxfail")
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every part of the platform must be present: {reason}"
