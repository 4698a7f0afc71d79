"""Cluster options by VO and by compute site: what a user may ask the gateway for.

Users pick worker cores and memory within the limits of their VOs (hub groups are VO names;
a member of several VOs gets the largest value of each limit) and, with the option ``site``,
the compute site of the cluster among the sites this gateway serves that are open to their
VOs (:mod:`cscale_extensions.compute`). A site may cap the limits further
(``compute.sites.<name>.limits``); a request beyond a cap, or for a site the user may not
use, is refused with a message that says what is allowed — dask-gateway shows it to the
client as the error of ``new_cluster``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dask_gateway_server.options import Float, Integer, Options, Select

from cscale_extensions import compute

LIMIT_KEYS = ("worker_cores", "worker_memory", "max_workers", "max_cores")
#: the gateway's own backend serves these kinds
OWN_KINDS = {"local": ("local", "kubernetes"), "kubernetes": ("local", "kubernetes")}


def limits_for(groups: Iterable[str], dg: dict[str, Any]) -> dict[str, float]:
    """The cluster limits for a user in ``groups``: the defaults, raised by their VOs' entries."""
    out = dict(dg["defaults"])
    for group in groups:
        for key, value in dg.get("vo_limits", {}).get(group, {}).items():
            out[key] = max(out[key], value)
    return out


def site_limits(lim: dict[str, float], site: dict[str, Any]) -> dict[str, float]:
    """``lim`` (a user's VO limits) capped by ``site``'s own limits."""
    caps = site.get("limits") or {}
    return {k: (min(v, caps[k]) if caps.get(k) is not None else v) for k, v in lim.items()}


def served_sites(cfg: dict[str, Any], backend: str) -> dict[str, dict[str, Any]]:
    """The sites this gateway runs clusters on, by name: those without a ``gateway`` of their
    own whose kind the backend serves (local processes or pods; Slurm from a local gateway)."""
    kinds = OWN_KINDS["kubernetes" if backend == "kubernetes" else "local"]
    out = {}
    for name, site in compute.sites(cfg).items():
        if site["gateway"]:
            continue
        if site["kind"] in kinds or (site["kind"] == "slurm" and backend != "kubernetes"):
            out[name] = site
    return out


class SiteSelect(Select):
    """The ``site`` option: offers the user's sites; any other value gets a clear refusal."""

    def __init__(self, field, options, default, label, refuse):
        super().__init__(field, options, default=default, label=label)
        self._refuse = refuse

    def validate(self, x):
        if isinstance(x, str) and x not in self.options:
            raise ValueError(self._refuse(x))
        return super().validate(x)


def cluster_options(dg: dict[str, Any], cfg: dict[str, Any] | None = None,
                    served: dict[str, dict[str, Any]] | None = None, site_config: bool = True):
    """A ``Backend.cluster_options`` callable: per-user options bounded by the user's VO
    limits, with ``site`` among ``served`` (sites of :func:`served_sites`) when given.
    ``site_config``: put the chosen site into the cluster's config (the backend's config
    class has a ``site`` trait)."""

    def options_for(user) -> Options:
        groups = sorted(getattr(user, "groups", ()) or ())
        lim = limits_for(groups, dg)
        defaults = dg["defaults"]
        mine = [n for n in compute.sites_for(cfg, groups) if n in served] if served else []

        def refuse(name: str) -> str:
            try:
                compute.check_site(cfg, name, groups)
            except compute.SiteRefused as exc:
                return str(exc)
            other = served_sites_url(cfg, name)
            where = f" (connect to its own gateway, {other})" if other else ""
            return (f"The compute site {name!r} is not served by this gateway{where}. "
                    f"Sites you may use here: {', '.join(mine) or 'none'}.")

        def handler(options, user=user):
            out: dict[str, Any] = {}
            caps = lim
            if served:
                name = options.site
                if name not in mine:
                    raise ValueError(refuse(name))
                site = served[name]
                caps = site_limits(lim, site)
                for key, unit, value in (("worker_cores", "", options.worker_cores),
                                         ("worker_memory", " GiB", options.worker_memory)):
                    if value > caps[key]:
                        raise ValueError(
                            f"{key} {value:g}{unit} is more than the {caps[key]:g}{unit} allowed "
                            f"to you on the site {name!r}; ask for at most {caps[key]:g}{unit}.")
                if site_config:
                    out["site"] = name
            out.update({
                "worker_cores": int(options.worker_cores),
                "worker_memory": int(options.worker_memory * 2**30),
                "cluster_max_workers": int(caps["max_workers"]),
                "cluster_max_cores": float(caps["max_cores"]),
            })
            return out

        fields = [
            Integer(
                "worker_cores",
                default=int(min(defaults["worker_cores"], lim["worker_cores"])),
                min=1,
                max=max(1, int(lim["worker_cores"])),
                label="Worker cores",
            ),
            Float(
                "worker_memory",
                default=float(min(defaults["worker_memory"], lim["worker_memory"])),
                min=0.25,
                max=float(lim["worker_memory"]),
                label="Worker memory (GiB)",
            ),
        ]
        if served:
            # the default site first (compute.sites_for); someone with no site is offered the
            # default one and refused by the handler with the reason
            offered = mine or [cfg["compute"]["default_site"]]
            fields.insert(0, SiteSelect("site", offered, default=offered[0],
                                        label="Compute site", refuse=refuse))
        return Options(*fields, handler=handler)

    return options_for


def served_sites_url(cfg: dict[str, Any], name: str) -> str:
    """The URL of the other gateway that serves site ``name`` ("" when there is none)."""
    site = compute.sites(cfg).get(name)
    return (site or {}).get("gateway") or ""
