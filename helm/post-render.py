#!/usr/bin/env python3
"""Helm post-renderer for the cscale-hub chart: what dask-gateway's templates cannot take.

    helm install cscale helm/cscale-hub -n cscale --post-renderer helm/post-render.py

(``helm template`` / ``upgrade`` take the same flag; the python3 on PATH needs PyYAML.) It
reads the rendered manifests on stdin and writes them to stdout, changing only the
dask-gateway subchart's controller, api and traefik Deployments:

- Pod Security ``restricted``: pod ``runAsNonRoot`` + RuntimeDefault seccomp; each container
  ``allowPrivilegeEscalation: false``, all capabilities dropped, ``runAsNonRoot`` and a numeric
  ``runAsUser``/``runAsGroup`` (1000, the images' user) where none is set. The chart's
  values offer no securityContext for these three pods (dask-gateway 2026.3.0).
- traefik watches only the release's namespace (``--providers.kubernetescrd.namespaces``;
  the chart runs it cross-namespace with no namespace list). The namespace is read from the
  chart's ConfigMap ``cscale-settings`` (annotation ``cscale.eu/release-namespace``).
- the hub's and the gateway api's pod templates get the checksum of that ConfigMap's data
  (annotation ``cscale.eu/settings-checksum``): ``helm upgrade`` with changed ``cscale:``
  settings rolls them out (neither subchart takes a computed annotation from values).
- every Dask cluster's dashboard route checks the owner first: the controller's config
  (ConfigMap ``controller-…``, ``dask_gateway_config.py``; that chart offers no extra config
  for the controller) gets our Middlewares annotated ``cscale.eu/dashboard-middleware``
  (templates/dask-dashboard-auth.yaml, in the annotation's order) in front of its
  ``proxy_web_middlewares``. Without it the dashboards are closed to everyone (the schedulers'
  key check), not open.

Anything else passes through unchanged (as JSON documents: valid YAML).
"""

from __future__ import annotations

import hashlib
import json
import sys

try:
    import yaml
except ImportError:  # pragma: no cover - the operator's python
    sys.exit("helm/post-render.py needs PyYAML in the python3 on PATH (pip install pyyaml)")

COMPONENTS = {"controller", "gateway", "traefik"}
SETTINGS = "cscale-settings"
CHECKSUM_ANNOTATION = "cscale.eu/settings-checksum"
NAMESPACE_ANNOTATION = "cscale.eu/release-namespace"
NAMESPACE_FLAG = "--providers.kubernetescrd.namespaces="
DASHBOARD_ANNOTATION = "cscale.eu/dashboard-middleware"
CONTROLLER_CONFIG = "dask_gateway_config.py"
DASHBOARD_MARK = "# cscale-hub (helm/post-render.py): dashboards' owner check first"
USER = 1000


