"""Our Kubernetes configuration driven without a cluster: settings, gateway backend, Dask pods.

Shared by the chart's tests (tests/helm/test_kubespawner.py, test_kube_gateway.py: the per-VO
limits and placement; test_kube_dashboards.py: the dashboards' owner check): the production
example's settings, our gateway configuration (``cscale_extensions.gateway.configure``), our
backend class as the gateway instantiates it, and the pods dask-gateway's real KubeController
makes of a DaskCluster object.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml
from dask_gateway_server.backends.kubernetes.controller import KubeController
from dask_gateway_server.models import User
from dask_gateway_server.utils import FrozenAttrDict
from traitlets.config import Config

from cscale_extensions import config as settings
from cscale_extensions.gateway import configure

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = REPO / "helm" / "cscale-hub" / "examples" / "production.yaml"
#: the gateway instance name the chart gives dask-gateway (Service ``cscale-dask-gateway``)
INSTANCE = "cscale-dask-gateway"


def production_cfg(**overrides) -> dict:
    """The settings of the chart's production example on Kubernetes, with ``overrides``."""
    values = yaml.safe_load(PRODUCTION.read_text())["cscale"]
    base = {
        "platform": {"deployment": "kubernetes"},
        "spawner": {"backend": "kubernetes"},
        "dask_gateway": {"backend": "kubernetes"},
        "federation": {"embedded_sites": False},
    }
    return settings.load(None, settings.deep_merge(settings.deep_merge(base, values), overrides))


def gateway_config(cfg: dict) -> Config:
    """The gateway's traitlets config from the settings (what the gateway pod loads)."""
    c = Config()
    configure(c, cfg)
    return c


def make_backend(c: Config):
    """Our backend class of ``c``, as dask-gateway-server instantiates it."""
    return c.DaskGateway.backend_class(config=c, gateway_instance=INSTANCE)


def cluster_object(c: Config, user: User, request: dict) -> dict:
    """The DaskCluster object the backend creates for ``user``'s cluster ``request``."""
    backend = make_backend(c)
    options, config = asyncio.run(backend.process_cluster_options(user, request))
    return backend.make_cluster_object(user.name, options, config)


def pods_of(c: Config, obj: dict) -> tuple[dict, dict]:
    """The scheduler and worker pods dask-gateway's controller makes of a DaskCluster."""
    controller = KubeController(
        config=c, gateway_instance=INSTANCE, api_url=f"http://api-{INSTANCE}.cscale:8000/api"
    )
    config = FrozenAttrDict(obj["spec"]["config"])
    name = obj["metadata"]["name"]
    return (
        controller.make_pod("cscale", name, config, is_worker=False),
        controller.make_pod("cscale", name, config, is_worker=True),
    )
