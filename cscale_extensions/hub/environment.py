"""What every user server is told about the platform: the public URL and the services' addresses.

Shared by the local spawners and KubeSpawner (both build a server's environment from the same
settings), so it is a module of its own rather than part of the hub's configuration entry point.
"""

from __future__ import annotations

from typing import Any

from cscale_extensions.compute import SITES_ENV, sites_env
from cscale_extensions.hub.origins import GATEWAY_SERVICE, service_url
from cscale_extensions.singleuser import GATEWAY_PROXY_PATH

#: hub.ip values served under a name (the embedded identity provider keeps 127.0.0.1)
LOOPBACK_IPS = ("127.0.0.1", "::1", "localhost")
#: the local hub's host name: users get ``<user>.hub.localhost`` (loopback, like all of
#: ``*.localhost``); a dotted name, so the cookie JupyterHub sets for the hub's domain is
#: handled as everywhere else (Python's cookiejar never returns a ``Domain=localhost`` cookie)
LOCAL_HUB_HOST = "hub.localhost"


def public_url(cfg: dict[str, Any]) -> str:
    """The URL users open, always ending with "/".

    Without ``platform.public_url`` a loopback hub is ``http://hub.localhost:<port>/``: a host
    name, so users can have hosts of their own (see :mod:`.origins`), and not the
    ``127.0.0.1`` of the embedded identity provider, whose cookies must reach no user server.
    """
    url = cfg["platform"]["public_url"]
    if not url:
        h = cfg["hub"]
        host = LOCAL_HUB_HOST if h["ip"] in LOOPBACK_IPS else h["ip"]
        url = f"http://{host}:{h['port']}{h['base_url']}"
    return url if url.endswith("/") else url + "/"


def server_dashboard_address(server_public_url: str, server_base_url: str) -> str:
    """``DASK_GATEWAY__PUBLIC_ADDRESS`` of one user server: its own gateway-dashboard route.

    ``cluster.dashboard_link`` is this plus ``/clusters/<name>/status``: a page on the user's
    own origin that their server forwards to the gateway with its own token (see
    :mod:`cscale_extensions.singleuser.gateway_dashboards`), so the Dask panel can show it.
    Without a known public URL the link is a path on whatever host the lab is opened on.
    """
    base = server_public_url or server_base_url or "/"
    return base.rstrip("/") + "/" + GATEWAY_PROXY_PATH


def user_environment(cfg: dict[str, Any]) -> dict[str, str]:
    """Environment of every user server: where the platform's services are."""
    url = public_url(cfg)
    env = {
        "CSCALE_HUB_URL": url,
        "CSCALE_STAC_URL": url + "services/eo-mqs/",
        "CSCALE_RUNS_URL": url + "services/runs/",
        "JUPYTERHUB_ACTIVITY_INTERVAL": str(cfg["culler"]["activity_interval"]),
        "CSCALE_BUSY_CHECK_SECONDS": str(max(1, min(15, cfg["culler"]["activity_interval"]))),
        # cloud-optimised GeoTIFFs over HTTP: no directory listings
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    }
    dg = cfg["dask_gateway"]
    if dg["enabled"]:
        gateway = service_url(cfg, url, GATEWAY_SERVICE)  # a host of its own (see .origins)
        env.update({
            "DASK_GATEWAY__ADDRESS": gateway,
            "DASK_GATEWAY__PUBLIC_ADDRESS": gateway,
            "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
            # the Dask panel's "+ New" starts a gateway cluster, not a LocalCluster
            "DASK_LABEXTENSION__FACTORY__MODULE": "dask_gateway",
            "DASK_LABEXTENSION__FACTORY__CLASS": "GatewayCluster",
        })
        if cfg["platform"]["deployment"] == "local":
            env["DASK_GATEWAY__PROXY_ADDRESS"] = f"gateway://127.0.0.1:{dg['scheduler_port']}"
        # the compute sites (new_cluster(site=...)); the gateway offers each user theirs
        env[SITES_ENV] = sites_env(cfg)
    env.update(cfg["spawner"]["environment"])
    return env
