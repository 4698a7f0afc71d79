"""Local-process spawners of the embedded platform.

:class:`SystemUserSpawner` (the platform runs as root) gives every hub user a POSIX account of
the same name, created on first spawn with its home under ``<data_dir>/homes``; servers run
as that account, so users are isolated from each other by the operating system.
:class:`SameUserSpawner` (the platform runs unprivileged) runs every server as the
launcher's account with per-user homes: convenient for a laptop, but users are NOT isolated.
Both copy the workflow notebooks into the home before every start, start servers a few at a
time in arrival order (:mod:`cscale_extensions.hub.startqueue`), and both offer the spawn
form of compute sites (:mod:`cscale_extensions.hub.siteform`: the default site of the server's
Dask clusters and runs, for users with more than one).

Root never operates on a path in a home: the hub only creates a home that does not exist yet
(``mkdir`` in the root-owned ``homes_dir``, then ``fchown`` of what it created, never anything
inside it), and :class:`SystemUserSpawner` synchronises the notebooks in a subprocess running
as the user (uid, gid and supplementary groups of the account, cwd the home, a minimal
environment, a timeout), which prints its report as JSON for the hub's log. A sync that fails
(a link planted at the target, a full disk, a timeout …) is logged and does not stop the
spawn: the user's server starts with the notebooks as they are, and the next start tries
again. :class:`SameUserSpawner` runs the sync in-process: it is the same account anyway.

Every server process gets the per-user limits of :mod:`cscale_extensions.userlimits`
(``RLIMIT_DATA`` from ``mem_limit``, ``RLIMIT_NPROC``, a raised ``oom_score_adj``, a nice
value) in its ``preexec``, before the switch to the user; kernels and headless runs are its
children and inherit them. A hub username that is already the name of a system group (``disk``,
``shadow`` …) gets no account: ``useradd --user-group`` would fail, and an account in that
group would hold its rights; the user gets a clear 403 page.

Servers cannot be impersonated by another account that binds a dead server's address
(:mod:`cscale_extensions.hub.servertls`): :class:`SystemUserSpawner` starts each server on
its account's own loopback address with HTTPS and a certificate naming only that address and
the user's host, which the proxy and the hub verify (with user subdomains; without them every
request carries the hub's host and servers stay on plain HTTP); and both spawners report a
server's exit the moment its process is gone (a ``pidfd`` in the hub's event loop), not at
the next 30 s poll, so the hub removes its route at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import pwd
import stat
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner, SimpleLocalProcessSpawner
from tornado import web
from traitlets import Dict, Float, List, Unicode
from traitlets.config import LoggingConfigurable

from cscale_extensions import notebooksync, userlimits
from cscale_extensions.compute import sitegroups
from cscale_extensions.hub import servertls
from cscale_extensions.hub.environment import server_dashboard_address
from cscale_extensions.hub.siteform import SiteChoice
from cscale_extensions.hub.startqueue import QueuedStart
from cscale_extensions.hub.usererror import user_error

ACCOUNT_MARKER = "cscale-hub user"


class NotebooksMixin(LoggingConfigurable):
    """Copy the workflow notebooks into the home and add the platform's environment."""

    notebooks_source = Unicode("", config=True, help="Directory of the workflow notebooks ('' = none).")
    notebooks_target = Unicode("workflow_notebooks", config=True, help="Target dir relative to home.")
    platform_env = Dict(config=True, help="Environment every user server gets (STAC URL, gateway …).")

    notebooks_sync_timeout = Float(
        60, config=True, help="Seconds a notebook sync (run as the user) may take."
    )
    process_limits = Dict(
        config=True,
        help="spawner.limits of the settings: mode (rlimits|off), max_processes, vo_limits.",
    )

    def user_process_limits(self, *, own_account: bool) -> userlimits.ProcessLimits | None:
        """The limits of this user's server (None: mode off): ``mem_limit`` and
        ``max_processes``, each raised by the user's VOs' entries in ``vo_limits``.
        ``own_account`` False (same-user mode): no process limit, it would count the hub's."""
        cfg = self.process_limits or {}
        if not userlimits.enabled(cfg):
            return None
        vos = [g.name for g in self.user.groups]
        vo_limits = cfg.get("vo_limits") or {}
        memory = userlimits.vo_maximum(vos, vo_limits, "mem_limit", self.mem_limit)
        procs = userlimits.vo_maximum(vos, vo_limits, "max_processes", cfg.get("max_processes"))
        return userlimits.ProcessLimits(memory=memory, processes=procs if own_account else None)

    def sync_notebooks(self, home: str) -> None:
        """Sync in this process, with this process's rights (only for the same account)."""
        if not self.notebooks_source:
            return
        try:
            report = notebooksync.sync(
                Path(self.notebooks_source), Path(home, self.notebooks_target)
            )
        except OSError as exc:
            self._log_sync({"error": str(exc)})
        else:
            self._log_sync(asdict(report))

    async def sync_notebooks_as(self, home: str, entry: pwd.struct_passwd) -> None:
        """Sync in a subprocess running as ``entry``'s account; log its JSON report."""
        if not self.notebooks_source:
            return
        cmd = [sys.executable, "-I", "-m", "cscale_extensions.notebooksync",
               self.notebooks_source, str(Path(home, self.notebooks_target))]
        env = {"HOME": home, "USER": entry.pw_name, "LOGNAME": entry.pw_name,
               "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd, cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, user=entry.pw_uid, group=entry.pw_gid,
                extra_groups=os.getgrouplist(entry.pw_name, entry.pw_gid),
                start_new_session=True,
            )
        except OSError as exc:
            self._log_sync({"error": f"cannot start the sync: {exc}"})
            return
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.notebooks_sync_timeout)
        except BaseException as exc:  # the timeout, or this spawn was cancelled
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            if not isinstance(exc, TimeoutError):
                raise
            self._log_sync({"error": f"the sync took more than {self.notebooks_sync_timeout:g}s"})
            return
        try:
            doc = json.loads(out.decode(errors="replace").strip().splitlines()[-1])
            if not isinstance(doc, dict):
                raise ValueError(doc)
        except (ValueError, IndexError):
            tail = err.decode(errors="replace").strip().splitlines()[-3:]
            doc = {"error": f"exit status {proc.returncode}: {' | '.join(tail) or 'no output'}"}
        self._log_sync(doc)

    def _log_sync(self, doc: dict) -> None:
        if "error" in doc:
            self.log.warning(
                "workflow notebooks for %s not synchronised (the server starts anyway): %s",
                self.user.name, str(doc["error"])[:500],
            )
            return

        def n(key: str) -> int:
            value = doc.get(key)
            return len(value) if isinstance(value, list) else 0

        self.log.info(
            "workflow notebooks for %s: %d new, %d updated, %d kept (user edits), %d unchanged",
            self.user.name, n("created"), n("updated"), n("kept"), n("unchanged"),
        )
        if n("refused"):
            self.log.warning(
                "workflow notebooks for %s: %d path(s) not touched (links or not regular files): %s",
                self.user.name, n("refused"), ", ".join(map(str, doc["refused"][:10])),
            )

    def platform_environment(self) -> dict[str, str]:
        env = {k: str(v) for k, v in self.platform_env.items()}
        env["CSCALE_USER_VOS"] = ",".join(sorted(g.name for g in self.user.groups))
        token = getattr(self, "oidc_access_token", "")
        if token:
            env["OIDC_ACCESS_TOKEN"] = token  # a snapshot; cscale_extensions.singleuser.token has the current one
        if "DASK_GATEWAY__ADDRESS" in env:
            # dashboard links on the user's own origin, through their server's proxy
            # (cscale_extensions.singleuser.gateway_dashboards)
            here = self.user.server_url(self.name)  # with user subdomains: their host + path
            env["DASK_GATEWAY__PUBLIC_ADDRESS"] = server_dashboard_address(self.public_url, here)
        return env


