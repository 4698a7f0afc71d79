"""Hub-side part of workshops: apply a cohort's profile and copy its materials at spawn.

Wire it into the hub configuration once, after the spawner is configured::

    from cscale_extensions.workshop.hub import configure_workshops
    configure_workshops(c, cfg)

That sets ``OAuthenticator.refresh_user_hook`` (participants who have not logged in yet can be
pre-warmed), ``Spawner.consecutive_failure_limit`` from ``workshop.consecutive_failure_limit`` and a
``Spawner.pre_spawn_hook`` (chained after any hook already configured) which, for a user in a
workshop cohort that has not ended, applies the cohort's profile (environment, default_url,
mem/cpu limits), gives their server ``workshop.prestarted_kernels`` pre-started kernels
(:mod:`cscale_extensions.singleuser.kernelpool`, so the first notebook does not wait for one)
and, at their first spawn, copies the materials into ``~/<materials_target>``.
Cohort membership is read from the workshop files (the source of truth for a cohort; the hub
group follows the cohort's subgroup entitlement at login).

Local spawners get the copy from the hub's disk. On Kubernetes the home is a volume of the pod,
so the hook adds an init container (:mod:`cscale_extensions.workshop.fetch`) that downloads the
materials from the hub with the server's own API token and unpacks them into the home, again
only when the participant has no copy yet. The hub serves them at
``/hub/cscale/workshops/<name>/materials`` (:class:`MaterialsHandler`) to the workshop's
participants and to admins: on the hub's own port, which user pods reach already for the hub
API, so no extra service, port or network policy is needed. (JupyterHub marks
``extra_handlers`` deprecated in favour of services; if it goes, this handler becomes one.)
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path
from typing import Any

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.utils import url_path_join
from tornado import web

from cscale_extensions.workshop import materials
from cscale_extensions.workshop.model import (
    Workshop,
    WorkshopError,
    check_name,
    find_user,
    load,
    workshops_dir,
)

#: name of the init container that fetches the materials into a pod (Kubernetes)
INIT_CONTAINER = "workshop-materials"
#: where the hub serves a workshop's materials, below its prefix (``/hub/``)
MATERIALS_ROUTE = r"/cscale/workshops/([^/]+)/materials"
#: the user server's kernel manager with pre-started kernels (cscale_extensions.singleuser.kernelpool)
KERNEL_POOL_CLASS = "cscale_extensions.singleuser.kernelpool.PooledKernelManager"
_POOL_ARGS = ("--ServerApp.kernel_manager_class=", "--PooledKernelManager.")

log = logging.getLogger("cscale.workshop")


def target_name(cfg: dict[str, Any], ws: Workshop) -> str:
    return cfg["workshop"]["materials_target"].replace("{workshop}", ws.name)


def _home(spawner) -> tuple[Path | None, int | None, int | None]:
    """The user's home (created, owned by their account) and uid/gid, for local spawners."""
    if hasattr(spawner, "ensure_home"):  # SystemUserSpawner: creates it only if missing
        home, entry = spawner.ensure_home()
        return home, entry.pw_uid, entry.pw_gid
    home_dir = getattr(spawner, "home_dir", None)
    if home_dir and "{" not in str(home_dir):
        home = Path(home_dir)
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        return home, None, None
    return None, None, None


def apply_profile(spawner, profile: dict[str, Any]) -> None:
    env = profile.get("environment") or {}
    if env:
        spawner.environment = {**spawner.environment, **{k: str(v) for k, v in env.items()}}
    if profile.get("default_url"):
        spawner.default_url = profile["default_url"]
    if profile.get("mem_limit"):
        spawner.mem_limit = profile["mem_limit"]
    if profile.get("cpu_limit"):
        spawner.cpu_limit = float(profile["cpu_limit"])


def _give_copy(spawner, source: Path, target: str, workshop: str) -> None:
    home, uid, gid = _home(spawner)
    if home is None:
        log.warning(
            "workshop %s: no local home for %s; materials not copied", workshop, spawner.user.name
        )
        return
    if materials.copy_for_user(source, home / target, uid, gid):
        log.info("workshop %s: copied the materials into %s's home", workshop, spawner.user.name)


def set_prestarted_kernels(spawner, cfg: dict[str, Any], ws: Workshop | None) -> None:
    """Give this spawn of a cohort member's server ``workshop.prestarted_kernels`` pre-started
    kernels (its own kernel manager starts them, as the user), or (``ws`` None, or 0) none; the
    spawner object outlives a spawn, so an earlier spawn's arguments are replaced."""
    args = [a for a in spawner.args if not a.startswith(_POOL_ARGS)]
    n = int(cfg["workshop"]["prestarted_kernels"])
    if ws is not None and n > 0:
        args += [
            f"--ServerApp.kernel_manager_class={KERNEL_POOL_CLASS}",
            f"--PooledKernelManager.pool_size={n}",
            f"--PooledKernelManager.pool_kernel_name={cfg['workshop']['prestarted_kernel_name']}",
        ]
    spawner.args = args


def materials_url(spawner, workshop: str) -> str:
    """Where a user's pod downloads the materials: the hub's address as the pod knows it."""
    return url_path_join(spawner.hub.url, "cscale/workshops", workshop, "materials")


