"""dask-gateway server configuration shared by every backend: options and limits by VO.

``hub_config/dask_gateway_config.py`` calls :func:`configure`. Users pick worker cores and
memory within the limits of their VOs (hub groups are VO names; a member of several VOs gets
the largest value of each limit); clusters stop after ``idle_timeout``; a user may run at most
``max_clusters_per_user`` clusters at once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.options import Float, Integer, Options

LIMIT_KEYS = ("worker_cores", "worker_memory", "max_workers", "max_cores")


def limits_for(groups: Iterable[str], dg: dict[str, Any]) -> dict[str, float]:
    """The cluster limits for a user in ``groups``: the defaults, raised by their VOs' entries."""
    out = dict(dg["defaults"])
    for group in groups:
        for key, value in dg.get("vo_limits", {}).get(group, {}).items():
            out[key] = max(out[key], value)
    return out


def cluster_options(dg: dict[str, Any]):
    """A ``Backend.cluster_options`` callable: per-user options bounded by the user's VO limits."""

    def options_for(user) -> Options:
        lim = limits_for(getattr(user, "groups", ()) or (), dg)
        defaults = dg["defaults"]

        def handler(options, user=user):
            return {
                "worker_cores": int(options.worker_cores),
                "worker_memory": int(options.worker_memory * 2**30),
                "cluster_max_workers": int(lim["max_workers"]),
                "cluster_max_cores": float(lim["max_cores"]),
            }

        return Options(
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
            handler=handler,
        )

    return options_for


class ClusterCountLimit:
    """Backend mixin: refuse a new cluster when the user already runs ``max_clusters_per_user``."""

    max_clusters_per_user = 2

    async def start_cluster(self, user, cluster_options):
        from dask_gateway_server.backends.db_base import JobStatus

        active = [
            c for c in self.db.list_clusters(username=user.name)
            if c.status <= JobStatus.RUNNING and c.target <= JobStatus.RUNNING
        ]
        if len(active) >= self.max_clusters_per_user:
            raise PublicException(
                f"You already run {len(active)} Dask cluster(s), the limit per user is "
                f"{self.max_clusters_per_user}. Shut one down (cluster.shutdown()) and try again."
            )
        return await super().start_cluster(user, cluster_options)


class TLSPathsFix:
    """LocalBackend mixin: dask-gateway 2026.3 passes the characters of the TLS file paths
    (``paths.extend(path)``) to ``set_file_permissions``; chown the real files instead."""

    def set_file_permissions(self, paths, username):
        dirs = [p for p in paths if os.path.isabs(p)]
        files = list(self._get_tls_paths(dirs[0])) if dirs else []
        return super().set_file_permissions(dirs + files, username)


def _limited(backend_cls: type) -> type:
    return type(
        f"CScale{backend_cls.__name__}", (ClusterCountLimit, TLSPathsFix, backend_cls), {}
    )


def configure(c, cfg: dict[str, Any]) -> None:
    """Apply the platform configuration to a dask-gateway-server config object ``c``."""
    dg = cfg["dask_gateway"]
    local = cfg["platform"]["deployment"] == "local"
    backend = dg["backend"]
    if backend == "auto":
        backend = "local" if os.getuid() == 0 else "unsafe-local"

    c.DaskGateway.authenticator_class = "dask_gateway_server.auth.JupyterHubAuthenticator"
    c.JupyterHubAuthenticator.jupyterhub_service_name = "dask-gateway"
    c.Backend.cluster_options = cluster_options(dg)
    c.ClusterConfig.idle_timeout = float(dg["idle_timeout"])

    if backend == "kubernetes":
        from .kube.gateway import configure_kube_backend

        configure_kube_backend(c, cfg)
        return

    from dask_gateway_server.backends.local import LocalBackend, UnsafeLocalBackend

    base = LocalBackend if backend == "local" else UnsafeLocalBackend
    limited = _limited(base)
    limited.max_clusters_per_user = int(dg["max_clusters_per_user"])
    c.DaskGateway.backend_class = limited

    if local:
        data_dir = Path(cfg["platform"]["data_dir"])
        # users traverse to their own cluster directories (0700, theirs); the database is private
        state = data_dir / "dask-gateway"
        for d, mode in ((state, 0o711), (state / "clusters", 0o711), (state / "db", 0o700)):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, mode)
        base_url = cfg["hub"]["base_url"]
        c.DaskGateway.address = f"127.0.0.1:{dg['api_port']}"
        c.Proxy.address = f"127.0.0.1:{dg['port']}"
        c.Proxy.tcp_address = f"127.0.0.1:{dg['scheduler_port']}"
        c.Proxy.prefix = f"{base_url}services/dask-gateway"
        c.DBBackendBase.db_url = f"sqlite:///{state / 'db' / 'gateway.sqlite'}"
        c.LocalBackend.clusters_directory = str(state / "clusters")
        # distributed 2026 has no dask-scheduler / dask-worker commands
        dask = str(Path(sys.executable).with_name("dask"))
        c.ClusterConfig.scheduler_cmd = [dask, "scheduler"]
        c.ClusterConfig.worker_cmd = [dask, "worker"]
        stack_id = cfg["platform"].get("stack_id")
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"}
        if stack_id:
            env["CSCALE_STACK_ID"] = stack_id
        c.ClusterConfig.environment = env
