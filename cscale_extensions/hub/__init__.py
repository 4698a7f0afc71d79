"""JupyterHub configuration of C-SCALE Hub, for the local stack and the Helm chart alike.

:func:`configure_from_environment` is the one entry point: the local stack's
``hub_config/jupyterhub_config.py`` calls it, and so does the chart's ``hub.extraConfig``
(after z2jh's own configuration, from the installed package: no mounted copy, no ``runpy``).
It loads the settings handed to the process and applies :func:`configure`:

1. authentication (OIDC discovery, VO gating, admin roles, token refresh),
2. the hub itself (local deployment only: ports, proxy, database; z2jh does this on Kubernetes),
3. the spawner (system users, same user, or KubeSpawner) and the user servers' environment,
4. the hub services (dask-gateway, idle culler, EO-MQS, runs) and their roles, appended to
   what an earlier configuration (z2jh) registered by :func:`register` (the one merge).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import jupyterhub.objects

from cscale_extensions import config as settings
from cscale_extensions import tlscache
from cscale_extensions.compute import sitegroups
from cscale_extensions.hub import servertls, startqueue
from cscale_extensions.hub.auth import CScaleAuthenticator
from cscale_extensions.hub.environment import public_url, user_environment
from cscale_extensions.hub.origins import configure_origins
from cscale_extensions.hub.pages import configure_pages
from cscale_extensions.processes import stack_processes, stop_processes
from cscale_extensions.services import runs
from cscale_extensions.services.eomqs.registration import service_spec as eomqs_service_spec

log = logging.getLogger("cscale.hub")
SECRET_ENV = "CSCALE_OIDC_CLIENT_SECRET"
#: set in the environment of every hub-managed service (its name)
SERVICE_ENV = "CSCALE_MANAGED_SERVICE"
#: the API token of the operator's tooling (kept in <data_dir>/secrets/admin_api_token)
ADMIN_TOKEN_ENV = "CSCALE_ADMIN_API_TOKEN"


def repo_root(cfg: dict[str, Any]) -> Path:
    root = cfg["runtime"]["repo_root"]
    return Path(root) if root else Path(__file__).resolve().parents[2]


def configure_from_environment(c) -> None:
    """Configure ``c`` from the settings this process was handed (``config.load_resolved``:
    ``$CSCALE_HUB_CONFIG``, a file the launcher writes or the chart mounts from the ConfigMap
    cscale-settings). The entry point of ``hub_config/jupyterhub_config.py`` and the chart."""
    configure(c, settings.load_resolved())


def configure(c, cfg: dict[str, Any]) -> None:
    """Apply the platform configuration ``cfg`` to the JupyterHub config object ``c``."""
    from cscale_extensions.hub.dbdown import install as database_outage_is_503

    database_outage_is_503()
    configure_origins(c, cfg, public_url(cfg))
    configure_auth(c, cfg)
    configure_pages(c, cfg)
    configure_hub_limits(c, cfg)
    if cfg["platform"]["deployment"] == "local":
        configure_local_hub(c, cfg)
    configure_spawner(c, cfg)
    configure_services(c, cfg)
    if "workshop" in cfg:
        from cscale_extensions.workshop.hub import configure_workshops

        configure_workshops(c, cfg)


def configure_auth(c, cfg: dict[str, Any]) -> None:
    a = cfg["auth"]
    if not a["issuer"]:
        raise ValueError("auth.issuer is not set (the launcher sets it for the embedded provider)")
    c.JupyterHub.authenticator_class = CScaleAuthenticator
    auth = c.CScaleAuthenticator
    auth.oidc_issuer = a["issuer"]
    auth.client_id = a["client_id"]
    auth.client_secret = a["client_secret"] or os.environ.get(SECRET_ENV, "")
    auth.oauth_callback_url = public_url(cfg) + "hub/oauth_callback"
    auth.scope = list(a["scopes"])
    auth.username_claim = a["username_claim"]
    auth.vos = list(a["vos"])
    auth.allowed_groups = set(a["vos"])
    auth.admin_roles = list(a["admin_roles"])
    auth.admin_entitlements = list(a["admin_entitlements"])
    auth.entitlements_claim = a["entitlements_claim"]
    auth.entitlement_namespace = a["entitlement_namespace"]
    auth.entitlement_authority = a["entitlement_authority"]
    auth.enrollment_url = a["enrollment_url"] or ""
    auth.admin_users = set(cfg["hub"]["admin_users"])
    auth.discovery_timeout = int(a["http_timeout"])
    auth.http_request_kwargs = {"request_timeout": float(a["http_timeout"])}
    auth.http_max_connections = int(a["http_max_connections"])
    auth.login_service = "EGI Check-in" if "aai.egi.eu" in a["issuer"] else "C-SCALE identity provider"
    auth.enable_auth_state = True
    auth.auth_refresh_age = int(a["refresh_age"])
    auth.refresh_margin = max(60, 2 * int(a["refresh_age"]))
    auth.refresh_pre_spawn = bool(a["refresh_pre_spawn"])
    if cfg.get("workshop", {}).get("group_prefix"):
        auth.subgroup_prefixes = [cfg["workshop"]["group_prefix"]]


def configure_local_hub(c, cfg: dict[str, Any]) -> None:
    h = cfg["hub"]
    data = Path(cfg["platform"]["data_dir"])
    c.JupyterHub.bind_url = f"http://{h['ip']}:{h['port']}{h['base_url']}"
    c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{h['hub_port']}"
    c.JupyterHub.proxy_class = "configurable-http-proxy"
    c.ConfigurableHTTPProxy.should_start = False  # the launcher runs it, so it survives hub restarts
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{h['proxy_api_port']}"
    c.JupyterHub.db_url = h["db_url"] or f"sqlite:///{data / 'hub' / 'jupyterhub.sqlite'}"
    # an existing data dir survives a JupyterHub upgrade: on start JupyterHub copies the sqlite
    # file to jupyterhub.sqlite.<timestamp>, then migrates the schema (z2jh does so for its
    # sqlite-pvc, TLJH always). A database of the operator's own (hub.db_url) is not migrated
    # unasked: the hub stops naming `jupyterhub upgrade-db`, to run after a backup.
    c.JupyterHub.upgrade_db = c.JupyterHub.db_url.startswith("sqlite:///")
    c.JupyterHub.cookie_secret_file = str(data / "secrets" / "cookie_secret")
    c.JupyterHub.pid_file = str(data / "hub" / "jupyterhub.pid")
    c.JupyterHub.cleanup_servers = h["cleanup_servers"]
    # the local servers have certificates (hub/servertls.py): the hub's checks that one is up
    # make one TLS context per certificate, not one per check
    tlscache.install(jupyterhub.objects)


def configure_hub_limits(c, cfg: dict[str, Any]) -> None:
    """Hub settings that apply in every deployment (z2jh leaves them to us)."""
    h = cfg["hub"]
    c.JupyterHub.log_level = h["log_level"]
    c.JupyterHub.concurrent_spawn_limit = h["concurrent_spawn_limit"]
    c.JupyterHub.active_server_limit = h["active_server_limit"]
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.named_server_limit_per_user = h["named_server_limit_per_user"]
    c.JupyterHub.cookie_max_age_days = h["cookie_max_age_days"]
    c.JupyterHub.last_activity_interval = min(300, cfg["culler"]["activity_interval"])


def _auth_state_hook(spawner, auth_state) -> None:
    """Hand the user's current access token to their server (a snapshot; see cscale_extensions.singleuser.token)."""
    token = (auth_state or {}).get("access_token")
    spawner.oidc_access_token = token or ""


