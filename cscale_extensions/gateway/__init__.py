"""dask-gateway server configuration shared by every backend: options and limits by VO.

:func:`configure_from_environment` is the entry point of both deployments: the local stack's
``hub_config/dask_gateway_config.py`` and the chart's ``gateway.extraConfig`` call it from the
installed package; it loads the settings handed to the process and applies :func:`configure`. Users pick worker cores and
memory within the limits of their VOs (hub groups are VO names; a member of several VOs gets
the largest value of each limit); clusters stop after ``idle_timeout``; a user may run at most
``max_clusters_per_user`` clusters at once, whatever the compute site (the option ``site``,
:mod:`.sites`; Slurm sites run as batch jobs, :mod:`.slurm`). Local backends: the Dask
processes started for a user get the per-user limits of :mod:`cscale_extensions.userlimits`
(:class:`ProcessLimits`), and clusters' dashboards are served to their owner and admins only
(:mod:`cscale_extensions.gateway.dashboards`).
"""

from __future__ import annotations

import contextvars
import os
import pwd
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

from dask_gateway_server.backends.base import PublicException

from cscale_extensions import config as settings
from cscale_extensions import userlimits
from cscale_extensions.gateway.dashboards import DashboardAccess
from cscale_extensions.gateway.sites import LIMIT_KEYS, cluster_options, limits_for, served_sites
from cscale_extensions.gateway.slurm import SlurmJobs

__all__ = ["LIMIT_KEYS", "cluster_options", "configure", "configure_from_environment", "limits_for"]

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


_SETUP: contextvars.ContextVar[Any] = contextvars.ContextVar("cscale_gateway_setup")
#: sibling of the clusters directory holding each cluster's logs (root's, see TLSPathsFix)
LOGS_DIR = "cluster-logs"


class TLSPathsFix:
    """LocalBackend mixin: give the user exactly their cluster's own files, nothing else.

    dask-gateway 2026.3 ``LocalBackend.setup_working_directory`` hands ``set_file_permissions``
    the working, certs and logs directories followed by the *characters* of the two TLS file
    paths (``paths.extend(path)``), among them ``"/"``: upstream then chowns ``/`` to the user.
    Here the paths passed in are ignored. What is chowned is computed from the cluster being
    set up: its working directory (which must be a direct child of ``clusters_directory``), the
    certs directory in it and the two TLS files, each opened relative to its directory's
    descriptor without following links, checked to be a directory / regular file still owned
    by root and chowned through the descriptor. Everything inside is chowned before the
    working directory itself, so the user cannot swap anything meanwhile.

    Logs are not in the working directory: root creates each process's log file there
    (``start_process``), and in a directory the user owns they could first replace ``logs``
    by a link to, say, ``/etc/logrotate.d`` and have root create a file of their making in it.
    They go to ``<clusters_directory>/../cluster-logs/<cluster>/`` instead: root's, group the
    user's, 0750 (the user reads them, cannot change the directory), removed with the cluster.
    """

    def setup_working_directory(self, cluster):
        token = _SETUP.set(cluster)
        try:
            return super().setup_working_directory(cluster)
        finally:
            _SETUP.reset(token)

    def _clusters_root(self) -> str:
        if not self.clusters_directory:
            raise PermissionError("set LocalBackend.clusters_directory: the working directories "
                                  "must be under one root-owned directory")
        return os.path.realpath(self.clusters_directory)

    def get_logs_directory(self, workdir):
        root = os.path.join(os.path.dirname(self._clusters_root()), LOGS_DIR)
        return os.path.join(root, os.path.basename(os.path.normpath(workdir)))

    def cleanup_working_directory(self, workdir):
        super().cleanup_working_directory(workdir)
        logs = self.get_logs_directory(workdir)
        if os.path.isdir(logs) and not os.path.islink(logs):
            shutil.rmtree(logs, ignore_errors=True)

    def cluster_paths(self, cluster) -> tuple[str, str, list[str], str]:
        """The cluster's working directory (a direct child of ``clusters_directory``), the name
        of its certs directory, the names of the TLS files in it, and its logs directory."""
        name = str(cluster.name)
        if not name or "/" in name or name in (".", ".."):
            raise PermissionError(f"cluster name {name!r} is not a directory name")
        workdir = os.path.join(self._clusters_root(), name)
        certs = self.get_certs_directory(workdir)
        tls = self._get_tls_paths(workdir)
        if os.path.dirname(certs) != workdir or {os.path.dirname(p) for p in tls} != {certs}:
            raise PermissionError(f"unexpected cluster layout under {workdir}; not chowned")
        names = [os.path.basename(p) for p in tls]
        return workdir, os.path.basename(certs), names, self.get_logs_directory(workdir)

    def set_file_permissions(self, paths, username):
        cluster = _SETUP.get(None)
        if cluster is None:
            raise PermissionError("set_file_permissions outside setup_working_directory refused")
        if username != cluster.username:
            raise PermissionError(f"{username!r} does not own cluster {cluster.name}")
        entry = pwd.getpwnam(username)
        owner = (entry.pw_uid, entry.pw_gid)
        workdir, certs, tls, logs = self.cluster_paths(cluster)
        lfd = _open_own(logs, None, is_dir=True)
        try:  # root's, readable by the user's group
            os.fchown(lfd, -1, entry.pw_gid)
            os.fchmod(lfd, 0o750)
        finally:
            os.close(lfd)
        wfd = _open_own(workdir, None, is_dir=True)
        try:
            cfd = _open_own(certs, wfd, is_dir=True)
            try:
                for f in tls:
                    ffd = _open_own(f, cfd, is_dir=False)
                    try:
                        os.fchown(ffd, *owner)
                    finally:
                        os.close(ffd)
                os.fchown(cfd, *owner)
            finally:
                os.close(cfd)
            os.fchown(wfd, *owner)  # last: until now the user could change nothing in it
        finally:
            os.close(wfd)


