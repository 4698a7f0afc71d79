"""dask-gateway-server on Kubernetes: KubeBackend and KubeClusterConfig from the settings.

``cscale_extensions.gateway.configure`` (shared by all backends: JupyterHub auth, per-VO
cluster options and limits; the chart's ``gateway.extraConfig`` calls it through
``configure_from_environment``) calls :func:`configure_kube_backend` when
``dask_gateway.backend`` is ``kubernetes``. Schedulers and workers run the single-user image
(the same locked environment as the notebooks, so client and cluster versions match) as a
non-root account with all capabilities dropped, placed on the nodes of the compute site the
user chose for the cluster (option ``site``, among the sites their VOs may use): a compute site
named like a key of ``kubernetes.node_selectors`` / ``tolerations`` takes that placement, any
other ``kubernetes.dask.worker_site``'s. Idle clusters stop after
``dask_gateway.idle_timeout``; a user runs at most ``dask_gateway.max_clusters_per_user``.

Dashboards: the controller routes ``<prefix>/clusters/<namespace>.<name>/`` through traefik
straight to the scheduler's port 8787. Two halves keep them to the owner and admins: every
such route first asks the chart's ForwardAuth Middleware (``dashboard-auth-<gateway>``, put in
the controller's ``proxy_web_middlewares`` by ``helm/post-render.py``), answered here by
:class:`KubeDashboardAccess` (the local gateway's owner check,
:meth:`~cscale_extensions.gateway.dashboards.DashboardGate.forward_auth`), which hands traefik
the cluster's dashboard key; and schedulers and workers preload
:mod:`cscale_extensions.dashboard_guard.preload`, so their dashboards refuse any request
without that key (one that went round traefik, or a route without the Middleware).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.backends.kubernetes import KubeBackend

from cscale_extensions.dashboard_guard import PRELOAD
from cscale_extensions.gateway.dashboards import DashboardGate
from cscale_extensions.kube import check_sites, image_ref, pod_security_context, site_placement


class LimitedKubeBackend(KubeBackend):
    """KubeBackend refusing a new cluster when the user already runs the maximum."""

    max_clusters_per_user = 2

    async def start_cluster(self, user, cluster_options):
        active = await self.list_clusters(username=user.name)
        if len(active) >= self.max_clusters_per_user:
            raise PublicException(
                f"You already run {len(active)} Dask cluster(s), the limit per user is "
                f"{self.max_clusters_per_user}. Shut one down (cluster.shutdown()) and try again."
            )
        return await super().start_cluster(user, cluster_options)


#: the gateway's host label, ``cscale_extensions.hub.origins.subdomain_hook("dask-gateway", …)``
#: (the hub's rule; that module needs jupyterhub, absent from the gateway's image; a test
#: checks both agree)
GATEWAY_HOST_LABEL = "dask-gateway--service"


def gateway_oauth_urls(cfg: dict[str, Any]) -> dict[str, str]:
    """What JupyterHub tells a service it starts (``JUPYTERHUB_PUBLIC_URL``, …) for the gateway
    on Kubernetes, where the chart starts it: its public URL (``dask-gateway--service.<hub
    host>`` with ``platform.user_subdomains``), its OAuth callback (the redirect URI the hub
    registers for the service ``dask-gateway``), the hub's public URL and the client id."""
    public = cfg["platform"]["public_url"] or ""
    public = public if public.endswith("/") else public + "/"
    parts = urlsplit(public)
    if not parts.scheme or not parts.hostname:
        return {}
    netloc = parts.netloc
    own_host = cfg["platform"].get("user_subdomains", True)
    if own_host:
        netloc = f"{GATEWAY_HOST_LABEL}.{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    path = f"{parts.path}services/dask-gateway/"
    # JupyterHub's default redirect URI: the service's host (none on the hub's own) + its prefix
    host = f"{parts.scheme}://{netloc}" if own_host else ""
    return {
        "JUPYTERHUB_PUBLIC_URL": f"{parts.scheme}://{netloc}{path}",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{host}{path}oauth_callback",
        "JUPYTERHUB_PUBLIC_HUB_URL": public + "hub/",
        "JUPYTERHUB_CLIENT_ID": "service-dask-gateway",
    }


class KubeDashboardAccess:
    """KubeBackend mixin: the gateway answers traefik's ForwardAuth questions for the
    clusters' dashboards (owner or admin: 200 and the cluster's dashboard key)."""

    #: dask_gateway.dashboard_session_timeout of the settings
    dashboard_session_timeout: float = 3600.0
    #: the gateway's public path prefix (``<hub base_url>services/dask-gateway``)
    dashboard_prefix: str = "/services/dask-gateway"
    #: :func:`gateway_oauth_urls` of the settings (browser sign-in through the hub)
    dashboard_urls: dict[str, str] = {}

    async def dashboard_cluster(self, name: str):
        """The cluster ``name`` (``<namespace>.<name>``) of the backend's cache, None if unknown."""
        return await self.get_cluster(name)

    def install_dashboard_gate(self, app) -> DashboardGate:
        """The forward-auth endpoint and the sign-in callback on the gateway's application."""
        gate = DashboardGate(self, app, self.dashboard_session_timeout,
                             clusters_prefix=self.dashboard_prefix, urls=self.dashboard_urls)
        gate.install_forward_auth()
        return gate

    async def setup(self, app):
        await super().setup(app)
        self.install_dashboard_gate(app)


