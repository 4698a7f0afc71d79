"""Compute sites: where a user's Dask clusters and headless runs execute, and who may use them.

The settings' ``compute.sites`` name each site, its kind (``local``: the gateway's own backend;
``slurm``: batch jobs; ``kubernetes``: the chart's pods), the VOs allowed on it and its caps.
The gateway (cluster option ``site``), the runs service and the hub (what a user is shown)
all read the sites through this module, so that "who may use which site" is decided once.
Talking to a Slurm site (commands, ``SLURM_CONF``, jobs run as the user) is in
:mod:`cscale_extensions.compute.slurm`; the embedded single-node Slurm of the local stack in
:mod:`cscale_extensions.localstack.slurm`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from typing import Any

from cscale_extensions import config as settings

KINDS = ("local", "slurm", "kubernetes")
#: environment variable of user servers: JSON list of the sites the user may use
SITES_ENV = "CSCALE_COMPUTE_SITES"
#: environment variable of user servers: the site chosen in the spawn form for their Dask
#: clusters and runs (cscale_extensions.hub.siteform; ``cscale-hub run`` without ``--site``)
DEFAULT_SITE_ENV = "CSCALE_COMPUTE_DEFAULT_SITE"


class SiteRefused(ValueError):
    """A user asked for a site that does not exist or is not open to their VOs."""


def _site_schema() -> dict[str, Any]:
    return settings.schema()["properties"]["compute"]["properties"]["sites"]["additionalProperties"]


def _fill(node: Mapping[str, Any], value: Any) -> Any:
    """``value`` with the schema defaults of ``node`` filled in where keys are missing."""
    if node.get("type") == "object" and "properties" in node:
        value = dict(value) if isinstance(value, Mapping) else {}
        for key, sub in node["properties"].items():
            if key in value:
                value[key] = _fill(sub, value[key])
            elif "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            elif sub.get("type") == "object":
                value[key] = _fill(sub, {})
        return value
    return value


def sites(cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The enabled sites by name, every key filled in (``name`` added)."""
    schema = _site_schema()
    out = {}
    for name, entry in sorted((cfg.get("compute") or {}).get("sites", {}).items()):
        site = _fill(schema, entry or {})
        if site["enabled"]:
            out[name] = {**site, "name": name}
    return out


def allowed(site: Mapping[str, Any], groups: Iterable[str]) -> bool:
    """Whether a member of ``groups`` (hub groups: VO names) may use ``site``."""
    vos = site.get("vos")
    return vos is None or bool(set(vos) & set(groups))


def sites_for(cfg: Mapping[str, Any], groups: Iterable[str]) -> list[str]:
    """Names of the sites a member of ``groups`` may use, the default site first."""
    groups = list(groups)
    names = [n for n, s in sites(cfg).items() if allowed(s, groups)]
    default = cfg["compute"]["default_site"]
    return sorted(names, key=lambda n: (n != default, n))


def default_site_for(cfg: Mapping[str, Any], groups: Iterable[str]) -> str | None:
    """The site used when a member of ``groups`` names none (None: no site is open to them)."""
    names = sites_for(cfg, groups)
    return names[0] if names else None


def check_site(cfg: Mapping[str, Any], name: str, groups: Iterable[str]) -> dict[str, Any]:
    """The site ``name`` if a member of ``groups`` may use it; else :class:`SiteRefused`
    with a message for the user (which sites exist for them, why this one is not)."""
    groups = sorted(groups)
    mine = sites_for(cfg, groups)
    offer = ", ".join(mine) if mine else "none"
    every = sites(cfg)
    if name not in every:
        raise SiteRefused(f"There is no compute site {name!r}. Sites you may use: {offer}.")
    site = every[name]
    if not allowed(site, groups):
        vos = ", ".join(site["vos"] or [])
        yours = ", ".join(groups) or "no VO"
        raise SiteRefused(
            f"The compute site {name!r} is open to members of {vos} only; you are in {yours}. "
            f"Sites you may use: {offer}."
        )
    return site


def describe(cfg: Mapping[str, Any], groups: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """What users are shown of the sites (no controller details): those a member of
    ``groups`` may use, or every enabled site (``groups`` None), the default first."""
    every = sites(cfg)
    if groups is None:
        default = cfg["compute"]["default_site"]
        names = sorted(every, key=lambda n: (n != default, n))
    else:
        default = default_site_for(cfg, groups)
        names = sites_for(cfg, groups)
    return [
        {"name": n, "kind": every[n]["kind"], "description": every[n]["description"],
         "default": n == default, "gateway": every[n]["gateway"], "vos": every[n]["vos"],
         "limits": dict(every[n]["limits"])}
        for n in names
    ]


def sites_env(cfg: Mapping[str, Any], groups: Iterable[str] | None = None) -> str:
    """The value of :data:`SITES_ENV` of user servers (see :func:`describe`)."""
    return json.dumps(describe(cfg, groups), separators=(",", ":"))
