"""The compute sites a run may target: ``compute.sites`` as the runs service uses it.

A run (sweep, schedule) names a ``site``; none means the user's default site. A site of kind
``local`` executes runs in the user's ``runs`` server as always; a site of kind ``slurm``
executes them as batch jobs (:mod:`.slurmjobs`). Who may use which site is decided by
:mod:`cscale_extensions.compute` (a member of one of the site's VOs; hub groups are VO names),
the same rule as for Dask clusters; it is checked when a run, sweep, re-run or schedule is
submitted, and a refusal is a 403 (not open to the user's VOs) or 422 (no such site) with a
message that lists the sites the user may use.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cscale_extensions import compute
from cscale_extensions.compute.slurm import SlurmSite

#: seconds added to a run's timeout for its job's walltime (executor start and clean-up)
WALLTIME_MARGIN = 120


class SiteError(ValueError):
    """A site a user may not run on; ``status`` is the HTTP code of the refusal."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Site:
    """One enabled site; ``slurm`` is set for ``kind: slurm``."""

    name: str
    kind: str
    description: str = ""
    #: the longest job (``limits.walltime``, in seconds) of a Slurm site
    walltime: float = 0.0
    slurm: SlurmSite | None = None
    setup: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def job_minutes(self, timeout: float) -> int:
        """The job's walltime (``sbatch --time``, minutes) for a run of ``timeout`` s (0: the
        site's longest)."""
        seconds = min(timeout + WALLTIME_MARGIN, self.walltime) if timeout else self.walltime
        return max(1, math.ceil(seconds / 60))

    def longest_timeout(self) -> float:
        """The longest run timeout that fits the site's walltime (0: no limit of its own)."""
        return max(60.0, self.walltime - WALLTIME_MARGIN) if self.walltime else 0.0


class Sites:
    """The enabled sites of a ``compute`` settings section."""

    def __init__(self, section: dict[str, Any] | None):
        self.cfg = {"compute": section or {"default_site": "", "sites": {}}}
        self.cfg["compute"].setdefault("default_site", "")
        self.all: dict[str, Site] = {}
        for name, entry in compute.sites(self.cfg).items():
            if entry["kind"] == "slurm":
                self.all[name] = Site(
                    name,
                    "slurm",
                    entry["description"],
                    walltime=float(entry["limits"]["walltime"]) * 60,
                    slurm=SlurmSite.from_settings(entry["slurm"]),
                    setup=tuple(entry["slurm"].get("setup") or ()),
                    settings=entry,
                )
            else:
                self.all[name] = Site(name, entry["kind"], entry["description"], settings=entry)

    def get(self, name: str | None) -> Site | None:
        return self.all.get(name) if name else None

    @property
    def batch(self) -> tuple[str, ...]:
        """Names of the sites whose runs are batch jobs."""
        return tuple(n for n, s in self.all.items() if s.slurm is not None)

    @property
    def open_to_all(self) -> bool:
        """Whether every site is open to every user (then nobody's VOs need looking up)."""
        return all(s.settings.get("vos") is None for s in self.all.values())

    def choose(self, name: str | None, groups: Iterable[str]) -> Site | None:
        """The site a member of ``groups`` runs on when asking for ``name`` (None: their
        default); None when no sites are configured (runs execute as they always did)."""
        if not self.all:
            if name in (None, "", "cloud"):
                return None
            raise SiteError(422, f"there is no compute site {name!r} (no compute.sites set)")
        groups = list(groups)
        if not name:
            name = compute.default_site_for(self.cfg, groups)
            if name is None:
                raise SiteError(403, "no compute site is open to your VOs (compute.sites)")
        try:
            compute.check_site(self.cfg, name, groups)
        except compute.SiteRefused as exc:
            raise SiteError(422 if name not in self.all else 403, str(exc)) from None
        site = self.all[name]
        if site.kind not in ("local", "slurm"):
            raise SiteError(
                422, f"the compute site {name!r} is of kind {site.kind!r}, which runs do not use"
            )
        return site

    def describe(self, groups: Iterable[str]) -> list[dict[str, Any]]:
        """The sites a member of ``groups`` may run on (for ``GET /sites``)."""
        if not self.all:
            return []
        out = []
        for entry in compute.describe(self.cfg, groups):
            site = self.all[entry["name"]]
            if site.kind in ("local", "slurm"):
                longest = site.longest_timeout() if site.slurm else None
                out.append({**entry, "max_timeout": longest})
        return out