def limited_backend(max_clusters: int, *, session_timeout: float = 3600.0,
                    prefix: str = "/services/dask-gateway",
                    urls: dict[str, str] | None = None) -> type[LimitedKubeBackend]:
    """The gateway's backend: at most ``max_clusters`` clusters per user, dashboards checked
    (sessions of ``session_timeout`` seconds, dashboards under ``prefix``, sign-in by ``urls``,
    :func:`gateway_oauth_urls`)."""
    attrs = {"max_clusters_per_user": max_clusters, "dashboard_session_timeout": session_timeout,
             "dashboard_prefix": prefix, "dashboard_urls": dict(urls or {}),
             "__module__": __name__}
    return type("CScaleKubeBackend", (KubeDashboardAccess, LimitedKubeBackend), attrs)


def dask_pod_config(kube: dict[str, Any], site: str | None) -> dict[str, Any]:
    """Extra pod spec (placement, pod security context) of Dask schedulers and workers."""
    placement = site_placement(kube, site)
    pod: dict[str, Any] = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": int(kube["uid"]),
            "fsGroup": int(kube["fs_gid"]),
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if placement["node_selector"]:
        pod["nodeSelector"] = placement["node_selector"]
    if placement["tolerations"]:
        pod["tolerations"] = placement["tolerations"]
    return pod


def placement_site(kube: dict[str, Any], compute_site: str | None) -> str | None:
    """The Kubernetes site (key of ``node_selectors`` / ``tolerations``) of a cluster on
    ``compute_site``: the site of the same name, else ``kubernetes.dask.worker_site``."""
    known = set(kube.get("node_selectors", {})) | set(kube.get("tolerations", {}))
    return compute_site if compute_site in known else kube["dask"]["worker_site"]


def placed_options(options_for, kube: dict[str, Any]):
    """Wrap a ``Backend.cluster_options`` callable: each cluster's scheduler and worker pods
    are placed on the nodes of the compute site the user chose (option ``site``, already
    checked against their VOs by :mod:`cscale_extensions.gateway.sites`)."""

    def placed(user):
        opts = options_for(user)
        inner = opts.handler

        def handler(options, user):
            out = dict(inner(options, user) if inner else {})
            pod = dask_pod_config(kube, placement_site(kube, options.get("site")))
            out["scheduler_extra_pod_config"] = pod
            out["worker_extra_pod_config"] = pod
            return out

        opts.handler = handler
        return opts

    return placed


def configure_kube_backend(c, cfg: dict[str, Any]) -> None:
    """Configure ``c`` (a dask-gateway-server config) for the Kubernetes backend from ``cfg``.

    Raises ConfigError when ``kubernetes.dask.worker_site`` names an unknown compute site.
    """
    kube = cfg["kubernetes"]
    dg = cfg["dask_gateway"]
    check_sites(kube)

    c.DaskGateway.backend_class = limited_backend(
        int(dg["max_clusters_per_user"]),
        session_timeout=float(dg["dashboard_session_timeout"]),
        prefix=f"{cfg['hub']['base_url']}services/dask-gateway",
        urls=gateway_oauth_urls(cfg),
    )
    cc = c.KubeClusterConfig
    if kube["namespace"]:
        cc.namespace = kube["namespace"]
    cc.image = image_ref(kube)
    cc.image_pull_policy = kube["image"]["pull_policy"]
    cc.image_pull_secrets = [{"name": n} for n in kube["image"]["pull_secrets"]]
    # distributed >= 2026 has no dask-scheduler / dask-worker scripts. The guard first: their
    # dashboards answer only requests with the key traefik adds after the owner check
    cc.scheduler_cmd = ["dask", "scheduler", "--preload", PRELOAD]
    cc.worker_cmd = ["dask", "worker", "--preload", PRELOAD]
    cc.idle_timeout = float(dg["idle_timeout"])
    cc.scheduler_cores = float(kube["dask"]["scheduler_cores"])
    cc.scheduler_memory = int(kube["dask"]["scheduler_memory"] * 2**30)
    cc.environment = {"CSCALE_DEPLOYMENT": "kubernetes"}

    container = {"securityContext": pod_security_context(kube)}
    pod = dask_pod_config(kube, kube["dask"]["worker_site"])
    cc.scheduler_extra_container_config = container
    cc.worker_extra_container_config = container
    cc.scheduler_extra_pod_config = pod
    cc.worker_extra_pod_config = pod
    if "cluster_options" in c.Backend and callable(c.Backend.cluster_options):
        # per cluster: the pods of the compute site the user picked (its own placement)
        c.Backend.cluster_options = placed_options(c.Backend.cluster_options, kube)
    labels = {"app.kubernetes.io/part-of": "cscale-hub"}
    cc.scheduler_extra_pod_labels = labels
    cc.worker_extra_pod_labels = labels
