"""Which host (web origin) serves what: the hub, its services, each user, dask-gateway.

A browser isolates pages by origin (scheme, host, port) and sends cookies by host. When user
servers share the hub's host, a page a user serves runs its scripts as the hub for whoever
opens it (it can read the hub's XSRF token and mint API tokens with the visitor's session), and
every cookie of that host (the hub's, or an identity provider's on the same host) reaches the
user's server. With ``platform.user_subdomains`` (default on) JupyterHub's ``subdomain_host``
gives each user a host of their own, ``<user>.<hub host>``:

- the hub and the services it serves (EO-MQS, runs, …) stay on the hub's host;
- dask-gateway does not: its proxy serves each cluster's dashboard, which is content of the
  user's own scheduler process, so it gets ``dask-gateway--service.<hub host>``, a label no
  username maps to (JupyterHub's ``idna`` hook hashes every name containing ``--`` into
  ``u-…--<hash>``);
- users get JupyterHub's default ``idna`` label.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from jupyterhub.utils import subdomain_hook_idna

#: the hub service whose content is the users' own (cluster dashboards): never on the hub's host
GATEWAY_SERVICE = "dask-gateway"


class OriginConfigError(ValueError):
    """``platform.user_subdomains`` cannot be honoured with this public URL."""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def subdomain_host(cfg: dict[str, Any], public_url: str) -> str:
    """``scheme://host[:port]`` of the hub when users get hosts of their own, else ``""``."""
    if not cfg["platform"].get("user_subdomains", True):
        return ""
    parts = urlsplit(public_url)
    host = parts.hostname or ""
    if not host or _is_ip(host):
        raise OriginConfigError(
            f"platform.user_subdomains needs a host name in the public URL, not {host or public_url!r}: "
            "users are served at <user>.<host>. Set platform.public_url to a name with wildcard DNS "
            "(*.<name>), or set platform.user_subdomains: false (not recommended: a page in one "
            "user's server then runs as the hub for anyone who opens it)"
        )
    return f"{parts.scheme}://{parts.netloc}"


def subdomain_hook(name: str, domain: str, kind: str) -> str:
    """JupyterHub's ``subdomain_hook``: services on the hub's host, except dask-gateway."""
    if kind == "service" and name != GATEWAY_SERVICE:
        return domain
    return subdomain_hook_idna(name, domain, kind)


def service_origin(cfg: dict[str, Any], public_url: str, name: str) -> str:
    """``scheme://host[:port]`` that serves the hub service ``name``."""
    sub = subdomain_host(cfg, public_url)
    parts = urlsplit(public_url)
    if not sub:
        return f"{parts.scheme}://{parts.netloc}"
    host = subdomain_hook(name, parts.hostname or "", "service")
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def service_url(cfg: dict[str, Any], public_url: str, name: str) -> str:
    """The public URL of the hub service ``name`` (``…/services/<name>``, no trailing slash)."""
    path = urlsplit(public_url).path or "/"
    return service_origin(cfg, public_url, name) + path + f"services/{name}"


def configure_origins(c, cfg: dict[str, Any], public_url: str) -> None:
    """Set ``subdomain_host`` and the hook on the JupyterHub config ``c`` (any deployment)."""
    sub = subdomain_host(cfg, public_url)
    if sub:
        c.JupyterHub.subdomain_host = sub
        c.JupyterHub.subdomain_hook = subdomain_hook
        if sub.startswith("https://"):
            # "__Host-" login cookies: a user's server cannot set (toss) one for the hub's
            # host from <user>.<host> to log a visitor in as someone else; needs https
            c.JupyterHub.cookie_host_prefix_enabled = True
