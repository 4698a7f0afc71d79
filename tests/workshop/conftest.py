"""A local stack whose hub configuration includes the workshop wiring (``configure_workshops``).

Until the lead adds ``configure_workshops(c, cfg)`` to ``cscale_extensions.hub.configure``, the
stack is started with ``runtime.repo_root`` pointing at a directory whose
``hub_config/jupyterhub_config.py`` is the platform's plus that one call (every other file is a
link to the repository's). Afterwards the call is idempotent in effect: the hook copies once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from cscale_extensions.testing import LocalStack

REPO = Path(__file__).resolve().parents[2]

WIRED_CONFIG = """\
from cscale_extensions import settings
from cscale_extensions.hub import configure
from cscale_extensions.workshop.hub import configure_workshops

c = get_config()  # noqa: F821
cfg = settings.load_resolved()
configure(c, cfg)
configure_workshops(c, cfg)
"""

#: a small stack: what workshops need (hub, proxy, provider, spawner), not the data services
WORKSHOP_STACK = {
    "federation": {"embedded_sites": False},
    "eomqs": {"enabled": False},
    "runs": {"enabled": False},
    "dask_gateway": {"enabled": False},
    "hub": {"concurrent_spawn_limit": 3},
}


def wired_repo_root() -> Path:
    """A repo root with the workshop-wired hub config; the caller removes it."""
    root = Path(tempfile.mkdtemp(prefix="cscale-wsroot-", dir="/tmp"))
    os.chmod(root, 0o755)
    (root / "hub_config").mkdir()
    for f in (REPO / "hub_config").iterdir():
        if f.name != "jupyterhub_config.py" and f.is_file():
            (root / "hub_config" / f.name).symlink_to(f)
    (root / "hub_config" / "jupyterhub_config.py").write_text(WIRED_CONFIG)
    (root / "workflow_notebooks").symlink_to(REPO / "workflow_notebooks")
    return root


@pytest.fixture(scope="session")
def ws_stack():
    """The platform with workshop wiring, started with `cscale-hub up`; stopped at the end."""
    root = wired_repo_root()
    stack = LocalStack(config={**WORKSHOP_STACK, "runtime": {"repo_root": str(root)}})
    try:
        stack.start()
        yield stack
    finally:
        leftovers = stack.stop()
        if not os.environ.get("CSCALE_KEEP_TEST_DATA"):
            shutil.rmtree(stack.data_dir, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
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
