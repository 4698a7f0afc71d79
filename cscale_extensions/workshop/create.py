"""``workshop create``: cohort accounts, login sheet, materials, hub group, profile."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cscale_extensions.localstack.oidc import accounts
from cscale_extensions.workshop import materials, sheet
from cscale_extensions.workshop.hubapi import HubAPI
from cscale_extensions.workshop.model import (
    Workshop,
    WorkshopError,
    check_name,
    now,
    parse_time,
    save,
)


def account_names(name: str, n: int, digits: int) -> list[str]:
    if n < 1 or n > 10**digits - 1:
        raise WorkshopError(
            f"--users must be between 1 and {10**digits - 1} (workshop.account_digits={digits})"
        )
    return [f"{name}-{i:0{digits}d}" for i in range(1, n + 1)]


def cohort_entitlements(cfg: dict[str, Any], name: str) -> tuple[str, list[str]]:
    """The VO of the cohort and the entitlements each participant needs: membership of the VO,
    and of the VO subgroup ``<group_prefix><name>`` (with Check-in: ask the VO managers)."""
    a = cfg["auth"]
    vo = a["vos"][0]
    ns, auth = a["entitlement_namespace"], a["entitlement_authority"]
    group = cfg["workshop"]["group_prefix"] + name
    return vo, [
        accounts.entitlement(vo, "member", ns, auth),
        accounts.entitlement(f"{vo}:{group}", "member", ns, auth),
    ]


def create(
    cfg: dict[str, Any],
    directory: Path,
    name: str,
    *,
    n_users: int,
    start: str | None,
    end: str | None,
    materials_source: str | None,
    profile: dict[str, Any],
    embedded: bool,
    accounts_file: Path | None,
    api: HubAPI | None,
    hub_url: str,
    usernames: list[str] | None = None,
) -> tuple[Workshop, dict[str, str]]:
    """Create the workshop; returns it and the generated passwords (embedded provider)."""
    check_name(name)
    start_t, end_t = parse_time(start), parse_time(end)
    if start_t and end_t and end_t <= start_t:
        raise WorkshopError("--end must be after --start")
    if (directory / "workshop.json").exists():
        raise WorkshopError(f"workshop {name!r} already exists in {directory}")
    if (
        materials_source
        and not Path(materials_source).expanduser().is_dir()
        and "://" not in materials_source
    ):
        raise WorkshopError(f"materials {materials_source}: not a directory")
    vo, ents = cohort_entitlements(cfg, name)
    if embedded:
        users = usernames or account_names(name, n_users, cfg["workshop"]["account_digits"])
    else:  # federated: hub usernames are known only from the participants (or after login)
        users = list(usernames or [])
    if embedded:
        existing = {a["username"] for a in accounts.list_accounts(accounts_file)}
        taken = sorted(set(users) & existing)
        if taken:
            raise WorkshopError(f"accounts already exist: {', '.join(taken)}")
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)  # materials/ below must be reachable by every account
    ws = Workshop(
        name=name,
        users=users,
        start=start_t,
        end=end_t,
        vo=vo,
        entitlements=ents,
        group=cfg["workshop"]["group_prefix"] + name,
        profile=profile,
        provider="embedded" if embedded else "federated",
        created=now().isoformat(timespec="seconds"),
    )
    if materials_source:
        ws.materials = materials.install(materials_source, directory / "materials")
    passwords: dict[str, str] = {}
    if embedded:
        for u in users:
            passwords[u] = accounts.add_account(
                accounts_file,
                u,
                name=f"{name} participant {u.rsplit('-', 1)[-1]}",
                entitlements=ents,
            )
        sheet.write(directory, ws, passwords, hub_url)
    save(directory, ws)
    if api is not None:
        api.ensure_users(users)
        api.ensure_group(
            ws.group,
            users,
            {
                "workshop": name,
                "start": start_t,
                "end": end_t,
                "materials": str(directory / "materials") if ws.materials else None,
                "profile": profile,
            },
        )
    return ws, passwords


def describe(ws: Workshop) -> dict[str, Any]:
    return {k: v for k, v in asdict(ws).items() if k not in ("prewarm", "end_report")}
