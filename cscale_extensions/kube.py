"""Kubernetes deployment (the Helm chart): KubeSpawner and dask-gateway KubeBackend configuration.

``spawner.configure_kubespawner(c, cfg)`` and ``gateway.configure_kube_backend(c, cfg)`` are
called by the hub / gateway configuration in ``hub_config/`` when the platform runs on
Kubernetes; both read the ``kubernetes`` settings section.
"""

from __future__ import annotations

from typing import Any

from cscale_extensions.config import ConfigError


def format_literal(value: Any) -> Any:
    """``value`` escaped for KubeSpawner's ``str.format`` expansion of pod fields (it renders
    as itself); anything but a string is returned unchanged."""
    return value.replace("{", "{{").replace("}", "}}") if isinstance(value, str) else value


def check_sites(kube: dict[str, Any]) -> None:
    """Raise ConfigError when a profile or the Dask pods name a site without a node selector."""
    known = set(kube.get("node_selectors", {})) | set(kube.get("tolerations", {}))
    bad = []
    for i, prof in enumerate(kube.get("profiles", [])):
        site = prof.get("site")
        if site is not None and site not in known:
            bad.append(f"kubernetes.profiles[{i}].site: unknown site {site!r}")
    wsite = kube.get("dask", {}).get("worker_site")
    if wsite is not None and wsite not in known:
        bad.append(f"kubernetes.dask.worker_site: unknown site {wsite!r}")
    slugs = [p["slug"] for p in kube.get("profiles", [])]
    dupes = sorted({s for s in slugs if slugs.count(s) > 1})
    if dupes:
        bad.append(f"kubernetes.profiles: duplicate slug(s) {', '.join(dupes)}")
    if bad:
        hint = f"; known sites (keys of kubernetes.node_selectors): {', '.join(sorted(known)) or 'none'}"
        raise ConfigError("invalid configuration:\n" + "\n".join(f"  - {b}" for b in bad) + hint)


def site_placement(kube: dict[str, Any], site: str | None) -> dict[str, Any]:
    """nodeSelector and tolerations of a compute site (empty for ``None``)."""
    if site is None:
        return {"node_selector": {}, "tolerations": []}
    return {
        "node_selector": dict(kube.get("node_selectors", {}).get(site, {})),
        "tolerations": list(kube.get("tolerations", {}).get(site, [])),
    }


def image_ref(kube: dict[str, Any]) -> str:
    """``name:tag`` of the single-user image."""
    return f"{kube['image']['name']}:{kube['image']['tag']}"


def pod_security_context(kube: dict[str, Any]) -> dict[str, Any]:
    """Container securityContext shared by user and Dask pods: non-root, no capabilities."""
    return {
        "runAsUser": int(kube["uid"]),
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
