"""Hub-side part of workshops: apply a cohort's profile and copy its materials at spawn.

Wire it into the hub configuration once, after the spawner is configured::

    from cscale_extensions.workshop.hub import configure_workshops
    configure_workshops(c, cfg)

That sets ``OAuthenticator.refresh_user_hook`` (participants who have not logged in yet can be
pre-warmed), ``Spawner.consecutive_failure_limit`` from ``workshop.consecutive_failure_limit`` and a
``Spawner.pre_spawn_hook`` (chained after any hook already configured) which, for a user in a
workshop cohort that has not ended, applies the cohort's profile (environment, default_url,
mem/cpu limits) and, at their first spawn, copies the materials into ``~/<materials_target>``.
Cohort membership is read from the workshop files (the source of truth for a cohort; the hub
group follows the cohort's subgroup entitlement at login).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from . import materials
from .model import Workshop, find_user, workshops_dir

log = logging.getLogger("cscale.workshop")


def target_name(cfg: dict[str, Any], ws: Workshop) -> str:
    return cfg["workshop"]["materials_target"].replace("{workshop}", ws.name)


def _home(spawner) -> tuple[Path | None, int | None, int | None]:
    """The user's home (created, owned by their account) and uid/gid, for local spawners."""
    if hasattr(spawner, "ensure_account") and hasattr(spawner, "home_path"):
        entry = spawner.ensure_account()
        home = Path(spawner.home_path)
        if not home.exists():
            home.mkdir(mode=0o700, parents=True)
            os.chown(home, entry.pw_uid, entry.pw_gid)
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


def make_pre_spawn_hook(cfg: dict[str, Any], previous=None):
    root = workshops_dir(cfg, Path(cfg["platform"]["data_dir"]))

    async def pre_spawn_hook(spawner):
        if previous is not None:
            result = previous(spawner)
            if hasattr(result, "__await__"):
                await result
        found = find_user(root, spawner.user.name)
        if found is None:
            return
        directory, ws = found
        apply_profile(spawner, ws.profile)
        spawner.environment = {**spawner.environment, "CSCALE_WORKSHOP": ws.name}
        source = directory / "materials"
        if not source.is_dir():
            return
        await asyncio.to_thread(_give_copy, spawner, source, target_name(cfg, ws), ws.name)

    return pre_spawn_hook


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