class ExitWatch:
    """Spawner mixin: tell the hub a server's process is gone the moment it exits.

    JupyterHub polls each server every ``poll_interval`` (30 s); until then the proxy keeps
    the dead server's route. Here a ``pidfd`` of the process is watched in the hub's event
    loop from ``start_polling`` on; when it becomes readable (the process exited) the
    spawner's ``poll_and_notify`` runs at once, which makes the hub remove the route and
    mark the server stopped. The periodic poll stays as the fallback (no ``pidfd``, or a
    process that is not the hub's child and not reaped yet)."""

    _exit_fd: int | None = None

    def start_polling(self):
        super().start_polling()
        self._watch_exit()

    def stop_polling(self):
        self._unwatch_exit()
        super().stop_polling()

    def _watch_exit(self) -> None:
        self._unwatch_exit()
        pid = getattr(self, "pid", 0)
        if not pid:
            return
        try:
            loop = asyncio.get_running_loop()
            fd = os.pidfd_open(pid)
        except (RuntimeError, OSError):  # no loop, no pidfd, or already gone: the poll sees it
            return
        self._exit_fd = fd
        loop.add_reader(fd, self._exited)

    def _unwatch_exit(self) -> None:
        fd, self._exit_fd = self._exit_fd, None
        if fd is None:
            return
        with contextlib.suppress(RuntimeError, ValueError):
            asyncio.get_running_loop().remove_reader(fd)
        os.close(fd)

    def _exited(self) -> None:
        self._unwatch_exit()
        asyncio.ensure_future(self._notify_exit())

    async def _notify_exit(self) -> None:
        for _ in range(40):  # a process the hub did not start (hub restart): wait for its reaper
            if await self.poll() is not None:
                break
            await asyncio.sleep(0.25)
        self.log.info("server process of %s exited", self._log_name)
        await self.poll_and_notify()


