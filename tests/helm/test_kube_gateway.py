"""dask-gateway's Kubernetes backend with our configuration, without a Kubernetes API server.

Real parts: ``cscale_extensions.gateway.configure`` (per-VO options and limits, shared by all
backends) and our ``configure_kube_backend``; dask-gateway-server's KubeBackend
(``process_cluster_options``, ``make_cluster_object``) and KubeController (``make_pod``, the
pods the controller creates from a DaskCluster object). Stand-in: the Kubernetes API (a recorder
of created custom objects, in the test named ``..._recording_k8s_api``). Pods are validated
with kubernetes-validate (1.31, strict).
"""

from __future__ import annotations

import asyncio

import kubernetes_validate
import pytest
import yaml
from cscale_testing.kube import (
    INSTANCE,
    PRODUCTION,
    REPO,
    cluster_object,
    gateway_config,
    make_backend,
    pods_of,
    production_cfg,
)
from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.models import Cluster, ClusterStatus, User
from traitlets.config import Config

from cscale_extensions import config as settings
from cscale_extensions.gateway.kubernetes import LimitedKubeBackend

CHART = REPO / "helm" / "cscale-hub"


def test_backend_is_kube_with_the_cluster_limit():
    c = gateway_config(production_cfg())
    cls = c.DaskGateway.backend_class
    assert issubclass(cls, LimitedKubeBackend)
    assert cls.max_clusters_per_user == 2


