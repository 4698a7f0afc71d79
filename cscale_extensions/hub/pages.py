"""The hub's own pages (sign-in, home, errors, the "join a VO" page), branded as the service.

JupyterHub renders Jinja templates from ``c.JupyterHub.template_paths`` before its own; ours in
``templates/`` *extend* the upstream ones (reachable as ``templates/<name>.html``) and fill
only their blocks, so a JupyterHub upgrade keeps its markup and scripts. What the pages say
comes from the ``hub.branding`` settings, handed to every template as ``branding``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

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
    }


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
    hub.template_vars = {**extra, "branding": branding_vars(cfg, login_service)}
