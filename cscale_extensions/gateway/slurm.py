"""Clusters on Slurm sites: one gateway, one backend, dispatching each cluster by its site.

dask-gateway has one backend per gateway. The platform's gateway serves every site with one
API (one address, one token, one cluster list per user): :class:`SlurmJobs` is a mixin over
the local backend that runs the clusters whose option ``site`` names a Slurm site as Slurm
jobs and leaves every other cluster to the local backend (docs/compute.md says why this and
not a gateway per site). Limits, idle timeout and the per-user cluster count are the
gateway's, the same on every site.

A Slurm cluster is one batch job for the scheduler and one per worker, submitted **as the
user** through ``sudo -nHu <user>`` and :mod:`cscale_extensions.compute.as_user` (which also
makes the cluster's staging directory, as the user). Unlike upstream's ``SlurmBackend``:

- scheduler and workers listen on the site's ``bind_host`` (127.0.0.1 on the embedded site;
  upstream binds 0.0.0.0);
- their scratch space (``TMPDIR``, Dask's temporary directory) is ``tmp/`` in the cluster's
  staging directory, not the node's shared ``/tmp``;
- when the cluster ends its TLS files and scratch space are removed but its logs are kept
  (upstream deletes the whole staging directory); finished clusters' directories older than
  ``keep_logs_days`` are pruned;
- every job gets the cloud site's per-process limits (``spawner.limits``: ``prlimit`` of its
  data segment to its memory plus headroom, of the user's processes), the site's walltime (``--time``) and a name ``cscale-dg.<gateway>.<cluster>
  [.<worker>]``; when the gateway starts, jobs of that name that no live cluster of its
  database owns (left by a gateway killed mid-way, or a lost database) are cancelled.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import pwd
import shlex
import socket
from typing import Any

from dask_gateway_server.backends.db_base import DBBackendBase
from dask_gateway_server.backends.local import LocalClusterConfig
from traitlets import Unicode

from cscale_extensions import userlimits
from cscale_extensions.compute.slurm import ACTIVE_STATES, SlurmError, SlurmSite

JOB_PREFIX = "cscale-dg"
TLS_FILES = ("dask.crt", "dask.pem")
SCRATCH = "tmp"


class SiteClusterConfig(LocalClusterConfig):
    """Cluster configuration with the compute site the cluster runs on."""

    site = Unicode(
        "",
        help="The compute site (compute.sites) of the cluster; empty: the gateway's own backend.",
        config=True,
    )


def gateway_id(db_url: str) -> str:
    """A short name of this gateway for its jobs' names: one database, one gateway."""
    return hashlib.sha256(f"{socket.gethostname()}|{db_url}".encode()).hexdigest()[:10]


def _mib(nbytes: int) -> str:
    return f"{max(1, math.ceil(nbytes / 2**20))}M"


