"""Fixtures of the compute-site tests: a whole platform whose ``hpc`` site is a real Slurm.

``hpc_stack`` is `cscale-hub up` with the embedded single-node Slurm, ``hpc`` open to
``vo.cscale.eu`` only while the hub also admits :data:`OTHER_VO` (whose members may use the
cloud site only), and a short idle timeout. ``gateway_for(user)`` is the user's
``dask_gateway.Gateway`` (their hub token, the gateway's public address and scheduler proxy),
as a notebook would have it, with their server started once as a notebook user's is (the first
start creates the home, where Slurm jobs stage; signing in alone no longer starts a server
now that it ends on the compute-site form); ``slurm`` lists the site's queue as root.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import dask_gateway
import pytest
from cscale_testing import LocalStack

from cscale_extensions.compute import sites
from cscale_extensions.compute.slurm import SlurmSite

OTHER_VO = "vo.elsewhere.example.org"
IDLE_TIMEOUT = 60


@pytest.fixture(scope="module")
def hpc_stack():
    config = {
        "auth": {"vos": ["vo.cscale.eu", OTHER_VO]},
        "compute": {"sites": {"hpc": {"vos": ["vo.cscale.eu"]}}},
        "dask_gateway": {"idle_timeout": IDLE_TIMEOUT},
        "culler": {"activity_interval": 5},
        # Dask on the sites only: no data sites, EO-MQS or runs service (none is used here)
        "federation": {"embedded_sites": False},
        "eomqs": {"enabled": False},
        "runs": {"enabled": False},
    }
    stack = LocalStack(config=config).start()
    try:
        yield stack
    finally:
        stack.finish()


@pytest.fixture(scope="module")
def slurm(hpc_stack) -> SlurmSite:
    return SlurmSite.from_settings(sites(hpc_stack.cfg)["hpc"]["slurm"])


@pytest.fixture(scope="module")
def outsider(hpc_stack) -> str:
    """A user admitted to the hub through :data:`OTHER_VO` only."""
    from cscale_extensions.localstack.oidc import accounts
    from cscale_extensions.localstack.oidc.embedded import accounts_path

    a = hpc_stack.cfg["auth"]
    name = f"elsewhere-{uuid.uuid4().hex[:6]}"
    ent = accounts.entitlement(OTHER_VO, "member", namespace=a["entitlement_namespace"],
                               authority=a["entitlement_authority"])
    password = accounts.add_account(accounts_path(hpc_stack.cfg, hpc_stack.state_dir), name,
                                    entitlements=[ent], name=name, email=f"{name}@example.org")
    hpc_stack.extra_credentials[name] = password
    return name


@pytest.fixture(scope="module")
def gateway_for(hpc_stack):
    tokens: dict[str, str] = {}
    made: list[dask_gateway.Gateway] = []

    def make(user: str) -> dask_gateway.Gateway:
        if user not in tokens:
            tokens[user] = hpc_stack.api_token(user)
            hpc_stack.start_server(tokens[user], user)
        cfg = hpc_stack.cfg
        gw = dask_gateway.Gateway(
            hpc_stack.service_url("dask-gateway"),
            proxy_address=f"gateway://127.0.0.1:{cfg['dask_gateway']['scheduler_port']}",
            auth=dask_gateway.JupyterHubAuth(api_token=tokens[user]),
        )
        made.append(gw)
        return gw

    yield make
    for gw in made:
        gw.close()


@pytest.fixture
def slurm_root():
    """A world-traversable directory for a Slurm of its own (pytest's tmp_path is 0700:
    users must reach the munge socket and slurm.conf)."""
    import shutil

    d = Path(tempfile.mkdtemp(prefix="cscale-slurm-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d / "slurm"
    shutil.rmtree(d, ignore_errors=True)
