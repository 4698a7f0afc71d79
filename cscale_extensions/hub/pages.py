"""The hub's own pages (sign-in, home, errors, the "join a VO" page), branded as the service.

JupyterHub renders Jinja templates from ``c.JupyterHub.template_paths`` before its own; ours in
``templates/`` *extend* the upstream ones (reachable as ``templates/<name>.html``) and fill
only their blocks, so a JupyterHub upgrade keeps its markup and scripts. What the pages say
comes from the ``hub.branding`` settings, handed to every template as ``branding``.

The home page also shows what the signed-in user has and may use: their servers (from the
hub's own objects, in the template), the federation's data sites and the compute sites open to
their VOs, and their limits (server memory and processes, Dask clusters, headless runs), all
read from the settings with the same VO rules the spawner and the gateway apply (hub groups
are VO names; a member of several VOs gets the largest value of each limit). It is handed to
the templates as ``home``, computed per request for the current user (a JupyterHub
``template_vars`` callable); nothing secret is in it (no site URLs or credentials).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cscale_extensions import compute, userlimits

log = logging.getLogger("cscale.hub")
TEMPLATES = Path(__file__).with_name("templates")
#: policy links an EGI-federated service must show on its pages
REQUIRED_LINKS = ("terms_url", "privacy_url")


def branding_vars(cfg: dict[str, Any], login_service: str) -> dict[str, Any]:
    """The ``branding`` template variable: settings, the identity provider's name, the VOs
    and where to apply to join each (for the 403 page)."""
    b = cfg["hub"]["branding"]
    a = cfg["auth"]
    vos = list(a["vos"])
    enroll = a.get("enrollment_url") or ""
    links = [(label, b[key]) for key, label in
             (("terms_url", "Terms of use"), ("privacy_url", "Privacy notice"),
              ("support_url", "Support")) if b[key]]
    return {
        "service_name": b["service_name"],
        "description": b["description"],
        "identity_provider": b["identity_provider"] or login_service,
        "links": links,
        "support_url": b["support_url"],
        "vos": vos,
        "enrollment": [(vo, enroll.format(vo=vo) if enroll else None) for vo in vos],
        "home_intro": b["home_intro"],
    }


def _gib(value: Any) -> str:
    size = userlimits.parse_bytes(value)
    return f"{size / 2**30:g} GiB" if size else "no limit"


def _seconds(value: int) -> str:
    if not value:
        return "no limit"
    hours = value / 3600
    return f"{hours:g} h" if hours >= 1 else f"{value / 60:g} min"


def user_limits(cfg: dict[str, Any], vos: Iterable[str]) -> list[dict[str, Any]]:
    """What a member of ``vos`` may use, as ``[{"title", "rows": [(label, value)]}]`` in the
    units users know; a part that is switched off is left out."""
    vos = list(vos)
    out = []
    s = cfg["spawner"]
    lim = s["limits"]
    vo_lim = lim["vo_limits"] if userlimits.enabled(lim) else {}
    rows = [("Memory", _gib(userlimits.vo_maximum(vos, vo_lim, "mem_limit", s["mem_limit"])))]
    if s["cpu_limit"]:
        rows.append(("CPU cores", f"{s['cpu_limit']:g}"))
    if userlimits.enabled(lim):
        procs = userlimits.vo_maximum(vos, vo_lim, "max_processes", lim["max_processes"])
        rows.append(("Processes and threads", str(procs or "no limit")))
    rows.append(("Named servers besides the default one",
                 str(cfg["hub"]["named_server_limit_per_user"] or "no limit")))
    out.append({"title": "Your server", "rows": rows})
    dg = cfg["dask_gateway"]
    if dg["enabled"]:
        d = {k: userlimits.vo_maximum(vos, dg["vo_limits"], k, v) for k, v in dg["defaults"].items()}
        out.append({"title": "Dask clusters", "rows": [
            ("Clusters at once", str(dg["max_clusters_per_user"])),
            ("Workers per cluster", str(d["max_workers"])),
            ("Cores per worker", f"{d['worker_cores']:g}"),
            ("Memory per worker", f"{d['worker_memory']:g} GiB"),
            ("Cores per cluster", f"{d['max_cores']:g}"),
            ("Idle clusters stop after", _seconds(dg["idle_timeout"])),
        ]})
    r = cfg["runs"]
    if r["enabled"]:
        out.append({"title": "Headless runs", "rows": [
            ("Runs executing at once", str(r["max_concurrent_per_user"])),
            ("Runs queued or executing", str(r["max_queued_per_user"])),
            ("Schedules", str(r["max_schedules_per_user"])),
            ("Longest run", _seconds(r["max_timeout"])),
            ("Submissions per minute", str(r["max_submissions_per_minute"])),
        ]})
    return out


def home_vars(cfg: dict[str, Any]) -> Callable[[Any], dict[str, Any]]:
    """The ``home`` template variable: a function of the current user (None on the sign-in
    page) giving their VOs, the data and compute sites and their limits."""
    data_sites = [{"name": site["name"], "title": site.get("title") or ""}
                  for site in cfg["federation"]["sites"]]

    def for_user(user: Any) -> dict[str, Any]:
        if user is None:
            return {}
        vos = sorted(g.name for g in user.groups)
        return {
            "vos": vos,
            "data_sites": data_sites,
            "compute_sites": compute.describe(cfg, vos),
            "limits": user_limits(cfg, vos),
        }

    return for_user


def configure_pages(c, cfg: dict[str, Any]) -> None:
    """Put our templates first and hand them the branding; call after the authenticator is set
    (the sign-in button names its ``login_service``)."""
    b = cfg["hub"]["branding"]
    auth = c.CScaleAuthenticator
    if b["identity_provider"]:
        auth.login_service = b["identity_provider"]
    login_service = auth.login_service if "login_service" in auth else "the identity provider"
    missing = [k for k in REQUIRED_LINKS if not b[k]]
    if missing:
        log.warning("hub.branding: %s not set; the hub's pages show no such link",
                    ", ".join(missing))
    hub = c.JupyterHub
    paths = list(hub.template_paths) if "template_paths" in hub else []
    hub.template_paths = [str(TEMPLATES), *[p for p in paths if p != str(TEMPLATES)]]
    extra = dict(hub.template_vars) if "template_vars" in hub else {}
    hub.template_vars = {**extra, "branding": branding_vars(cfg, login_service),
                         "home": home_vars(cfg)}
