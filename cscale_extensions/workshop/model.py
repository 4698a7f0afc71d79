"""A workshop's state: ``<workshops dir>/<name>/workshop.json`` (mode 0600) and its files.

Layout of ``<workshops dir>/<name>/``: ``workshop.json`` (cohort, times, profile, outcome of
prewarm/end), ``materials/`` (read-only for everyone: 0755/0644), ``accounts.csv`` and
``accounts.html`` (passwords; 0600), ``exports/<user>.tar.gz`` (after ``workshop end``).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cscale_extensions.privatefiles import write_json_private

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,23}$")


class WorkshopError(ValueError):
    """Bad input or a state the requested action cannot work from; the message says why."""


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise WorkshopError(
            f"invalid workshop name {name!r}: 1-24 lower-case letters, digits or '-', "
            "starting with a letter (it becomes part of account and group names)"
        )
    return name


def parse_time(text: str | None) -> str | None:
    """An ISO 8601 time (a naive one is UTC) as a normalised UTC ISO string."""
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise WorkshopError(
            f"not an ISO 8601 time: {text!r} (e.g. 2026-11-24T09:00 or …+01:00)"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).isoformat(timespec="seconds")


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Workshop:
    name: str
    users: list[str]
    start: str | None = None
    end: str | None = None
    vo: str = ""
    entitlements: list[str] = field(default_factory=list)
    group: str = ""
    materials: str | None = None
    profile: dict[str, Any] = field(default_factory=dict)
    provider: str = "embedded"
    created: str = ""
    ended: str | None = None
    prewarm: dict[str, dict[str, Any]] = field(default_factory=dict)
    end_report: dict[str, dict[str, Any]] = field(default_factory=dict)

    def end_due(self, at: datetime | None = None) -> bool:
        """True when a scheduled end has passed and the workshop has not ended yet."""
        if self.ended or not self.end:
            return False
        return datetime.fromisoformat(self.end) <= (at or now())


def workshops_dir(cfg: dict[str, Any], data_dir: Path) -> Path:
    configured = cfg.get("workshop", {}).get("dir")
    return Path(configured) if configured else Path(data_dir) / "workshops"


def workshop_dir(cfg: dict[str, Any], data_dir: Path, name: str) -> Path:
    return workshops_dir(cfg, data_dir) / check_name(name)


def save(directory: Path, ws: Workshop) -> None:
    write_json_private(directory / "workshop.json", asdict(ws))


def load(directory: Path) -> Workshop:
    path = directory / "workshop.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise WorkshopError(
            f"no workshop at {directory} (create it with `cscale-hub workshop create`)"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise WorkshopError(f"cannot read {path}: {exc}") from None
    known = Workshop.__dataclass_fields__
    return Workshop(**{k: v for k, v in data.items() if k in known})


def all_workshops(root: Path) -> list[tuple[Path, Workshop]]:
    """Every readable workshop under ``root``."""
    out = []
    for path in sorted(root.glob("*/workshop.json")):
        try:
            out.append((path.parent, load(path.parent)))
        except WorkshopError:
            continue
    return out


def find_user(root: Path, username: str) -> tuple[Path, Workshop] | None:
    """The workshop (not ended) whose cohort includes ``username``."""
    for directory, ws in all_workshops(root):
        if username in ws.users and not ws.ended:
            return directory, ws
    return None
