"""POSIX groups through which Slurm itself enforces who may use a compute site.

Why: the gateway and the runs service check a user's VOs before they submit to a Slurm site,
but a user's terminal can run ``sbatch`` directly, past both. So a Slurm site may name a POSIX
group (``compute.sites.<name>.slurm.group``; the embedded site of the local stack always has
one, :func:`default_group`) whose members are the hub's accounts whose VOs allow the site, and
the embedded Slurm's partition carries ``AllowGroups=<group>``: slurmctld refuses a job of any
other account (root and the SlurmUser excepted), whoever submits it and however.

The hub keeps the membership (:func:`sync_account`, run as root): when it creates an account
and at every spawn (``hub.spawner``), and when a user's VOs change, at login and token refresh
(``hub.auth``) and for every user when the hub starts. Only accounts the hub made (their
comment carries its marker) are ever added or removed. slurmctld resolves the group itself
and keeps a list of the uids each partition allows, refreshed only when it starts, is
reconfigured or the partition's ``AllowGroups`` is set again (and every ``GroupUpdateTime``
s); so after a change of an embedded site's group the hub sets it again with ``scontrol
update PartitionName=<p> AllowGroups=<group>`` (:func:`refresh_slurm`), and the change takes
effect at once.
"""

from __future__ import annotations

import grp
import hashlib
import logging
import os
import pwd
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cscale_extensions.compute import sites

log = logging.getLogger("cscale.sitegroups")
#: one change of /etc/group at a time from this process (gpasswd locks the file; we retry)
_LOCK = threading.Lock()
_MAX_NAME = 32


@dataclass(frozen=True)
class SiteGroup:
    """The POSIX group of one Slurm site and who belongs in it."""

    site: str
    group: str
    #: VOs (hub groups) allowed on the site; None: every admitted user
    vos: tuple[str, ...] | None = None
    #: embedded site: SLURM_CONF and partition whose AllowGroups is refreshed after a change
    conf: str | None = None
    partition: str = ""

    def allows(self, hub_groups: Iterable[str]) -> bool:
        return self.vos is None or bool(set(self.vos) & set(hub_groups))

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "group": self.group,
                "vos": list(self.vos) if self.vos is not None else None,
                "conf": self.conf, "partition": self.partition}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SiteGroup:
        vos = d.get("vos")
        return cls(d["site"], d["group"], tuple(vos) if vos is not None else None,
                   d.get("conf"), d.get("partition") or "")


def default_group(root: Path) -> str:
    """The group of the embedded Slurm at ``root`` (``<data_dir>/slurm/<site>``): unique to
    the data dir, so two stacks on one machine (sharing its accounts) never share it."""
    digest = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:8]
    return f"cscale-{Path(root).name[:_MAX_NAME - 16]}-{digest}"


def from_settings(cfg: Mapping[str, Any]) -> list[SiteGroup]:
    """The site groups of the resolved settings (sites of kind slurm with ``slurm.group``)."""
    out = []
    for name, site in sites(cfg).items():
        s = site.get("slurm") or {}
        if site["kind"] != "slurm" or site.get("gateway") or not s.get("group"):
            continue
        embedded = bool(s.get("embedded"))
        out.append(SiteGroup(name, s["group"],
                             tuple(site["vos"]) if site["vos"] is not None else None,
                             s.get("conf") if embedded else None,
                             (s.get("partition") or "") if embedded else ""))
    return out


def _run(argv: list[str], ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    """Run a shadow tool; exit 10 (/etc/group locked by another process) is retried."""
    for attempt in range(40):
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
        if proc.returncode != 10:
            break
        time.sleep(0.05 + 0.05 * attempt)
    if proc.returncode not in ok:
        raise OSError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def ensure_group(name: str) -> None:
    """Create the (system) group ``name`` unless it exists."""
    try:
        grp.getgrnam(name)
        return
    except KeyError:
        pass
    with _LOCK:
        _run(["groupadd", "--system", name], ok=(0, 9))  # 9: made meanwhile


def remove_group(name: str) -> None:
    """Delete the group ``name`` if it exists (and is nobody's primary group)."""
    try:
        grp.getgrnam(name)
    except KeyError:
        return
    with _LOCK:
        _run(["groupdel", name], ok=(0, 6))  # 6: gone meanwhile


def members(name: str) -> set[str]:
    try:
        return set(grp.getgrnam(name).gr_mem)
    except KeyError:
        return set()


def hub_account(username: str, marker: str) -> bool:
    """Whether ``username`` is an account the hub made (its comment carries ``marker``)."""
    try:
        return marker in pwd.getpwnam(username).pw_gecos
    except KeyError:
        return False


def refresh_slurm(sg: SiteGroup, logger: logging.Logger = log) -> None:
    """Make the embedded slurmctld read the group again (a no-op for other sites)."""
    if not sg.conf or not sg.partition:
        return
    env = {"PATH": os.environ.get("PATH") or "/usr/bin:/bin", "SLURM_CONF": sg.conf}
    proc = subprocess.run(["scontrol", "update", f"PartitionName={sg.partition}",
                           f"AllowGroups={sg.group}"], env=env, capture_output=True, text=True,
                          check=False, timeout=30)
    if proc.returncode:
        # the periodic refresh (GroupUpdateTime) of slurmctld catches up
        logger.warning("scontrol update PartitionName=%s AllowGroups=%s failed: %s",
                    sg.partition, sg.group, (proc.stderr or proc.stdout).strip()[-300:])


def sync_account(username: str, hub_groups: Iterable[str] | None,
                 site_groups: Iterable[SiteGroup], marker: str,
                 logger: logging.Logger = log) -> list[str]:
    """Put the hub's account ``username`` in exactly the site groups its ``hub_groups``
    (VOs) allow (None: the user is not admitted any more, in none); return the changes made (``+group``/``-group``).
    An account the hub did not make, or none at all, is left alone."""
    site_groups = list(site_groups)
    hub_groups = list(hub_groups) if hub_groups is not None else None
    if not site_groups or not hub_account(username, marker):
        return []
    changes = []
    for sg in site_groups:
        want = hub_groups is not None and sg.allows(hub_groups)
        ensure_group(sg.group)
        if want == (username in members(sg.group)):
            continue
        with _LOCK:
            _run(["gpasswd", "--add" if want else "--delete", username, sg.group])
        changes.append(("+" if want else "-") + sg.group)
        logger.info("account %s %s group %s of compute site %s", username,
                    "added to" if want else "removed from", sg.group, sg.site)
        refresh_slurm(sg, logger)
    return changes


def sync_quietly(username: str, hub_groups: Iterable[str] | None,
                 site_groups: Iterable[SiteGroup], marker: str,
                 logger: logging.Logger = log) -> list[str]:
    """:func:`sync_account` that logs a failure instead of raising (a sign-in or spawn goes
    on; the user's Slurm access stays as it was until the next sync)."""
    try:
        return sync_account(username, hub_groups, site_groups, marker, logger)
    except (OSError, subprocess.SubprocessError) as exc:
        logger.error("compute site groups of %s not updated: %s", username, exc)
        return []