def configure_spawner(c, cfg: dict[str, Any]) -> None:
    s = cfg["spawner"]
    backend = s["backend"]
    if backend == "auto":
        backend = "system-users" if os.getuid() == 0 else "same-user"
    c.Spawner.default_url = s["default_url"]
    c.Spawner.start_timeout = s["start_timeout"]
    c.Spawner.http_timeout = s["http_timeout"]
    c.Spawner.auth_state_hook = _auth_state_hook
    if s["mem_limit"]:
        c.Spawner.mem_limit = s["mem_limit"]
    if s["cpu_limit"]:
        c.Spawner.cpu_limit = s["cpu_limit"]
    if backend == "kubernetes":
        from cscale_extensions.hub.kubespawner import configure_kubespawner

        configure_kubespawner(c, cfg)
        return

    from cscale_extensions.hub.spawner import ACCOUNT_MARKER, SameUserSpawner, SystemUserSpawner

    data = Path(cfg["platform"]["data_dir"])
    python = Path(s["python"] or sys.executable)
    env = user_environment(cfg)
    env["PATH"] = f"{python.parent}:/usr/local/bin:/usr/bin:/bin"
    if cfg["platform"]["stack_id"]:
        env["CSCALE_STACK_ID"] = cfg["platform"]["stack_id"]
    n = cfg["notebooks"]
    source = n["source"] or str(repo_root(cfg) / "workflow_notebooks")
    if backend == "system-users":
        if os.getuid() != 0:
            raise ValueError("spawner.backend system-users needs the platform to run as root")
        c.JupyterHub.spawner_class = SystemUserSpawner
        c.SystemUserSpawner.homes_dir = str(data / "homes")
        # Slurm itself enforces the sites' VOs through POSIX groups the hub keeps (compute/sitegroups)
        groups = [g.to_dict() for g in sitegroups.from_settings(cfg)]
        c.SystemUserSpawner.site_groups = groups
        c.CScaleAuthenticator.site_groups = groups
        c.CScaleAuthenticator.account_marker = ACCOUNT_MARKER
        if cfg["platform"]["deployment"] == "local":  # the launcher's proxy trusts this CA
            c.SystemUserSpawner.server_tls_dir = str(data / servertls.DATA_SUBDIR)
    else:
        log.warning(
            "spawner.backend same-user: every user server runs as %s; users are NOT isolated "
            "from each other. Run the platform as root for one account per user.",
            os.environ.get("USER", os.getuid()),
        )
        c.JupyterHub.spawner_class = SameUserSpawner
        c.SameUserSpawner.home_dir_template = str(data / "homes" / "{username}")
    # with the hub's own Python, servers start without the costs singleuser.launch takes off
    # (jsonschema's IRI checker at first use, ~2 s of CPU; no node process, ~0.7 s)
    c.Spawner.cmd = (
        [str(python), "-P", "-m", "cscale_extensions.singleuser.launch", "jupyterhub-singleuser"]
        if not s["python"]
        else [str(python.parent / "jupyterhub-singleuser")]
    )
    # the spawn form of compute sites (cscale_extensions.hub.siteform): only where something
    # uses a site (the gateway's clusters, the runs service's runs)
    c.Spawner.compute_settings = cfg["compute"]
    c.Spawner.site_form = s["site_form"] and (
        cfg["dask_gateway"]["enabled"] or cfg["runs"]["enabled"]
    )
    c.Spawner.workshop_group_prefix = cfg["workshop"]["group_prefix"]
    c.Spawner.notebooks_source = source if n["enabled"] else ""
    c.Spawner.notebooks_target = n["target"]
    c.Spawner.platform_env = env
    c.Spawner.process_limits = dict(s["limits"])  # cscale_extensions.userlimits
    # starts in arrival order, a few at a time (cscale_extensions.hub.startqueue)
    concurrency = s["start_concurrency"]
    c.Spawner.start_concurrency = (
        startqueue.default_concurrency() if concurrency is None else concurrency
    )


