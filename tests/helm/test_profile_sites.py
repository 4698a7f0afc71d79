"""The chart's profiles name the compute sites each user may run Dask clusters and runs on.

Real parts as in test_kubespawner.py (jupyterhub's User/ORM, KubeSpawner 7); the Kubernetes
API is the unreachable stand-in of ``offline_kubeconfig``. Before, a profile's description was
its configured text only: the site names below were not in it.
"""

from __future__ import annotations

import asyncio

import pytest
from cscale_testing import kube_spawner

from .test_kubespawner import configured, production_cfg

pytestmark = pytest.mark.usefixtures("offline_kubeconfig")
HPC_VO = "vo.cscale.eu"


def _descriptions(c, groups: list[str]) -> dict[str, str]:
    async def run():
        spawner = kube_spawner(c, "dora", groups)
        try:
            return {p["slug"]: p["description"] for p in spawner.profile_list(spawner)}
        finally:
            await spawner.api.api_client.close()

    return asyncio.run(run())


def test_profile_descriptions_name_the_users_compute_sites():
    cfg = production_cfg(compute={"sites": {"hpc": {"vos": [HPC_VO]}}})
    c = configured(cfg)
    member = _descriptions(c, [HPC_VO])
    other = _descriptions(c, ["vo.eodc.eu"])
    assert member and other
    for text in member.values():
        assert "Dask and runs on: cloud (default, local), hpc (slurm)" in text, text
    for text in other.values():
        assert text.endswith("Dask and runs on: cloud (default, local)"), text
    # a configured description is kept in front of the sites
    cfg = production_cfg(compute={"sites": {"hpc": {"vos": [HPC_VO]}}})
    cfg["kubernetes"]["profiles"][0]["description"] = "Small server at CESNET"
    first = cfg["kubernetes"]["profiles"][0]["slug"]
    text = _descriptions(configured(cfg), [HPC_VO])[first]
    assert text == "Small server at CESNET · Dask and runs on: cloud (default, local), hpc (slurm)"
