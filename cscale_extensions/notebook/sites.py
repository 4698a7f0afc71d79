"""The compute sites a notebook's user may run Dask clusters on (``new_cluster(site=...)``).

The gateway decides who may use which site (its cluster option ``site`` offers exactly the
user's sites); the platform describes every site in ``$CSCALE_COMPUTE_SITES`` of the user's
server (kind, one line, limits). :func:`compute_sites` joins the two::

    from cscale_extensions.notebook.sites import compute_sites
    for s in compute_sites():
        print(s["name"], s["kind"], s["description"])
"""

from __future__ import annotations

import json
import os
from typing import Any

SITES_ENV = "CSCALE_COMPUTE_SITES"


def described_sites() -> list[dict[str, Any]]:
    """Every site as the platform describes it to user servers ([] when it says nothing)."""
    try:
        sites = json.loads(os.environ.get(SITES_ENV) or "[]")
    except ValueError:
        return []
    return [s for s in sites if isinstance(s, dict) and "name" in s]


def compute_sites(gateway: Any = None) -> list[dict[str, Any]]:
    """The sites this user may start a cluster on, the default first, each with ``name``,
    ``kind``, ``description``, ``default``, ``limits`` and ``gateway`` (None: this platform's
    gateway, ``new_cluster(site=name)``; else the URL of the site's own gateway, which
    decides who may use it). ``gateway``: a ``dask_gateway.Gateway`` (by default one is
    made from the server's environment)."""
    own = gateway is None
    if own:
        from dask_gateway import Gateway

        gateway = Gateway()
    try:
        options = gateway.cluster_options()
    finally:
        if own:
            gateway.close()
    field = getattr(options, "_fields", {}).get("site")
    described = {s["name"]: s for s in described_sites()}
    if field is None:  # a gateway without sites: its one backend
        return [{"name": "", "kind": "", "description": "the gateway's only site",
                 "default": True, "limits": {}}]
    out = []
    for name in field.options:
        info = described.get(name, {})
        out.append({"name": name, "kind": info.get("kind", ""),
                    "description": info.get("description", ""), "default": name == field.value,
                    "limits": info.get("limits", {}), "gateway": None})
    # sites served by a gateway of their own (e.g. on an HPC login node): that gateway decides
    for name, info in described.items():
        if info.get("gateway") and name not in field.options:
            out.append({"name": name, "kind": info.get("kind", ""),
                        "description": info.get("description", ""), "default": False,
                        "limits": info.get("limits", {}), "gateway": info["gateway"]})
    return sorted(out, key=lambda s: not s["default"])