def set_materials_init_container(spawner, cfg: dict[str, Any], ws: Workshop | None) -> None:
    """Add the init container that fetches ``ws``'s materials to this spawn of a KubeSpawner,
    or (``ws`` None) remove the one an earlier spawn of this user added."""
    from cscale_extensions.hub.kubespawner import home_init_container, in_home, object_name

    inits = [i for i in spawner.init_containers if object_name(i) != INIT_CONTAINER]
    if ws is not None:
        command = ["python", "-m", "cscale_extensions.workshop.fetch"]
        command += [materials_url(spawner, ws.name), in_home(cfg, target_name(cfg, ws))]
        # the server's own token (created for this spawn): the main container gets it too
        env = {"JUPYTERHUB_API_TOKEN": spawner.api_token}
        inits.append(home_init_container(cfg, INIT_CONTAINER, command, env))
    spawner.init_containers = inits


def make_pre_spawn_hook(cfg: dict[str, Any], previous=None):
    root = workshops_dir(cfg, Path(cfg["platform"]["data_dir"]))
    on_kubernetes = cfg["spawner"]["backend"] == "kubernetes"

    async def pre_spawn_hook(spawner):
        if previous is not None:
            result = previous(spawner)
            if hasattr(result, "__await__"):
                await result
        found = find_user(root, spawner.user.name)
        directory, ws = found if found is not None else (None, None)
        source = directory / "materials" if directory is not None else None
        has_materials = source is not None and source.is_dir()
        if on_kubernetes:  # the spawner object outlives a spawn: also drop an earlier one's
            set_materials_init_container(spawner, cfg, ws if has_materials else None)
        set_prestarted_kernels(spawner, cfg, ws)
        if ws is None:
            return
        apply_profile(spawner, ws.profile)
        spawner.environment = {**spawner.environment, "CSCALE_WORKSHOP": ws.name}
        if has_materials and not on_kubernetes:
            await asyncio.to_thread(_give_copy, spawner, source, target_name(cfg, ws), ws.name)

    return pre_spawn_hook


class MaterialsHandler(APIHandler):
    """``GET /hub/cscale/workshops/<name>/materials``: the materials as a gzipped tar, for the
    workshop's participants (any token of theirs, e.g. their server's) and admins."""

    def initialize(self, root: Path) -> None:
        self.root = root

    async def get(self, name: str) -> None:
        user = self.current_user
        if user is None:
            raise web.HTTPError(403, "a hub API token of a workshop participant is required")
        try:
            directory = self.root / check_name(name)
            ws = load(directory)
        except WorkshopError:
            raise web.HTTPError(404, f"there is no workshop named {name!r}") from None
        if user.name not in ws.users and not getattr(user, "admin", False):
            raise web.HTTPError(403, f"{user.name} is not a participant of workshop {ws.name}")
        if ws.ended:
            raise web.HTTPError(
                410,
                f"workshop {ws.name} ended at {ws.ended}: its materials are no longer given out",
            )
        source = directory / "materials"
        if not source.is_dir():
            raise web.HTTPError(404, f"workshop {ws.name} has no materials")
        with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
            files = await asyncio.to_thread(materials.pack, source, spool)
            spool.seek(0)
            self.set_header("Content-Type", "application/gzip")
            self.set_header("Content-Disposition", f'attachment; filename="{ws.name}.tar.gz"')
            self.set_header("X-CScale-Materials-Files", str(files))
            while chunk := spool.read(1 << 16):
                self.write(chunk)
                await self.flush()


def make_refresh_user_hook(cfg: dict[str, Any]):
    """An OAuthenticator ``refresh_user_hook`` that lets the hub start the server of a cohort
    participant who has not logged in yet (no auth state: nothing to refresh), so that
    ``workshop prewarm`` works with ``auth.refresh_pre_spawn``. Everyone else, and participants
    once they have logged in or after the workshop ended, get the authenticator's behaviour."""
    root = workshops_dir(cfg, Path(cfg["platform"]["data_dir"]))

    def refresh_user_hook(authenticator, user, auth_state):
        if auth_state:
            return None
        found = find_user(root, user.name)
        return True if found is not None else None

    return refresh_user_hook


def configure_workshops(c, cfg: dict[str, Any]) -> None:
    """Apply the workshop settings to the JupyterHub config ``c`` (see the module docstring)."""
    w = cfg["workshop"]
    c.OAuthenticator.refresh_user_hook = make_refresh_user_hook(cfg)
    c.Spawner.consecutive_failure_limit = int(w["consecutive_failure_limit"])
    previous = c.Spawner.pre_spawn_hook if "pre_spawn_hook" in c.Spawner else None
    c.Spawner.pre_spawn_hook = make_pre_spawn_hook(cfg, previous)
    root = workshops_dir(cfg, Path(cfg["platform"]["data_dir"]))
    handlers = c.JupyterHub.extra_handlers if "extra_handlers" in c.JupyterHub else []
    c.JupyterHub.extra_handlers = [h for h in handlers if h[0] != MATERIALS_ROUTE] + [
        (MATERIALS_ROUTE, MaterialsHandler, {"root": root})
    ]
