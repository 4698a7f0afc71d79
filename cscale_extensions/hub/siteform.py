"""The spawn form of the local spawners: which compute site a server's Dask clusters and runs use.

Why. A user in VOs open to more than one compute site (``compute.sites``) chooses, when their
server starts, the site their clusters and headless runs go to when they name none, as the
profile list of a pangeo/2i2c hub does. The form lists exactly the sites the gateway and the
runs service would accept from them (:func:`cscale_extensions.compute.sites_for`, the same
rule), each with its kind, description and limits, the user's last choice (else the platform's
default for them) preselected. A user with one site (or none) gets no form: ``/hub/spawn``
starts the server at once, as before; so does a workshop participant (a member of a
``workshop.group_prefix`` group): a cohort goes straight to its lab on the default site, the
trainer's material names a site where it wants another.

The choice has its effect through the server's environment: ``DASK_GATEWAY__CLUSTER__OPTIONS__SITE``
(dask-gateway's client sends ``gateway.cluster.options`` with every ``new_cluster()`` without
options, and shows it as the default in ``cluster_options()``) and :data:`DEFAULT_SITE_ENV`
(``cscale-hub run`` without ``--site``). A spawn without a site (the REST API with no body:
workshops, prewarm, the runs service, tests) gets neither and behaves as before; JupyterHub
keeps a user's last options, so their later API starts keep their choice.

Validation is the hub's, whatever the browser sent: a name that is not a site is refused with
400, a site not open to the user's VOs with 403, each with the sites they may use, on the
form page again (or as the API's JSON message), never a 500; nothing else of the user's
options is read. The gateway and the runs service check the site again on every use.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import object_session
from tornado import web
from traitlets import Bool, Dict, Unicode, default
from traitlets.config import LoggingConfigurable

from cscale_extensions import compute
from cscale_extensions.compute import DEFAULT_SITE_ENV
from cscale_extensions.hub.usererror import user_error

#: environment of a server: the site chosen for its clusters (dask-gateway's client config)
GATEWAY_SITE_ENV = "DASK_GATEWAY__CLUSTER__OPTIONS__SITE"

_LIMITS = (
    ("worker_cores", "at most {:g} cores per worker"),
    ("worker_memory", "at most {:g} GiB per worker"),
    ("max_workers", "at most {:d} workers"),
    ("max_cores", "at most {:g} cores per cluster"),
    ("walltime", "jobs of at most {:d} min"),
)


def choices(cfg: Mapping[str, Any], groups: list[str]) -> list[dict[str, Any]]:
    """The sites a member of ``groups`` may choose (the platform's own gateway serves them),
    the default first: :func:`cscale_extensions.compute.describe` of their VOs."""
    return [s for s in compute.describe(cfg, groups) if not s.get("gateway")]


def limits_text(limits: Mapping[str, Any], kind: str = "slurm") -> str:
    """``limits`` of a site in words (the caps that are set; a walltime only where it is
    enforced: batch sites)."""
    out = []
    for key, text in _LIMITS:
        value = limits.get(key)
        if value is not None and (key != "walltime" or kind == "slurm"):
            out.append(text.format(int(value) if "{:d}" in text else float(value)))
    return ", ".join(out) or "no limits besides the platform's"


def validate(cfg: Mapping[str, Any], value: Any, groups: list[str]) -> str:
    """The site ``value`` names if a member of ``groups`` may choose it; else an HTTPError
    for the user (400: no such site, 403: not open to their VOs)."""
    mine = [s["name"] for s in choices(cfg, groups)]
    offer = ", ".join(mine) or "none"
    if not isinstance(value, str) or value not in compute.sites(cfg):
        shown = repr(value)[:60]
        raise user_error(400, f"There is no compute site {shown}. Sites you may use: {offer}.")
    try:
        compute.check_site(cfg, value, groups)
    except compute.SiteRefused as exc:
        raise user_error(403, str(exc)) from None
    if value not in mine:  # a site served by a gateway of its own: not a default here
        raise user_error(400, f"The compute site {value!r} has a gateway of its own and cannot "
                            f"be this server's default. Sites you may choose: {offer}.")
    return value


def render(sites: list[dict[str, Any]], chosen: str) -> str:
    """The form's HTML (inside JupyterHub's spawn page form): one radio button per site."""
    rows = []
    for s in sites:
        name = html.escape(s["name"])
        checked = " checked" if s["name"] == chosen else ""
        rows.append(
            f'<div class="radio cscale-site" data-site="{name}"><label>'
            f'<input type="radio" name="site" value="{name}"{checked}> '
            f"<strong>{name}</strong> <span class=\"label label-default\">"
            f"{html.escape(s['kind'])}</span> {html.escape(s.get('description') or '')}"
            f'<br><small class="text-muted">{html.escape(limits_text(s["limits"], s["kind"]))}</small>'
            "</label></div>"
        )
    return (
        '<fieldset id="cscale-site-form"><legend>Compute site</legend>'
        "<p>Where your Dask clusters (<code>Gateway().new_cluster()</code>) and headless runs "
        "(<code>cscale-hub run</code>) execute when you name no site; you can still name any "
        "of these sites each time.</p>" + "".join(rows) + "</fieldset>"
    )


def _site_form(spawner: SiteChoice) -> str:
    """``options_form`` of the spawners: the form, or '' (no form) for one site or none."""
    spawner.check_can_spawn()
    if not spawner.site_form or not spawner.compute_settings or spawner.in_workshop():
        return ""  # (no compute settings: a hub configured without our settings model)
    sites = choices(spawner.sites_cfg, spawner.vo_names())
    if len(sites) < 2:
        return ""
    names = [s["name"] for s in sites]
    last = (spawner.user_options or {}).get("site")
    return render(sites, last if last in names else names[0])


def _apply_site(spawner: SiteChoice, user_options: Mapping[str, Any]) -> None:
    """``apply_user_options`` of the spawners: the chosen site, checked again (the API, and
    a choice JupyterHub kept from an earlier start). A refused choice is also forgotten, so
    that the next start without options (the user's, or a service's) uses the default."""
    spawner.compute_site = ""
    if not isinstance(user_options, Mapping) or user_options.get("site") in (None, ""):
        return
    try:
        spawner.compute_site = validate(
            spawner.sites_cfg, user_options["site"], spawner.vo_names()
        )
    except web.HTTPError:
        spawner.forget_site_choice()
        raise


def _site_from_form(formdata: Mapping[str, list[str]], spawner: SiteChoice) -> dict[str, Any]:
    """``options_from_form`` of the spawners: ``{"site": name}``, checked (a forged value
    is refused on the form page); every other field is ignored."""
    values = formdata.get("site") or [""]
    if len(values) != 1:
        raise user_error(400, "Choose one compute site.")
    if not values[0]:
        return {}
    return {"site": validate(spawner.sites_cfg, values[0], spawner.vo_names())}


class SiteChoice(LoggingConfigurable):
    """Spawner mixin: the spawn form of compute sites and the environment of the choice."""

    compute_settings = Dict(
        config=True, help="The settings' `compute` section (default_site, sites)."
    )
    site_form = Bool(
        True, config=True,
        help="Show the compute-site form at /hub/spawn to users with more than one site.",
    )
    workshop_group_prefix = Unicode(
        "", config=True,
        help="Members of groups with this prefix (workshop cohorts) get no form ('' = none).",
    )
    compute_site = Unicode("", help="The site chosen for this start ('' = none named).")

    @default("options_form")
    def _default_options_form(self):
        return _site_form

    @default("options_from_form")
    def _default_options_from_form(self):
        return _site_from_form

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return _apply_site

    @property
    def sites_cfg(self) -> dict[str, Any]:
        """The settings as :mod:`cscale_extensions.compute` reads them (its section only)."""
        return {"compute": self.compute_settings}

    def vo_names(self) -> list[str]:
        return sorted(g.name for g in self.user.groups)

    def in_workshop(self) -> bool:
        """Whether the user belongs to a workshop cohort (those start without the form)."""
        prefix = self.workshop_group_prefix
        return bool(prefix) and any(g.startswith(prefix) for g in self.vo_names())

    def check_can_spawn(self) -> None:
        """Raise the refusal of a user who can get no server before any form is shown."""

    def forget_site_choice(self) -> None:
        """Drop ``site`` from the options JupyterHub keeps for this server's next start."""
        orm = getattr(self, "orm_spawner", None)
        kept = dict(getattr(orm, "user_options", None) or {})
        if orm is None or "site" not in kept:
            return
        kept.pop("site")
        orm.user_options = kept
        session = object_session(orm)
        if session is not None:
            session.commit()

    def site_environment(self) -> dict[str, str]:
        """The environment of the chosen site (none when no site was named)."""
        if not self.compute_site:
            return {}
        return {GATEWAY_SITE_ENV: self.compute_site, DEFAULT_SITE_ENV: self.compute_site}


def sites_sentence(cfg: Mapping[str, Any], groups: list[str]) -> str:
    """One line naming the sites a member of ``groups`` may run Dask clusters and runs on (the
    chart's profile descriptions), the default first: ``Dask and runs on: cloud (default,
    kubernetes), hpc (slurm, gateway https://…)``."""
    parts = []
    for s in compute.describe(cfg, groups):
        notes = [x for x in ("default" if s["default"] else "", s["kind"]) if x]
        if s.get("gateway"):
            notes.append(f"gateway {s['gateway']}")
        parts.append(f"{s['name']} ({', '.join(notes)})")
    return "Dask and runs on: " + (", ".join(parts) if parts else "no compute site (ask for access)")
