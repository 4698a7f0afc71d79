"""Two releases of the chart in one cluster: no colliding cluster-scoped names, and the wiring
to the gateway follows the release-derived names (helm template with the REAL subcharts).

Before: `dask-gateway.fullnameOverride: dask-gateway` gave every release the ClusterRoles
`traefik-dask-gateway`, `api-dask-gateway`, `controller-dask-gateway`, and one traefik
label selector (`gateway.dask.org/instance=dask-gateway`) matching every release's routes.
"""

from __future__ import annotations

import yaml

from .test_real_subcharts import CHART, real_chart  # noqa: F401  (fixture)

NAMESPACED = {
    "Service", "Deployment", "ConfigMap", "Secret", "ServiceAccount", "Role", "RoleBinding",
    "NetworkPolicy", "PersistentVolumeClaim", "PodDisruptionBudget", "Pod", "Job",
    "DaemonSet", "StatefulSet", "IngressRoute", "Middleware", "IngressRouteTCP",
}  # fmt: skip


def _render(run, chart, release, namespace, *extra):
    args = ["template", release, str(chart), "-n", namespace, *extra]
    return [d for d in yaml.safe_load_all(run(*args)) if d]


def _cluster_scoped(objs):
    return {(o["kind"], o["metadata"]["name"]) for o in objs if o["kind"] not in NAMESPACED}


def test_two_releases_share_no_cluster_scoped_name(run, real_chart):  # noqa: F811
    a = _render(run, real_chart, "cscale", "cscale", "-f", str(CHART / "examples/production.yaml"))
    b = _render(
        run, real_chart, "training", "training", "-f", str(CHART / "examples/workshop.yaml")
    )
    ca, cb = _cluster_scoped(a), _cluster_scoped(b)
    assert ("ClusterRole", "traefik-cscale-dask-gateway") in ca
    assert ("ClusterRole", "traefik-training-dask-gateway") in cb
    assert not ca & cb, f"colliding cluster-scoped objects: {sorted(ca & cb)}"


def test_gateway_wiring_follows_the_release(run, real_chart):  # noqa: F811
    objs = _render(run, real_chart, "training", "training")

    def get(kind, name):
        return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)

    traefik = get("Deployment", "traefik-training-dask-gateway")
    labels = traefik["spec"]["template"]["metadata"]["labels"]
    args = traefik["spec"]["template"]["spec"]["containers"][0]["args"]
    assert (
        "--providers.kubernetescrd.labelselector=gateway.dask.org/instance=training-dask-gateway"
        in args
    )
    # the stable Service the hub and user servers use selects this release's traefik pods
    alias = get("Service", "cscale-dask-gateway")
    assert alias["spec"]["selector"].items() <= labels.items()
    assert alias["spec"]["selector"]["app.kubernetes.io/instance"] == "training"
    assert alias["spec"]["ports"] == [{"name": "web", "port": 80, "targetPort": 8000}]
    settings = yaml.safe_load(get("ConfigMap", "cscale-settings")["data"]["config.yaml"])
    env = settings["spawner"]["environment"]
    assert env["DASK_GATEWAY__ADDRESS"] == "http://cscale-dask-gateway/services/dask-gateway"
    assert env["DASK_GATEWAY__PROXY_ADDRESS"] == "gateway://cscale-dask-gateway:80"
    # Dask pods of this release (the controller labels them with its gateway instance)
    policy = get("NetworkPolicy", "cscale-dask-scheduler")
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector["gateway.dask.org/instance"] == "training-dask-gateway"
    gw_config = get("ConfigMap", "api-training-dask-gateway")["data"]["dask_gateway_config.py"]
    assert 'gateway_instance = "training-dask-gateway"' in gw_config


def test_traefik_namespace_restriction_must_name_the_release_namespace(run, real_chart, helm_error):  # noqa: F811
    arg = "dask-gateway.traefik.additionalArguments[0]=--providers.kubernetescrd.namespaces="
    _render(run, real_chart, "cscale", "cscale", "--set", arg + "cscale")
    try:
        _render(run, real_chart, "cscale", "cscale", "--set", arg + "other")
    except helm_error as exc:
        assert "must name only the release namespace" in exc.stderr
    else:
        raise AssertionError("a traefik restricted to another namespace rendered")
