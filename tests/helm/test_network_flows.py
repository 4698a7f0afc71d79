"""NetworkPolicy flow table of the rendered chart (real subcharts), Dask pods included.

No cluster enforces policies here, so the rendered NetworkPolicies are evaluated by the
Kubernetes rules (a pod selected by a policy of a direction allows only what some rule of such a
policy allows; a rule with no peers/ports matches all; peers by podSelector within the namespace
or by ipBlock for addresses outside the cluster; ports by number or by the destination's
container port name). Pods are the rendered workloads with their labels, plus user servers and
Dask schedulers/workers with the labels z2jh's KubeSpawner and dask-gateway's controller give
them (the Dask part-of label is ours, from gateway/kubernetes.py). The old chart fails the Dask
rows: no policy selected Dask pods, so workers reached the metadata server and the API server.
"""

from __future__ import annotations

import ipaddress
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "cscale-hub"

DASK = {
    "app.kubernetes.io/part-of": "cscale-hub",
    "gateway.dask.org/instance": "cscale-dask-gateway",
}
EXTRA_PODS = {
    "user": {"component": "singleuser-server", "app": "jupyterhub", "release": "cscale",
             "hub.jupyter.org/network-access-hub": "true"},
    "scheduler": {**DASK, "app.kubernetes.io/component": "dask-scheduler"},
    "worker": {**DASK, "app.kubernetes.io/component": "dask-worker"},
}  # fmt: skip
EXTERNAL = {"metadata": "169.254.169.254", "apiserver": "10.96.0.1", "public": "192.0.2.10"}
WORKLOADS = {
    "traefik": "traefik-cscale-dask-gateway",
    "gateway": "api-cscale-dask-gateway",
    "controller": "controller-cscale-dask-gateway",
    "hub": "hub",
    "proxy": "proxy",
    "eomqs": "cscale-eo-mqs",
    "runs": "cscale-runs",
}

# (source, destination, port, allowed)
FLOWS = [
    ("traefik", "scheduler", 8786, True),
    ("traefik", "scheduler", 8787, True),
    ("traefik", "gateway", 8000, True),  # the API route, and the dashboards' forward auth
    ("gateway", "scheduler", 8788, True),
    ("worker", "scheduler", 8786, True),
    ("scheduler", "gateway", 8000, True),
    ("scheduler", "worker", 40123, True),
    ("worker", "worker", 40123, True),
    ("worker", "public", 443, True),
    # nothing else open for Dask pods
    ("worker", "metadata", 80, False),
    ("worker", "apiserver", 443, False),
    ("scheduler", "apiserver", 443, False),
    ("scheduler", "metadata", 80, False),
    ("scheduler", "public", 443, False),
    ("worker", "hub", 8081, False),
    ("worker", "eomqs", 8080, False),
    ("worker", "gateway", 8000, False),
    # user servers reach EO-MQS and runs at their Services (CSCALE_STAC_URL, CSCALE_RUNS_URL)
    ("user", "eomqs", 8080, True),
    ("user", "runs", 8080, True),
    ("user", "scheduler", 8786, False),  # clients go through traefik
    ("user", "worker", 40123, False),
    ("hub", "worker", 40123, False),
    ("worker", "scheduler", 8788, False),
    ("proxy", "scheduler", 8787, False),
]


@pytest.fixture(scope="module")
def rendered(run, tmp_path_factory) -> list[dict[str, Any]]:
    root = tmp_path_factory.mktemp("flows")
    dest = root / "helm" / "cscale-hub"
    shutil.copytree(CHART, dest, symlinks=True)
    out = run("template", "cscale", str(dest), "-n", "cscale")
    return [d for d in yaml.safe_load_all(out) if d]


def _pods(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    by_name = {o["metadata"]["name"]: o for o in objs if o["kind"] in ("Deployment", "StatefulSet")}
    pods = {}
    for key, name in WORKLOADS.items():
        tpl = by_name[name]["spec"]["template"]
        ports = {
            p["name"]: p["containerPort"]
            for c in tpl["spec"]["containers"]
            for p in c.get("ports") or []
            if "name" in p
        }
        pods[key] = {"labels": tpl["metadata"]["labels"], "ports": ports}
    for key, labels in EXTRA_PODS.items():
        pods[key] = {"labels": labels, "ports": {}}
    return pods


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        value = labels.get(e["key"])
        op = e["operator"]
        if op == "In" and value not in e["values"]:
            return False
        if op == "NotIn" and value in e["values"]:
            return False
        if op == "Exists" and e["key"] not in labels:
            return False
        if op == "DoesNotExist" and e["key"] in labels:
            return False
    return True


def _peer_matches(peer: dict[str, Any], dest: dict[str, Any] | str) -> bool:
    if isinstance(dest, str):  # an address outside the cluster
        block = peer.get("ipBlock")
        if not block:
            return False
        ip = ipaddress.ip_address(dest)
        if ip not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(ip in ipaddress.ip_network(x) for x in block.get("except") or [])
    if "namespaceSelector" in peer or "ipBlock" in peer:
        return False  # other namespaces / addresses: not pods of this namespace
    return _selects(peer.get("podSelector") or {}, dest["labels"])


def _port_matches(ports: list[dict[str, Any]] | None, port: int, named: dict[str, int]) -> bool:
    if not ports:
        return True
    for p in ports:
        want = p.get("port")
        if p.get("protocol", "TCP") != "TCP":
            continue
        if want is None or want == port or (isinstance(want, str) and named.get(want) == port):
            return True
    return False


def _allowed(policies, pod, peer, port, direction, named) -> bool:
    field, peers = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    selecting = [
        p
        for p in policies
        if direction in p["spec"].get("policyTypes", ["Ingress"])
        and _selects(p["spec"]["podSelector"], pod["labels"])
    ]
    if not selecting:
        return True
    for p in selecting:
        for rule in p["spec"].get(field) or []:
            if rule.get(peers) and not any(_peer_matches(x, peer) for x in rule[peers]):
                continue
            if _port_matches(rule.get("ports"), port, named):
                return True
    return False


def flow_allowed(policies, pods, src: str, dst: str, port: int) -> bool:
    source = pods[src]
    if dst in EXTERNAL:
        return _allowed(policies, source, EXTERNAL[dst], port, "Egress", {})
    dest = pods[dst]
    return _allowed(policies, source, dest, port, "Egress", dest["ports"]) and _allowed(
        policies, dest, source, port, "Ingress", dest["ports"]
    )


def test_dask_pods_are_under_policies(rendered):
    policies = [o for o in rendered if o["kind"] == "NetworkPolicy"]
    for key in ("scheduler", "worker"):
        labels = EXTRA_PODS[key]
        for direction in ("Ingress", "Egress"):
            assert any(
                direction in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], labels)
                for p in policies
            ), f"no {direction} policy selects Dask {key} pods"


@pytest.mark.parametrize(("src", "dst", "port", "expected"), FLOWS)
def test_flow_table(rendered, src, dst, port, expected):
    policies = [o for o in rendered if o["kind"] == "NetworkPolicy"]
    pods = _pods(rendered)
    assert flow_allowed(policies, pods, src, dst, port) is expected