def test_vo_limits_shape_the_pods_of_a_large_cluster():
    c = gateway_config(production_cfg())
    obj = cluster_object(
        c, User("alice", groups=["vo.eodc.eu"]), {"worker_cores": 4, "worker_memory": 16}
    )
    assert obj["kind"] == "DaskCluster" and obj["spec"]["username"] == "alice"
    sched, worker = pods_of(c, obj)
    for pod in (sched, worker):
        kubernetes_validate.validate(pod, "1.31", strict=True)
        (box,) = pod["spec"]["containers"]
        assert box["image"] == "ghcr.io/c-scale/cscale-hub-singleuser:0.1.0"
        assert box["securityContext"]["runAsNonRoot"] is True
        assert box["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert pod["spec"]["securityContext"]["runAsUser"] == 1000
        assert pod["spec"]["nodeSelector"] == {"cscale.eu/site": "eodc"}
        assert pod["spec"]["tolerations"][0]["value"] == "eodc"
        assert pod["metadata"]["labels"]["app.kubernetes.io/part-of"] == "cscale-hub"
    w = worker["spec"]["containers"][0]
    assert w["resources"]["limits"] == {"cpu": "4.000", "memory": str(16 * 2**30)}
    assert w["args"][:2] == ["dask", "worker"]
    s = sched["spec"]["containers"][0]
    assert s["args"][:2] == ["dask", "scheduler"]
    assert s["args"][s["args"].index("--dg-idle-timeout") + 1] == "1800.0"
    # vo.eodc.eu: max_cores 64 per cluster; dask-gateway counts the scheduler's core too
    assert obj["spec"]["config"]["cluster_max_cores"] == 64
    assert obj["spec"]["config"]["cluster_max_workers"] == (64 - 1) // 4


def test_request_above_the_vo_limit_is_refused_with_a_message():
    c = gateway_config(production_cfg())
    with pytest.raises(PublicException, match="worker_cores"):
        cluster_object(c, User("bob", groups=["vo.cscale.eu"]), {"worker_cores": 4})


def test_defaults_apply_to_a_member_of_a_vo_without_limits():
    c = gateway_config(production_cfg())
    obj = cluster_object(c, User("bob", groups=["vo.cscale.eu"]), {})
    _, worker = pods_of(c, obj)
    assert worker["spec"]["containers"][0]["resources"]["limits"]["memory"] == str(4 * 2**30)
    # defaults: max_workers 8, max_cores 8 of which the scheduler takes 1
    assert obj["spec"]["config"]["cluster_max_workers"] == 7


class RecordingK8sApi:
    """Stands in for the Kubernetes API (CustomObjectsApi): records created objects."""

    def __init__(self) -> None:
        self.created: list[dict] = []

    async def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.created.append(
            {"group": group, "namespace": namespace, "plural": plural, "body": body}
        )
        return body


def _running(name: str, user: str) -> Cluster:
    return Cluster(
        name=name, username=user, token="t", options={}, config={}, status=ClusterStatus.RUNNING
    )


def test_cluster_limit_per_user_with_recording_k8s_api():
    c = gateway_config(production_cfg())
    backend = make_backend(c)
    api = RecordingK8sApi()
    backend.custom_client = api
    backend.username_to_clusters = {"alice": {"cscale.a": _running("cscale.a", "alice")}}
    user = User("alice", groups=["vo.cscale.eu"])
    name = asyncio.run(backend.start_cluster(user, {}))
    created = api.created[0]
    assert created["plural"] == "daskclusters"
    assert name == f"{created['namespace']}.{created['body']['metadata']['name']}"
    assert created["body"]["spec"]["username"] == "alice"
    backend.username_to_clusters["alice"]["cscale.b"] = _running("cscale.b", "alice")
    with pytest.raises(PublicException, match="limit per user is 2"):
        asyncio.run(backend.start_cluster(user, {}))
    assert len(api.created) == 1


def test_unknown_worker_site_is_a_configuration_error():
    with pytest.raises(
        settings.ConfigError, match="kubernetes.dask.worker_site: unknown site 'mars'"
    ):
        gateway_config(production_cfg(kubernetes={"dask": {"worker_site": "mars"}}))


def test_chart_gateway_wiring_configures_from_the_installed_package(render, obj, monkeypatch):
    """The dask-gateway chart's extraConfig snippet (values.yaml) calls the package with the
    settings YAML it gets from our ConfigMap in its environment: the Kubernetes backend from the
    rendered settings. No source code in the environment, nothing exec'ed but the snippet."""
    objs = render(PRODUCTION)
    settings_yaml = obj(objs, "ConfigMap", "cscale-settings")["data"]["config.yaml"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())["dask-gateway"]["gateway"]
    env = {e["name"]: e["valueFrom"]["configMapKeyRef"] for e in values["env"]}
    assert env == {"CSCALE_SETTINGS_YAML": {"name": "cscale-settings", "key": "config.yaml"}}
    snippet = values["extraConfig"]["zz-cscale"]
    assert snippet.split() == [
        "from", "cscale_extensions.gateway", "import", "configure_from_environment",
        "configure_from_environment(c)",
    ]
    monkeypatch.delenv(settings.CONFIG_ENV, raising=False)
    monkeypatch.setenv(settings.TEXT_ENV, settings_yaml)
    c = Config()
    # what the dask-gateway chart's generated config sets before extraConfig runs
    c.DaskGateway.backend_class = "dask_gateway_server.backends.kubernetes.KubeBackend"
    c.KubeBackend.gateway_instance = INSTANCE
    exec(snippet, {"c": c})
    assert issubclass(c.DaskGateway.backend_class, LimitedKubeBackend)
    assert c.KubeClusterConfig.image == "ghcr.io/c-scale/cscale-hub-singleuser:0.1.0"
    assert c.KubeClusterConfig.idle_timeout == 1800.0


def test_invalid_settings_in_the_environment_stop_the_gateway_naming_the_key(monkeypatch):
    monkeypatch.delenv(settings.CONFIG_ENV, raising=False)
    monkeypatch.setenv(settings.TEXT_ENV, "dask_gateway: {idle_timeout: soon}\n")
    from cscale_extensions.gateway import configure_from_environment

    with pytest.raises(settings.ConfigError, match="dask_gateway.idle_timeout"):
        configure_from_environment(Config())
    monkeypatch.setenv(settings.TEXT_ENV, "[not, a, mapping]\n")
    with pytest.raises(settings.ConfigError, match=r"\$CSCALE_SETTINGS_YAML: the top level"):
        configure_from_environment(Config())


def test_dask_pods_follow_the_compute_site_the_users_vo_may_use():
    """Before: every cluster's pods went to kubernetes.dask.worker_site, whatever the site."""
    cfg = production_cfg(
        kubernetes={"dask": {"worker_site": None}},
        compute={
            "sites": {
                "eodc": {"kind": "kubernetes", "vos": ["vo.eodc.eu"], "description": "EODC"}
            }
        },
    )
    c = gateway_config(cfg)
    eodc_member = User("alice", groups=["vo.eodc.eu"])
    sched, worker = pods_of(c, cluster_object(c, eodc_member, {"site": "eodc"}))
    for pod in (sched, worker):
        kubernetes_validate.validate(pod, "1.31", strict=True)
        assert pod["spec"]["nodeSelector"] == {"cscale.eu/site": "eodc"}
        assert pod["spec"]["tolerations"][0]["value"] == "eodc"
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # a site without a placement of its own: worker_site (here: anywhere)
    sched, worker = pods_of(c, cluster_object(c, eodc_member, {"site": "cloud"}))
    assert "nodeSelector" not in sched["spec"] and "nodeSelector" not in worker["spec"]
    # a VO not allowed on the site is refused before any pod exists
    with pytest.raises(PublicException, match="eodc"):
        cluster_object(c, User("bob", groups=["vo.cscale.eu"]), {"site": "eodc"})