def _service_ports(cfg: dict[str, Any]) -> dict[str, int]:
    return cfg["runtime"]["service_ports"]


def configure_services(c, cfg: dict[str, Any]) -> None:
    """Hub services and the roles that let users and their servers reach them."""
    services: list[dict[str, Any]] = []
    roles: list[dict[str, Any]] = []
    user_services = []
    local = cfg["platform"]["deployment"] == "local"
    passthrough = {k: os.environ[k] for k in ("CSCALE_HUB_CONFIG", "CSCALE_STACK_ID") if k in os.environ}
    if local and cfg["platform"]["stack_id"]:
        # services of a previous hub of this stack that was killed still hold their ports
        stop_processes(stack_processes(cfg["platform"]["stack_id"], SERVICE_ENV))

    dg = cfg["dask_gateway"]
    if dg["enabled"]:
        user_services.append("dask-gateway")
        if local:
            services.append({
                "name": "dask-gateway",
                "url": f"http://127.0.0.1:{dg['port']}",
                "command": [
                    str(Path(sys.executable).with_name("dask-gateway-server")),
                    "-f", str(repo_root(cfg) / "hub_config" / "dask_gateway_config.py"),
                ],
                        "environment": {**passthrough, "DASK_GATEWAY_ENCRYPT_KEYS":
                                os.environ.get("DASK_GATEWAY_ENCRYPT_KEYS", "")},
                "display": False,
                # dashboards sign users in through the hub (cscale_extensions.gateway.dashboards)
                "oauth_no_confirm": True,
            })

    cu = cfg["culler"]
    if cu["enabled"] and local:
        cmd = [sys.executable, "-m", "jupyterhub_idle_culler",
               f"--timeout={cu['timeout']}", f"--cull-every={cu['every']}", "--concurrency=5"]
        if cu["max_age"]:
            cmd.append(f"--max-age={cu['max_age']}")
        services.append({"name": "idle-culler", "command": cmd, "environment": dict(passthrough)})
        roles.append({
            "name": "idle-culler",
            "description": "Stop idle user servers",
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
            "services": ["idle-culler"],
        })

    for extra in _optional_services(cfg).values():
        services.append({**extra["service"], "environment": {**passthrough, **extra["service"].get("environment", {})}})
        roles.extend(extra.get("roles", []))
    # users reach every enabled platform service, however it is deployed (local or chart)
    for name, section in PLATFORM_SERVICES.items():
        if cfg.get(section, {}).get("enabled", True) and (
            name in _service_ports(cfg) or cfg["platform"]["deployment"] != "local"
        ):
            user_services.append(name)

    access = [f"access:services!service={name}" for name in user_services]
    if local and os.environ.get(ADMIN_TOKEN_ENV):
        services.append({"name": "cscale-admin", "api_token": os.environ[ADMIN_TOKEN_ENV], "display": False})
        roles.append({
            "name": "cscale-admin",
            "description": "Platform tooling run by the operator (cscale-hub workshop …)",
            "scopes": ["admin:users", "admin:servers", "admin:server_state", "admin:auth_state",
                       "admin:groups", "tokens", "access:servers", "list:users", "list:groups"],
            "services": ["cscale-admin"],
        })
    # Users and their servers get the current OIDC access token from the hub's access-token
    # endpoint (hub/tokenapi.py), never the auth state: that holds the refresh and ID tokens,
    # and a server's token is in the hands of everything the user runs.
    from cscale_extensions.hub.tokenapi import SCOPE as ACCESS_TOKEN_SCOPE
    from cscale_extensions.hub.tokenapi import configure as add_access_token_api

    add_access_token_api(c)
    roles.append({"name": "user", "scopes": ["self", f"{ACCESS_TOKEN_SCOPE}!user", *access]})
    roles.append({
        "name": "server",
        "description": "What a user server may do with its token",
        "scopes": [
            "users:activity!user", "access:servers!server", "read:users:name!user",
            "read:users:groups!user", f"{ACCESS_TOKEN_SCOPE}!user", *access,
        ],
    })
    for svc in services:
        svc["environment"] = {**svc.get("environment", {}), SERVICE_ENV: svc["name"]}
    register(c, services, roles)