class SystemUserSpawner(QueuedStart, ExitWatch, SiteChoice, NotebooksMixin, LocalProcessSpawner):
    """One POSIX account per hub user (created on demand), home under ``homes_dir``."""

    homes_dir = Unicode(config=True, help="Parent directory of the users' homes.")
    user_shell = Unicode("/bin/bash", config=True, help="Login shell of created accounts.")
    server_tls_dir = Unicode(
        "", config=True,
        help="Directory of the user servers' CA (cscale_extensions.hub.servertls): servers "
        "listen on their account's own loopback address with HTTPS the proxy verifies. "
        "'' = plain HTTP on 127.0.0.1 (any account could squat a dead server's port).",
    )
    site_groups = List(
        Dict(), config=True,
        help="POSIX groups of the Slurm sites (cscale_extensions.compute.sitegroups, as dicts): "
        "the account is put in those its user's VOs allow, and out of the others, at creation "
        "and at every spawn.",
    )
    _tls: servertls.ServerCert | None = None

    def ensure_account(self) -> pwd.struct_passwd:
        entry = self._ensure_account()
        if self.site_groups:
            sitegroups.sync_quietly(entry.pw_name, [g.name for g in self.user.groups],
                                    map(sitegroups.SiteGroup.from_dict, self.site_groups),
                                    ACCOUNT_MARKER, self.log)
        return entry

    def _ensure_account(self) -> pwd.struct_passwd:
        name = self.user.name
        home = Path(self.homes_dir, name)
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            entry = None
        if entry is None:
            self._refuse_group_name(name)
        else:
            if ACCOUNT_MARKER not in entry.pw_gecos:
                raise user_error(
                    403,
                    f"The username {name!r} belongs to a system account this hub did not create; "
                    "it cannot be used for a user server. Ask the operator to rename it.",
                )
            return entry
        Path(self.homes_dir).mkdir(mode=0o755, parents=True, exist_ok=True)
        cmd = ["useradd", "--home-dir", str(home), "--no-create-home", "--user-group",
               "--shell", self.user_shell, "--comment", f"{ACCOUNT_MARKER} {name}", name]
        # 9: created concurrently; 1/10: /etc/passwd or /etc/group locked by another process
        for attempt in range(40):
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if result.returncode not in (1, 10):
                break
            time.sleep(0.1 + 0.05 * attempt)
        if result.returncode not in (0, 9):
            self.log.error("%s failed: %s", " ".join(cmd), result.stderr.strip())
            raise user_error(500, f"Could not create the account for {name}; "
                                  "the operator will find details in the hub log.")
        try:  # 9 is also "a group of that name exists" (created meanwhile?)
            return pwd.getpwnam(name)
        except KeyError:
            self.log.error("%s: exit %d: %s", " ".join(cmd), result.returncode,
                           result.stderr.strip())
            self._refuse_group_name(name)
            raise user_error(500, f"Could not create the account for {name}; "
                                  "the operator will find details in the hub log.") from None

    def check_can_spawn(self) -> None:
        """The 403 of a username no account can be made for, before the spawn form."""
        try:
            pwd.getpwnam(self.user.name)
        except KeyError:
            self._refuse_group_name(self.user.name)

    def _refuse_group_name(self, name: str) -> None:
        """403 when ``name`` is a group on this machine that has no account of that name: a
        system group (``disk``, ``shadow``); the account would get its rights."""
        try:
            group = grp.getgrnam(name)
        except KeyError:
            return
        self.log.warning("user %s: no account created, %r is an existing group (gid %d)",
                         name, name, group.gr_gid)
        raise user_error(
            403,
            f"The username {name!r} is the name of a system group on this machine, so no "
            "account can be made for it and no server can start. Sign in with another "
            "username, or ask the operator to rename this hub user.",
        )

    @property
    def home_path(self) -> Path:
        """The user's home in this platform's data dir (authoritative, whatever passwd says:
        an account may outlive a data dir, or be shared by two stacks on one machine)."""
        return Path(self.homes_dir, self.user.name)

    def user_env(self, env):
        env = super().user_env(env)
        env["HOME"] = str(self.home_path)
        return env

    def make_preexec_fn(self, name):
        switch_user = super().make_preexec_fn(name)
        home = str(self.home_path)
        limits = self.user_process_limits(own_account=True)
        if limits:
            self.log.info("limits of %s's server: %s", self.user.name, limits.describe())

        def preexec():
            if limits:
                limits.apply()  # as root: the user cannot raise them again
            switch_user()
            os.chdir(home)

        return preexec

    def ensure_home(self) -> tuple[Path, pwd.struct_passwd]:
        """The account and its home, created (0700, theirs) when it does not exist yet.

        Root only ever creates the home itself in the root-owned ``homes_dir`` and chowns
        what it created through a descriptor; an existing home is never changed, only
        checked: a directory (not a link) owned by the account."""
        entry = self.ensure_account()
        home = self.home_path
        Path(self.homes_dir).mkdir(mode=0o755, parents=True, exist_ok=True)
        if not os.path.lexists(home):
            try:
                os.mkdir(home, 0o700)
            except FileExistsError:
                pass  # created meanwhile: checked below
            else:
                fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    os.fchown(fd, entry.pw_uid, entry.pw_gid)
                finally:
                    os.close(fd)
        st = os.lstat(home)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != entry.pw_uid:
            self.log.error(
                "home %s of %s: not a directory owned by uid %d (mode %o, uid %d); left alone",
                home, self.user.name, entry.pw_uid, st.st_mode, st.st_uid,
            )
            raise user_error(
                500, f"The home directory of {self.user.name} is not in order (it is not a "
                     "directory owned by the account); the operator will find details in the "
                     "hub log.",
            )
        return home, entry

    async def start(self):
        return await self.queued(self._start)

    async def _start(self) -> str:
        home, entry = self.ensure_home()
        limits = self.user_process_limits(own_account=True)
        if limits and limits.processes and userlimits.tasks_of(entry.pw_uid) >= limits.processes:
            raise self._at_process_limit(limits.processes)
        await self.sync_notebooks_as(str(home), entry)
        # without user subdomains every request carries the hub's host: no certificate could
        # tell users apart there, so servers stay on plain HTTP (only the exit watch protects)
        if self.server_tls_dir and self.user.settings.get("subdomain_host"):
            self._prepare_tls(entry)
        try:
            ip, port = await super().start()
        except BlockingIOError as exc:  # EAGAIN at exec: the account is at RLIMIT_NPROC
            if limits is None or not limits.processes:
                raise
            self.log.warning("server of %s not started: %s", self.user.name, exc)
            raise self._at_process_limit(limits.processes) from None
        return f"{'https' if self._tls else 'http'}://{ip}:{port}"

    def _prepare_tls(self, entry: pwd.struct_passwd) -> None:
        """This account's address, a fresh certificate for it, and the hub's check of the
        new server verifying it (JupyterHub takes the client pair and CA from the server)."""
        try:
            ca = servertls.ServerCA(self.server_tls_dir)
            ip = servertls.server_ip(entry.pw_uid)
            # the proxy checks the name of the request's Host (the user's), the hub the address
            self._tls = ca.issue(self.user.name, self.name, ip, entry.pw_gid,
                                 host=self.user.domain)
            hub = ca.hub_client()
        except (OSError, ValueError) as exc:
            self.log.error("no TLS certificate for the server of %s: %s", self.user.name, exc)
            raise user_error(500, f"Could not prepare the server of {self.user.name}; the "
                                  "operator will find details in the hub log.") from None
        self.ip = ip
        self._hub_verifies(hub)  # the URL this start returns is https

    def _hub_verifies(self, hub: servertls.ServerCert | None = None) -> None:
        """Make the hub's checks of this HTTPS server (after a start, and of running servers
        when the hub starts again) verify it with the CA: JupyterHub takes the client pair
        and the CA from the server object."""
        server = self.server
        if server is None or server.cafile or (hub is None and server.proto != "https"):
            return
        hub = hub or servertls.ServerCA(self.server_tls_dir).hub_client()
        server.keyfile, server.certfile, server.cafile = hub.keyfile, hub.certfile, hub.cafile

    async def poll(self):
        status = await super().poll()
        if status is None and self.server_tls_dir:  # the hub checks the server's URL next
            self._hub_verifies()
        return status

    def _at_process_limit(self, limit: int) -> web.HTTPError:
        self.log.warning("server of %s not started: the account is at its process limit (%d)",
                         self.user.name, limit)
        return user_error(
            503,
            f"Your account already runs {limit} processes and threads, its limit: stop some "
            "of them (kernels, Dask clusters, runs, background processes) and start the "
            "server again.",
        )

    def get_env(self):
        env = super().get_env()
        env.update(self.platform_environment())
        env.update(self.site_environment())
        if self._tls:  # jupyterhub-singleuser serves HTTPS with these (no client certificates)
            env["JUPYTERHUB_SSL_KEYFILE"] = self._tls.keyfile
            env["JUPYTERHUB_SSL_CERTFILE"] = self._tls.certfile
            env["JUPYTERHUB_SERVICE_URL"] = env["JUPYTERHUB_SERVICE_URL"].replace(
                "http://", "https://", 1)
        return env


class SameUserSpawner(QueuedStart, ExitWatch, SiteChoice, NotebooksMixin, SimpleLocalProcessSpawner):
    """Every server as the launcher's account; per-user homes; NO isolation between users."""

    def make_preexec_fn(self, name):
        switch_user = super().make_preexec_fn(name)
        limits = self.user_process_limits(own_account=False)
        return limits.then(switch_user) if limits else switch_user

    async def start(self):
        return await self.queued(self._start)

    async def _start(self) -> str:
        Path(self.home_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        self.sync_notebooks(self.home_dir)
        ip, port = await super().start()
        return f"http://{ip}:{port}"

    def get_env(self):
        env = super().get_env()
        env.update(self.platform_environment())
        env.update(self.site_environment())
        return env

    def get_args(self):
        args = super().get_args()
        if os.getuid() == 0:
            args.append("--allow-root")
        return args