def is_gateway_deployment(obj: dict) -> bool:
    labels = (((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
        "labels"
    ) or {}
    return (
        obj.get("kind") == "Deployment"
        and labels.get("app.kubernetes.io/name") == "dask-gateway"
        and labels.get("app.kubernetes.io/component") in COMPONENTS
    )


def restrict(pod: dict) -> None:
    """Make a pod spec meet Pod Security ``restricted`` (keeping what it sets already)."""
    psc = pod.setdefault("securityContext", {})
    psc["runAsNonRoot"] = True
    psc.setdefault("seccompProfile", {"type": "RuntimeDefault"})
    for c in pod.get("initContainers", []) + pod.get("containers", []):
        sc = c.setdefault("securityContext", {})
        sc["allowPrivilegeEscalation"] = False
        sc["runAsNonRoot"] = True
        sc.setdefault("runAsUser", USER)
        sc.setdefault("runAsGroup", USER)
        caps = sc.setdefault("capabilities", {})
        caps["drop"] = ["ALL"]
        caps.pop("add", None)


def watch_only(pod: dict, namespace: str) -> None:
    """traefik's CRD provider limited to ``namespace``."""
    for c in pod.get("containers", []):
        if c.get("name") == "traefik":
            args = [a for a in c.get("args", []) if not a.startswith(NAMESPACE_FLAG)]
            c["args"] = [*args, NAMESPACE_FLAG + namespace]


def release_namespace(objs: list[dict]) -> str:
    for o in objs:
        ns = ((o.get("metadata") or {}).get("annotations") or {}).get(NAMESPACE_ANNOTATION)
        if o.get("kind") == "ConfigMap" and ns:
            return ns
    sys.exit(
        f"helm/post-render.py: no ConfigMap annotated {NAMESPACE_ANNOTATION} (not cscale-hub?)"
    )


def settings_checksum(objs: list[dict]) -> str | None:
    for o in objs:
        if o.get("kind") == "ConfigMap" and o["metadata"]["name"] == SETTINGS:
            data = json.dumps(o.get("data") or {}, sort_keys=True)
            return hashlib.sha256(data.encode()).hexdigest()
    return None


def reads_settings(obj: dict) -> bool:
    """The hub (z2jh) and the gateway api: they read the settings only at start."""
    if obj.get("kind") != "Deployment":
        return False
    labels = obj["spec"]["template"].get("metadata", {}).get("labels") or {}
    hub = labels.get("component") == "hub" and labels.get("app") == "jupyterhub"
    api = (
        labels.get("app.kubernetes.io/name") == "dask-gateway"
        and labels.get("app.kubernetes.io/component") == "gateway"
    )
    return hub or api


def dashboard_middlewares(objs: list[dict], namespace: str) -> list[dict[str, str]]:
    """Our dashboard Middlewares (name, namespace), in their annotation's order."""
    found = []
    for o in objs:
        order = ((o.get("metadata") or {}).get("annotations") or {}).get(DASHBOARD_ANNOTATION)
        if o.get("kind") == "Middleware" and order:
            found.append((int(order), o["metadata"]["name"]))
    return [{"name": n, "namespace": namespace} for _, n in sorted(found)]


def is_controller_config(obj: dict) -> bool:
    data = obj.get("data") or {}
    return obj.get("kind") == "ConfigMap" and "c.KubeController." in data.get(
        CONTROLLER_CONFIG, ""
    )


def check_dashboards_first(config: str, middlewares: list[dict[str, str]]) -> str:
    """The controller's config with ``middlewares`` in front of its web routes' own."""
    if DASHBOARD_MARK in config:
        return config
    theirs = ("(list(c.KubeController.proxy_web_middlewares) if 'proxy_web_middlewares' in "
              "c.KubeController else [])")
    return (f"{config.rstrip()}\n{DASHBOARD_MARK}\n"
            f"c.KubeController.proxy_web_middlewares = {json.dumps(middlewares)} + {theirs}\n")


def post_render(text: str) -> str:
    objs = [o for o in yaml.safe_load_all(text) if o]
    checksum = settings_checksum(objs)
    for o in objs:
        if checksum and reads_settings(o):
            meta = o["spec"]["template"].setdefault("metadata", {})
            meta.setdefault("annotations", {})[CHECKSUM_ANNOTATION] = checksum
    namespace = None
    for o in objs:
        if not is_gateway_deployment(o):
            continue
        pod = o["spec"]["template"]["spec"]
        restrict(pod)
        if o["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "traefik":
            namespace = namespace or release_namespace(objs)
            watch_only(pod, namespace)
    for o in objs:
        if is_controller_config(o):
            namespace = namespace or release_namespace(objs)
            mws = dashboard_middlewares(objs, namespace)
            if mws:
                o["data"][CONTROLLER_CONFIG] = check_dashboards_first(
                    o["data"][CONTROLLER_CONFIG], mws
                )
    return "".join(f"---\n{json.dumps(o, indent=1)}\n" for o in objs)


if __name__ == "__main__":
    sys.stdout.write(post_render(sys.stdin.read()))