def register(c, services: list[dict[str, Any]], roles: list[dict[str, Any]]) -> None:
    """Append our hub services and roles to those an earlier configuration registered.

    The one merge of ``JupyterHub.services`` and ``JupyterHub.load_roles``. On Kubernetes z2jh's
    jupyterhub_config.py runs first and registers the idle culler, ``hub.services`` (with the
    api tokens from its Secret ``hub`` that our Deployments and the gateway read) and
    ``hub.loadRoles``; on the local stack nothing comes before. Precedence: every earlier entry
    is kept, in its order, unless one of ours has the same name; then ours replaces it (logged
    when it differs), so a configuration loaded twice registers nothing twice. Ours follow, in
    our order. On Kubernetes we register no services (the chart runs them), only the ``user``
    and ``server`` roles, so z2jh's services and tokens are always kept as they are.
    """
    for key, ours in (("services", services), ("load_roles", roles)):
        mine = {entry["name"]: entry for entry in ours}
        kept = []
        for entry in _already(c.JupyterHub, key):
            name = entry.get("name")
            if name not in mine:
                kept.append(entry)
            elif entry != mine[name]:
                log.warning("JupyterHub.%s: C-SCALE Hub's entry %r replaces an earlier one", key, name)
        setattr(c.JupyterHub, key, kept + list(ours))


def _already(section, key: str) -> list[dict[str, Any]]:
    """A list some earlier config file set (``[]`` when unset: traitlets gives a lazy value)."""
    value = section.get(key)
    return list(value) if isinstance(value, list) else []


#: platform services registered with the hub: service name -> its settings section
PLATFORM_SERVICES = {"eo-mqs": "eomqs", "runs": "runs"}


def _optional_services(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The platform services the hub starts itself (local deployment), when enabled."""
    out: dict[str, dict[str, Any]] = {}
    ports = _service_ports(cfg)
    if cfg["platform"]["deployment"] != "local":
        return out
    if "eo-mqs" in ports:
        out["eo-mqs"] = {"service": eomqs_service_spec(cfg, ports["eo-mqs"])}
    if "runs" in ports:
        state = Path(cfg["platform"]["data_dir"]) / "runs"
        out["runs"] = {"service": runs.service_spec(cfg, ports["runs"], state), "roles": [runs.role_spec()]}
    return out
