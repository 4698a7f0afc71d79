"""Entitlement URNs → VO membership, hub groups and admin; safe POSIX usernames."""

from __future__ import annotations

import pytest

import cscale_extensions.config.entitlements as ent
from cscale_extensions.hub.auth import posix_username

MEMBER = "urn:mace:egi.eu:group:vo.cscale.eu:role=member#aai.egi.eu"
ADMIN = "urn:mace:egi.eu:group:vo.cscale.eu:role=admin#aai.egi.eu"
SUBGROUP = "urn:mace:egi.eu:group:vo.cscale.eu:eodc:role=member#aai.egi.eu"
OTHER = "urn:mace:egi.eu:group:vo.other.eu:role=member#aai.egi.eu"


def test_parse_member_and_subgroup():
    e = ent.parse(SUBGROUP)
    assert (e.vo, e.groups, e.role, e.authority) == ("vo.cscale.eu", ("vo.cscale.eu", "eodc"), "member", "aai.egi.eu")


@pytest.mark.parametrize("urn", [
    "urn:mace:egi.eu:group:vo.cscale.eu#aai.egi.eu",  # no role
    "urn:mace:other:group:vo.cscale.eu:role=member#aai.egi.eu",  # other namespace
    "urn:mace:egi.eu:group::role=member#aai.egi.eu",  # empty VO
    "urn:mace:egi.eu:group:vo.cscale.eu:role=#aai.egi.eu",  # empty role
    42,
])
def test_non_entitlements_are_ignored(urn):
    assert ent.parse(urn) is None


def test_memberships_require_the_authority():
    forged = "urn:mace:egi.eu:group:vo.cscale.eu:role=admin#evil.example.org"
    assert ent.memberships([forged]) == {}
    assert ent.memberships([forged], authority=None) == {"vo.cscale.eu": {"admin"}}


def test_vo_mapping_and_admin():
    roles = ent.memberships([MEMBER, ADMIN, OTHER])
    assert ent.admitted_vos(roles, ["vo.cscale.eu"]) == ["vo.cscale.eu"]
    assert ent.is_admin([MEMBER, ADMIN, OTHER], ["vo.cscale.eu"], ["admin"])
    assert not ent.is_admin([MEMBER], ["vo.cscale.eu"], ["admin"])
    # an admin role in a VO the hub does not serve grants nothing
    other_admin = "urn:mace:egi.eu:group:vo.other.eu:role=admin#aai.egi.eu"
    assert not ent.is_admin([other_admin], ["vo.cscale.eu"], ["admin"])
    assert ent.admitted_vos(ent.memberships([OTHER]), ["vo.cscale.eu"]) == []
    assert ent.memberships(MEMBER) == {"vo.cscale.eu": {"member"}}  # a single string claim
    assert ent.is_admin(ADMIN, ["vo.cscale.eu"], ["admin"])  # a single string claim


@pytest.mark.parametrize(("name", "expected"), [("demo-member", "demo-member"), ("Alice", "alice")])
def test_safe_usernames_stay(name, expected):
    assert posix_username(name) == expected


@pytest.mark.parametrize("name", [
    "0123456789abcdef@egi.eu", "ünïcode user", "a" * 40, "../etc", "-rf",
])
def test_unsafe_usernames_become_safe_and_distinct(name):
    out = posix_username(name)
    assert out[0].isalpha() and len(out) <= 32
    assert all(ch.isalnum() or ch in "-_" for ch in out)
    assert posix_username(name) == out  # deterministic
    assert posix_username(name + "x") != out


def test_subgroups_with_a_prefix_of_admitted_vos_only():
    urns = [
        "urn:mace:egi.eu:group:vo.cscale.eu:workshop-eo101:role=member#aai.egi.eu",
        "urn:mace:egi.eu:group:vo.cscale.eu:sub:workshop-deep:role=member#aai.egi.eu",
        "urn:mace:egi.eu:group:vo.cscale.eu:analysts:role=member#aai.egi.eu",  # no prefix
        "urn:mace:egi.eu:group:other.vo:workshop-x:role=member#aai.egi.eu",  # VO not admitted
        "urn:mace:egi.eu:group:vo.cscale.eu:workshop-forged:role=member#evil.example",
        "urn:mace:egi.eu:group:vo.cscale.eu:role=member#aai.egi.eu",  # the VO itself
    ]
    got = ent.subgroups(urns, ["vo.cscale.eu"], ["workshop-"])
    assert got == {"workshop-eo101", "workshop-deep"}
    assert ent.subgroups(urns, ["vo.cscale.eu"], []) == set()
