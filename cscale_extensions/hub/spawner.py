"""Local-process spawners of the embedded platform.

:class:`SystemUserSpawner` (the platform runs as root) gives every hub user a POSIX account of
the same name, created on first spawn with its home under ``<data_dir>/homes``; servers run
as that account, so users are isolated from each other by the operating system.
:class:`SameUserSpawner` (the platform runs unprivileged) runs every server as the
launcher's account with per-user homes: convenient for a laptop, but users are NOT isolated.
Both copy the workflow notebooks into the home before every start.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner, SimpleLocalProcessSpawner
from tornado import web
from traitlets import Dict, Unicode
from traitlets.config import LoggingConfigurable

from .. import notebook_sync

ACCOUNT_MARKER = "cscale-hub user"


class NotebooksMixin(LoggingConfigurable):
    """Copy the workflow notebooks into the home and add the platform's environment."""

    notebooks_source = Unicode("", config=True, help="Directory of the workflow notebooks ('' = none).")
    notebooks_target = Unicode("workflow_notebooks", config=True, help="Target dir relative to home.")
    platform_env = Dict(config=True, help="Environment every user server gets (STAC URL, gateway …).")

    def sync_notebooks(self, home: str, uid: int | None = None, gid: int | None = None) -> None:
        if not self.notebooks_source:
            return
        report = notebook_sync.sync(
            Path(self.notebooks_source), Path(home, self.notebooks_target), uid, gid
        )
        self.log.info(
            "workflow notebooks for %s: %d new, %d updated, %d kept (user edits), %d unchanged",
            self.user.name, len(report.created), len(report.updated), len(report.kept),
            len(report.unchanged),
        )

    def platform_environment(self) -> dict[str, str]:
        env = {k: str(v) for k, v in self.platform_env.items()}
        env["CSCALE_USER_VOS"] = ",".join(sorted(g.name for g in self.user.groups))
        token = getattr(self, "oidc_access_token", "")
        if token:
            env["OIDC_ACCESS_TOKEN"] = token  # a snapshot; cscale_extensions.token has the current one
        return env


class SystemUserSpawner(NotebooksMixin, LocalProcessSpawner):
    """One POSIX account per hub user (created on demand), home under ``homes_dir``."""

    homes_dir = Unicode(config=True, help="Parent directory of the users' homes.")
    user_shell = Unicode("/bin/bash", config=True, help="Login shell of created accounts.")

    def ensure_account(self) -> pwd.struct_passwd:
        name = self.user.name
        home = Path(self.homes_dir, name)
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            entry = None
        if entry is not None:
            if ACCOUNT_MARKER not in entry.pw_gecos:
                raise web.HTTPError(
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
            raise web.HTTPError(500, f"Could not create the account for {name}; "
                                     "the operator will find details in the hub log.")
        return pwd.getpwnam(name)

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

        def preexec():
            switch_user()
            os.chdir(home)

        return preexec

    async def start(self):
        entry = self.ensure_account()
        home = self.home_path
        if not home.exists():
            home.mkdir(mode=0o700, parents=True)
            os.chown(home, entry.pw_uid, entry.pw_gid)
        self.sync_notebooks(str(home), entry.pw_uid, entry.pw_gid)
        return await super().start()

    def get_env(self):
        env = super().get_env()
        env.update(self.platform_environment())
        return env


class SameUserSpawner(NotebooksMixin, SimpleLocalProcessSpawner):
    """Every server as the launcher's account; per-user homes; NO isolation between users."""

    async def start(self):
        Path(self.home_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        self.sync_notebooks(self.home_dir)
        return await super().start()

    def get_env(self):
        env = super().get_env()
        env.update(self.platform_environment())
        return env

    def get_args(self):
        args = super().get_args()
        if os.getuid() == 0:
            args.append("--allow-root")
        return args