class SlurmJobs:
    """Backend mixin (before ``LocalBackend``): clusters of Slurm sites run as Slurm jobs.

    ``slurm_sites`` (site name → the site's settings) and ``gateway_name`` are set by
    :func:`cscale_extensions.gateway.configure`.
    """

    slurm_sites: dict[str, dict[str, Any]] = {}
    gateway_name: str = ""
    #: where the platform keeps homes (the local stack: ``<data_dir>/homes``, as the hub's
    #: spawner); empty: the account's home in the password database
    homes_dir: str = ""

    # -- which site --------------------------------------------------------------------------
    def slurm_site_of(self, cluster) -> dict[str, Any] | None:
        """The Slurm site of ``cluster`` (None: the local backend's)."""
        name = (cluster.state or {}).get("site") or getattr(cluster.config, "site", "") or ""
        return self.slurm_sites.get(name)

    def _client(self, site: dict[str, Any]) -> SlurmSite:
        return SlurmSite.from_settings(site["slurm"])

    def _prefix(self) -> str:
        return f"{JOB_PREFIX}.{self.gateway_name or gateway_id(self.db_url)}."

    def home_of(self, username: str) -> str:
        """The user's home as their servers have it."""
        if self.homes_dir:
            return os.path.join(self.homes_dir, username)
        return pwd.getpwnam(username).pw_dir

    def staging_directory(self, cluster, site: dict[str, Any]) -> str:
        home = self.home_of(cluster.username)
        base = site["slurm"]["staging_dir"].format(home=home, username=cluster.username)
        return os.path.join(os.path.normpath(base), cluster.name)

    # -- what the jobs get --------------------------------------------------------------------
    def get_tls_paths(self, cluster):
        site = self.slurm_site_of(cluster)
        if site is None:
            return super().get_tls_paths(cluster)
        staging = self.staging_directory(cluster, site)
        return tuple(os.path.join(staging, f) for f in TLS_FILES)

    def get_env(self, cluster):
        site = self.slurm_site_of(cluster)
        if site is None:
            return super().get_env(cluster)
        # not the local backend's: the gateway's own PATH/PYTHONPATH mean nothing on a site
        env = DBBackendBase.get_env(self, cluster)
        staging = self.staging_directory(cluster, site)
        scratch = os.path.join(staging, SCRATCH)
        env.update({
            "USER": cluster.username,
            "HOME": self.home_of(cluster.username),
            "TMPDIR": scratch,
            "DASK_TEMPORARY_DIRECTORY": scratch,
            **self._client(site).env(),
        })
        if "PATH" in cluster.config.environment:
            env["PATH"] = cluster.config.environment["PATH"]
        return env

    def _on_site(self, cmd: list[str], site: dict[str, Any]) -> list[str]:
        """A Dask command line for ``site``: its ``dask`` and its ``bind_host``."""
        s = site["slurm"]
        cmd = list(cmd)
        if s["dask"]:
            cmd[0] = s["dask"]
        host, bind = self.default_host, s["bind_host"]
        return [bind if a == host else (bind + a[len(host):] if a.startswith(host + ":") else a)
                for a in cmd]

    def get_scheduler_command(self, cluster):
        cmd = super().get_scheduler_command(cluster)
        site = self.slurm_site_of(cluster)
        return cmd if site is None else self._on_site(cmd, site)

    def get_worker_command(self, cluster, worker_name, scheduler_address=None):
        cmd = super().get_worker_command(cluster, worker_name, scheduler_address)
        site = self.slurm_site_of(cluster)
        return cmd if site is None else self._on_site(cmd, site)

    def _job(self, cluster, site: dict[str, Any], worker=None) -> tuple[list[str], dict, str]:
        """sbatch options, environment and script of the scheduler's (or ``worker``'s) job."""
        staging = self.staging_directory(cluster, site)
        cfg = cluster.config
        if worker is None:
            name, log = self._prefix() + cluster.name, "dask-scheduler.log"
            cores, memory = cfg.scheduler_cores, cfg.scheduler_memory
            cmd, env = self.get_scheduler_command(cluster), self.get_scheduler_env(cluster)
        else:
            name = f"{self._prefix()}{cluster.name}.{worker.name}"
            log = f"dask-worker-{worker.name}.log"
            cores, memory = cfg.worker_cores, cfg.worker_memory
            cmd = self.get_worker_command(cluster, worker.name)
            env = self.get_worker_env(cluster)
        options = [
            f"--job-name={name}", f"--chdir={staging}", f"--output={os.path.join(staging, log)}",
            f"--cpus-per-task={int(cores)}", f"--mem={_mib(int(memory))}",
            f"--time={int(site['limits']['walltime'])}",
        ]
        cmd = [*self._rlimits(int(memory)), *cmd]
        script = "\n".join(["#!/bin/sh", *site["slurm"]["setup"],
                            "exec " + " ".join(shlex.quote(a) for a in cmd), ""])
        return options, env, script

    def _rlimits(self, memory: int) -> list[str]:
        """The cloud site's per-process limits (``spawner.limits``, as
        :class:`~cscale_extensions.gateway.ProcessLimits` sets them) as a ``prlimit`` prefix
        of the Dask command: Slurm without cgroups enforces no memory limit of its own."""
        limits = getattr(self, "process_limits", {}) or {}
        if not userlimits.enabled(limits):
            return []
        out = []
        headroom = userlimits.parse_bytes(limits.get("dask_headroom")) or 0
        if memory:
            out.append(f"--data={memory + headroom}:{memory + headroom}")
        if limits.get("max_processes"):
            out.append(f"--nproc={int(limits['max_processes'])}:{int(limits['max_processes'])}")
        return ["prlimit", *out, "--"] if out else []

    # -- running commands as the user ---------------------------------------------------------
    async def _as_user(self, client: SlurmSite, user: str, request: dict[str, Any]) -> dict:
        proc = await asyncio.create_subprocess_exec(
            *client.as_user_argv(user), env={}, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate(json.dumps(request).encode())
        return client.parse_as_user(out.decode("utf8", "replace"), err.decode("utf8", "replace"),
                                    proc.returncode)

    async def _submit(self, cluster, site: dict[str, Any], worker=None) -> str:
        client = self._client(site)
        options, env, script = self._job(cluster, site, worker)
        env = {**client.env(), **env}
        argv = [*client.command("sbatch"), "--parsable", *client.job_options(), *options,
                "--export=" + ",".join(sorted(env))]
        request: dict[str, Any] = {"action": "submit", "argv": argv, "env": env, "stdin": script}
        if worker is None:
            request.update(staging_dir=self.staging_directory(cluster, site), dirs=[SCRATCH],
                           files={"dask.crt": cluster.tls_cert.decode(),
                                  "dask.pem": cluster.tls_key.decode()})
        answer = await self._as_user(client, cluster.username, request)
        if answer["returncode"] != 0:
            raise SlurmError(f"sbatch refused the job ({answer['returncode']}): "
                             f"{answer['stderr'].strip()[-500:]}")
        return answer["stdout"].strip().split(";")[0]

    async def _cancel(self, client: SlurmSite, user: str, job_id: str) -> None:
        answer = await self._as_user(client, user, {
            "action": "run", "argv": [*client.command("scancel"), job_id], "env": client.env()})
        if answer["returncode"] != 0:
            self.log.warning("scancel %s as %s: %s", job_id, user, answer["stderr"].strip())

    async def _queue(self, client: SlurmSite, job_ids: list[str] | None = None):
        proc = await asyncio.create_subprocess_exec(
            *client.queue_argv(job_ids), env=client.env(), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        return client.parse_queue_answer(out.decode("utf8", "replace"),
                                         err.decode("utf8", "replace"), proc.returncode)

    # -- the backend's operations ---------------------------------------------------------------
    async def do_start_cluster(self, cluster):
        site = self.slurm_site_of(cluster)
        if site is None:
            async for state in super().do_start_cluster(cluster):
                yield state
            return
        staging = self.staging_directory(cluster, site)
        yield {"site": site["name"], "staging_dir": staging}
        job_id = await self._submit(cluster, site)
        self.log.info("Slurm job %s (site %s) submitted for the scheduler of cluster %s",
                      job_id, site["name"], cluster.name)
        yield {"site": site["name"], "staging_dir": staging, "job_id": job_id}

    async def do_stop_cluster(self, cluster):
        site = self.slurm_site_of(cluster)
        if site is None:
            await super().do_stop_cluster(cluster)
            return
        client = self._client(site)
        job_id = cluster.state.get("job_id")
        if job_id:
            await self._cancel(client, cluster.username, job_id)
        staging = cluster.state.get("staging_dir")
        if staging:
            try:
                await self._as_user(client, cluster.username, {
                    "action": "clean", "staging_dir": staging, "remove": [*TLS_FILES, SCRATCH],
                    "prune_days": site["slurm"]["keep_logs_days"]})
            except SlurmError as exc:
                self.log.warning("cleaning %s as %s: %s", staging, cluster.username, exc)

    async def do_start_worker(self, worker):
        site = self.slurm_site_of(worker.cluster)
        if site is None:
            async for state in super().do_start_worker(worker):
                yield state
            return
        job_id = await self._submit(worker.cluster, site, worker)
        self.log.info("Slurm job %s submitted for worker %s", job_id, worker.name)
        yield {"site": site["name"], "job_id": job_id}

    async def do_stop_worker(self, worker):
        site = self.slurm_site_of(worker.cluster)
        if site is None:
            await super().do_stop_worker(worker)
            return
        job_id = worker.state.get("job_id")
        if job_id:
            await self._cancel(self._client(site), worker.cluster.username, job_id)

    async def _check(self, objs, clusters, local_check) -> list[bool]:
        """Whether each of ``objs`` (clusters or workers, ``clusters`` theirs) still runs."""
        out: list[bool | None] = [None] * len(objs)
        local = [i for i, c in enumerate(clusters) if self.slurm_site_of(c) is None]
        if local:
            for i, ok in zip(local, await local_check([objs[i] for i in local]), strict=True):
                out[i] = ok
        by_site: dict[str, list[int]] = {}
        for i, c in enumerate(clusters):
            site = self.slurm_site_of(c)
            if site is not None:
                by_site.setdefault(site["name"], []).append(i)
        for name, idx in by_site.items():
            ids = [objs[i].state.get("job_id") for i in idx]
            wanted = [j for j in ids if j]
            jobs = await self._queue(self._client(self.slurm_sites[name]), wanted) if wanted else []
            active = {j.id for j in jobs if j.state in ACTIVE_STATES}
            for i, job_id in zip(idx, ids, strict=True):
                # submitted but not yet recorded: still starting
                out[i] = job_id in active if job_id else objs[i].status.name == "SUBMITTED"
        return [bool(x) for x in out]

    async def do_check_clusters(self, clusters):
        return await self._check(clusters, clusters, super().do_check_clusters)

    async def do_check_workers(self, workers):
        return await self._check(workers, [w.cluster for w in workers], super().do_check_workers)

    # -- reconciliation when the gateway starts -------------------------------------------------
    async def do_setup(self):
        await super().do_setup()
        for name, site in self.slurm_sites.items():
            try:
                await self.reconcile_site(site)
            except (SlurmError, OSError) as exc:
                self.log.warning("site %s: jobs not reconciled: %s", name, exc)

    def owned_jobs(self) -> set[str]:
        """Job ids recorded for the live clusters and workers of the database."""
        owned = set()
        for cluster in self.db.name_to_cluster.values():
            if not cluster.is_active():
                continue
            owned.add((cluster.state or {}).get("job_id"))
            for worker in cluster.workers.values():
                if worker.is_active():
                    owned.add((worker.state or {}).get("job_id"))
        owned.discard(None)
        return owned

    async def reconcile_site(self, site: dict[str, Any]) -> list[str]:
        """Cancel this gateway's jobs on ``site`` that no live cluster owns; their ids."""
        client = self._client(site)
        jobs = await self._queue(client)  # first: a job submitted from now on is owned
        owned = self.owned_jobs()
        orphans = [j for j in jobs if j.name.startswith(self._prefix()) and j.id not in owned
                   and j.state in ACTIVE_STATES]
        for job in orphans:
            self.log.warning("site %s: cancelling job %s (%s of %s): no live cluster owns it",
                             site["name"], job.id, job.name, job.user)
            await self._cancel(client, job.user, job.id)
        return [j.id for j in orphans]
