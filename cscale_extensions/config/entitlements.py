"""Parse AARC-G002 entitlements (``eduperson_entitlement``) into VO memberships and roles.

An EGI Check-in entitlement looks like::

    urn:mace:egi.eu:group:vo.cscale.eu:role=member#aai.egi.eu
    urn:mace:egi.eu:group:vo.cscale.eu:subgroup:role=manager#aai.egi.eu

``<namespace>:<vo>[:<subgroup>…]:role=<role>#<authority>``. Only the VO (the first group
component) and the role matter for admission; subgroup memberships count for their VO.

Admin is narrower: a role held on the VO itself (no subgroup), or an entitlement the operator
listed exactly. Any VO manager can create a subgroup and give themselves or others
``role=admin`` in it, so a role in a subgroup never makes a hub admin.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Entitlement:
    vo: str
    groups: tuple[str, ...]
    role: str
    authority: str | None


def parse(urn: str, namespace: str = "urn:mace:egi.eu:group") -> Entitlement | None:
    """The VO, subgroups, role and authority of ``urn``, or None if it is not a group entitlement."""
    if not isinstance(urn, str):
        return None
    prefix = namespace.rstrip(":") + ":"
    if not urn.startswith(prefix):
        return None
    rest, _, authority = urn[len(prefix) :].partition("#")
    parts = rest.split(":")
    if len(parts) < 2 or not parts[-1].startswith("role="):
        return None
    role = parts[-1][len("role=") :]
    groups = tuple(parts[:-1])
    if not role or not all(groups):
        return None
    return Entitlement(vo=groups[0], groups=groups, role=role, authority=authority or None)


def _valid(
    urns: Iterable[str] | str | None, namespace: str, authority: str | None
) -> Iterator[Entitlement]:
    """The group entitlements among ``urns`` that come from ``authority`` (any when None)."""
    if isinstance(urns, str):
        urns = [urns]
    for urn in urns or ():
        ent = parse(urn, namespace)
        if ent is not None and (authority is None or ent.authority == authority):
            yield ent


def memberships(
    urns: Iterable[str] | str | None,
    *,
    namespace: str = "urn:mace:egi.eu:group",
    authority: str | None = "aai.egi.eu",
) -> dict[str, set[str]]:
    """Map each VO named in ``urns`` to the roles held in it (only from the right authority)."""
    out: dict[str, set[str]] = {}
    for ent in _valid(urns, namespace, authority):
        out.setdefault(ent.vo, set()).add(ent.role)
    return out


def subgroups(
    urns: Iterable[str] | str | None,
    vos: Iterable[str],
    prefixes: Iterable[str],
    *,
    namespace: str = "urn:mace:egi.eu:group",
    authority: str | None = "aai.egi.eu",
) -> set[str]:
    """Names of the subgroups (``<vo>:<subgroup>``, any depth: the last component) of the given
    VOs that start with one of ``prefixes``, from entitlements of the right authority."""
    vos, prefixes = set(vos), tuple(p for p in prefixes if p)
    out: set[str] = set()
    if not prefixes:
        return out
    for ent in _valid(urns, namespace, authority):
        if ent.vo in vos and len(ent.groups) > 1 and ent.groups[-1].startswith(prefixes):
            out.add(ent.groups[-1])
    return out


def admitted_vos(roles_by_vo: dict[str, set[str]], vos: Iterable[str]) -> list[str]:
    """The configured VOs the user is a member of (any role implies membership)."""
    return sorted(vo for vo in vos if roles_by_vo.get(vo))


def vo_roles(
    urns: Iterable[str] | str | None,
    *,
    namespace: str = "urn:mace:egi.eu:group",
    authority: str | None = "aai.egi.eu",
) -> dict[str, set[str]]:
    """Map each VO to the roles held on the VO itself (entitlements naming a subgroup are left
    out), only from the right authority."""
    out: dict[str, set[str]] = {}
    for ent in _valid(urns, namespace, authority):
        if len(ent.groups) == 1:
            out.setdefault(ent.vo, set()).add(ent.role)
    return out


def is_admin(
    urns: Iterable[str] | str | None,
    vos: Iterable[str],
    admin_roles: Iterable[str],
    admin_entitlements: Iterable[str] = (),
    *,
    namespace: str = "urn:mace:egi.eu:group",
    authority: str | None = "aai.egi.eu",
) -> bool:
    """True when ``urns`` hold one of ``admin_roles`` on one of ``vos`` itself (never in a
    subgroup), or contain one of ``admin_entitlements`` exactly (full URNs, authority included)."""
    if isinstance(urns, str):
        urns = [urns]
    urns = [u for u in urns or () if isinstance(u, str)]
    explicit = {e for e in admin_entitlements if e}
    if explicit & set(urns):
        return True
    roles = vo_roles(urns, namespace=namespace, authority=authority)
    admin_roles = set(admin_roles)
    return any(roles.get(vo, set()) & admin_roles for vo in vos)