def _open_own(name: str, dir_fd: int | None, *, is_dir: bool) -> int:
    """Open ``name`` (relative to ``dir_fd``) without following a link; only a directory /
    regular file owned by this process (as just created for the cluster) is accepted."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    fd = os.open(name, flags | (os.O_DIRECTORY if is_dir else 0), dir_fd=dir_fd)
    st = os.fstat(fd)
    kind_ok = stat.S_ISDIR(st.st_mode) if is_dir else stat.S_ISREG(st.st_mode)
    if not kind_ok or st.st_uid != os.geteuid():
        os.close(fd)
        raise PermissionError(f"{name}: not a {'directory' if is_dir else 'file'} of the "
                              "gateway; not chowned")
    return fd


_PROCESS: contextvars.ContextVar[str] = contextvars.ContextVar("cscale_gateway_process")


def dask_process_limits(cfg: dict[str, Any], cluster, process: str, *,
                        own_account: bool) -> userlimits.ProcessLimits | None:
    """Limits of one Dask process of ``cluster`` (``process``: "scheduler" or "worker-…"):
    its memory (the cluster's ``worker_memory`` / ``scheduler_memory``) plus
    ``dask_headroom`` as RLIMIT_DATA, ``max_processes`` as RLIMIT_NPROC (own accounts only).
    None when ``spawner.limits.mode`` is off."""
    if not userlimits.enabled(cfg):
        return None
    config = cluster.config
    memory = config.scheduler_memory if process == "scheduler" else config.worker_memory
    headroom = userlimits.parse_bytes(cfg.get("dask_headroom")) or 0
    return userlimits.ProcessLimits(
        memory=int(memory) + headroom if memory else None,
        processes=cfg.get("max_processes") if own_account else None,
    )


class ProcessLimits:
    """LocalBackend mixin: every scheduler and worker gets the user's process limits, set
    in its ``preexec`` before the switch to the user (see :mod:`cscale_extensions.userlimits`)."""

    #: spawner.limits of the settings (set by :func:`configure`)
    process_limits: dict[str, Any] = {}
    own_accounts = True

    async def start_process(self, cluster, cmd, env, name):
        token = _PROCESS.set(name)  # make_preexec_fn is called within, in this context
        try:
            return await super().start_process(cluster, cmd, env, name)
        finally:
            _PROCESS.reset(token)

    def make_preexec_fn(self, cluster):
        switch_user = super().make_preexec_fn(cluster)
        process = _PROCESS.get("worker")
        limits = dask_process_limits(self.process_limits, cluster, process,
                                     own_account=self.own_accounts)
        if limits is None:
            return switch_user
        self.log.info("limits of %s of cluster %s (%s): %s", process, cluster.name,
                      cluster.username, limits.describe())
        return limits.then(switch_user)


def _limited(backend_cls: type) -> type:
    from dask_gateway_server.backends.local import UnsafeLocalBackend

    # UnsafeLocalBackend runs clusters as the gateway's own account: nothing to chown
    unsafe = issubclass(backend_cls, UnsafeLocalBackend)
    fix = () if unsafe else (TLSPathsFix,)
    cls = type(f"CScale{backend_cls.__name__}",
               (ClusterCountLimit, SlurmJobs, ProcessLimits, DashboardAccess, *fix, backend_cls),
               {})
    cls.own_accounts = not unsafe
    return cls


def configure_from_environment(c) -> None:
    """Configure ``c`` from the settings this process was handed (``config.load_resolved``): the
    file ``$CSCALE_HUB_CONFIG`` names (local stack), or the settings YAML itself in
    ``$CSCALE_SETTINGS_YAML`` (the chart: the dask-gateway chart mounts no extra volume, its
    pod gets the ConfigMap cscale-settings as an environment variable)."""
    configure(c, settings.load_resolved())


def configure(c, cfg: dict[str, Any]) -> None:
    """Apply the platform configuration to a dask-gateway-server config object ``c``."""
    dg = cfg["dask_gateway"]
    local = cfg["platform"]["deployment"] == "local"
    backend = dg["backend"]
    if backend == "auto":
        backend = "local" if os.getuid() == 0 else "unsafe-local"

    c.DaskGateway.authenticator_class = "dask_gateway_server.auth.JupyterHubAuthenticator"
    c.JupyterHubAuthenticator.jupyterhub_service_name = "dask-gateway"
    # one gateway for every site it serves: the option `site` (gateway/sites.py, gateway/slurm.py)
    served = served_sites(cfg, backend)
    c.Backend.cluster_options = cluster_options(dg, cfg, served,
                                                site_config=backend != "kubernetes")
    c.ClusterConfig.idle_timeout = float(dg["idle_timeout"])

    if backend == "kubernetes":
        from cscale_extensions.gateway.kubernetes import configure_kube_backend

        configure_kube_backend(c, cfg)
        return

    from dask_gateway_server.backends.local import LocalBackend, UnsafeLocalBackend

    base = LocalBackend if backend == "local" else UnsafeLocalBackend
    limited = _limited(base)
    limited.max_clusters_per_user = int(dg["max_clusters_per_user"])
    limited.process_limits = dict(cfg["spawner"]["limits"])
    limited.dashboard_session_timeout = float(dg["dashboard_session_timeout"])
    limited.slurm_sites = {n: s for n, s in served.items() if s["kind"] == "slurm"}
    c.DaskGateway.backend_class = limited
    c.LocalBackend.cluster_config_class = "cscale_extensions.gateway.slurm.SiteClusterConfig"

    if local:
        data_dir = Path(cfg["platform"]["data_dir"])
        limited.homes_dir = str(data_dir / "homes")  # the users' homes, as the hub's spawners
        # users traverse to their own cluster directories (0700, theirs); the database is private
        state = data_dir / "dask-gateway"
        for d, mode in ((state, 0o711), (state / "clusters", 0o711), (state / LOGS_DIR, 0o711),
                        (state / "db", 0o700)):
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
