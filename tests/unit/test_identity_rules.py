"""Who a sign-in is and whether it is an admin, decided without a stack (pure rules).

Attacks covered here at the level of the rules (tests/security/test_identity.py plays them
over the real OIDC flow): a VO manager making themselves hub admin through a subgroup role;
a provider account whose name is a case variant of another user's, or literally the
sanitised + hashed form of another user's name, mapping to that user's hub account.
"""

from __future__ import annotations

import asyncio

import pytest

import cscale_extensions.config.entitlements as ent
from cscale_extensions.hub.auth import (
    IDENTITY_KEY,
    CScaleAuthenticator,
    identity_conflict,
    identity_of,
    identity_refusal,
    posix_username,
)

VO = "vo.cscale.eu"
MEMBER = f"urn:mace:egi.eu:group:{VO}:role=member#aai.egi.eu"
VO_ADMIN = f"urn:mace:egi.eu:group:{VO}:role=admin#aai.egi.eu"
SUB_ADMIN = f"urn:mace:egi.eu:group:{VO}:project-x:role=admin#aai.egi.eu"
DEEP_ADMIN = f"urn:mace:egi.eu:group:{VO}:project-x:inner:role=admin#aai.egi.eu"
SUB_MEMBER = f"urn:mace:egi.eu:group:{VO}:project-x:role=member#aai.egi.eu"
OPS = f"urn:mace:egi.eu:group:{VO}:hub-ops:role=member#aai.egi.eu"


# --------------------------------------------------------------------------- admin


@pytest.mark.parametrize("urns", [[MEMBER, SUB_ADMIN], [SUB_ADMIN], [MEMBER, DEEP_ADMIN]])
def test_admin_role_in_a_subgroup_is_not_hub_admin(urns):
    """Attack: a VO manager creates subgroup project-x and gives themselves role=admin in it."""
    assert not ent.is_admin(urns, [VO], ["admin"])


def test_subgroup_member_is_still_a_vo_member():
    roles = ent.memberships([SUB_MEMBER])
    assert ent.admitted_vos(roles, [VO]) == [VO]
    assert ent.admitted_vos(ent.memberships([SUB_ADMIN]), [VO]) == [VO]


def test_admin_role_on_the_vo_itself_is_hub_admin():
    assert ent.is_admin([MEMBER, VO_ADMIN], [VO], ["admin"])
    assert ent.is_admin([VO_ADMIN], [VO], ["manager", "admin"])
    assert not ent.is_admin([VO_ADMIN], [VO], ["manager"])


def test_vo_roles_leave_subgroups_out():
    assert ent.vo_roles([MEMBER, SUB_ADMIN, DEEP_ADMIN]) == {VO: {"member"}}
    assert ent.vo_roles(VO_ADMIN) == {VO: {"admin"}}


@pytest.mark.parametrize(
    "forged",
    [
        f"urn:mace:egi.eu:group:{VO}:role=admin#evil.example.org",  # wrong authority
        f"urn:mace:egi.eu:group:{VO}:role=admin",  # no authority
        "urn:mace:egi.eu:group:vo.other.eu:role=admin#aai.egi.eu",  # a VO the hub does not serve
        f"urn:mace:other:group:{VO}:role=admin#aai.egi.eu",  # another namespace
    ],
)
def test_forged_or_foreign_admin_roles_grant_nothing(forged):
    assert not ent.is_admin([MEMBER, forged], [VO], ["admin"])


def test_explicit_admin_entitlements_match_exactly():
    assert ent.is_admin([MEMBER, OPS], [VO], ["admin"], [OPS])
    # the same subgroup role with another authority, or a prefix of it, is not the listed one
    assert not ent.is_admin([OPS.replace("#aai.egi.eu", "#evil.example.org")], [VO], [], [OPS])
    assert not ent.is_admin([OPS.split("#")[0]], [VO], [], [OPS])
    assert not ent.is_admin([SUB_ADMIN], [VO], ["admin"], [OPS])
    assert not ent.is_admin([MEMBER], [VO], ["admin"], [""])


def _auth(**kw) -> CScaleAuthenticator:
    """A real authenticator; endpoints given, so that nothing fetches a discovery document."""
    endpoints = {k: f"https://issuer.example.org/{k}" for k in ("authorize_url", "token_url")}
    endpoints["userdata_url"] = "https://issuer.example.org/userinfo"
    return CScaleAuthenticator(vos=[VO], admin_roles=["admin"], **endpoints, **kw)


def _model(urns: list[str], name: str = "x") -> dict:
    return {
        "name": name,
        "admin": None,
        "auth_state": {"oauth_user": {"eduperson_entitlement": urns}},
    }


def test_authenticator_admin_only_from_the_vo_itself_or_the_explicit_list():
    auth = _auth(admin_entitlements=[OPS])
    run = asyncio.run
    assert run(auth.update_auth_model(_model([MEMBER, SUB_ADMIN])))["admin"] is False
    assert run(auth.update_auth_model(_model([MEMBER, VO_ADMIN])))["admin"] is True
    assert run(auth.update_auth_model(_model([MEMBER, OPS])))["admin"] is True
    # a user listed in hub.admin_users stays admin whatever the entitlements
    listed = _model([MEMBER]) | {"admin": True}
    assert run(auth.update_auth_model(listed))["admin"] is True


# --------------------------------------------------------------------------- usernames


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("EvSec-A", "evsec-a"),
        ("EvSec.Dot", "evsec.dot"),  # hashed form: the hash is of the case-folded name
        ("0123ABC@EGI.EU", "0123abc@egi.eu"),
        ("Straße", "STRASSE"),  # case folding, not only lower()
    ],
)
def test_case_variants_are_one_hub_user(a, b):
    assert posix_username(a) == posix_username(b)


def test_posix_username_is_idempotent_and_the_hashed_form_is_a_valid_literal_name():
    """The hashed form of ``EvSec.Dot`` is itself a safe name: an account literally named so
    maps to the same hub user; only the identity binding keeps the two apart."""
    hashed = posix_username("EvSec.Dot")
    assert hashed.startswith("evsec-dot-") and hashed != "evsec-dot"
    assert posix_username(hashed) == hashed
    for name in ("EvSec-A", "0123456789abcdef@egi.eu", "ünïcode user", "a" * 40):
        assert posix_username(posix_username(name)) == posix_username(name)


def test_distinct_names_stay_distinct():
    assert posix_username("EvSec.Dot") != posix_username("evsec-dot")
    assert posix_username("evsec.dot") != posix_username("evsec_dot")


# --------------------------------------------------------------------------- identity binding


ISS = "https://issuer.example.org"


def _state(sub: str, iss: str = ISS) -> dict:
    return {IDENTITY_KEY: {"iss": iss, "sub": sub}}


def test_unbound_user_takes_the_first_identity():
    assert identity_of(None) is None and identity_of({}) is None
    assert identity_of({"access_token": "t"}) is None  # auth state from before the binding
    assert not identity_conflict(None, (ISS, "sub-1"))


def test_bound_user_refuses_another_sub_or_issuer():
    bound = identity_of(_state("sub-1"))
    assert bound == (ISS, "sub-1")
    assert not identity_conflict(bound, (ISS, "sub-1"))
    assert identity_conflict(bound, (ISS, "sub-2"))
    assert identity_conflict(bound, ("https://other.example.org", "sub-1"))
    assert identity_conflict(bound, None)


def test_refusal_page_text_is_clear():
    text = identity_refusal("evsec-a")
    assert "evsec-a" in text and "belongs to another identity" in text
    assert "ask the operator" in text


def test_auth_state_records_issuer_and_sub():
    auth = _auth(oidc_issuer=ISS + "/")
    token = {"access_token": "a", "token_type": "Bearer", "expires_in": 60}
    state = asyncio.run(
        auth.build_auth_state_dict(token, {"sub": "s-1", "preferred_username": "u"})
    )
    assert identity_of(state) == (ISS, "s-1")


def test_userinfo_without_sub_is_refused():
    from tornado import web

    auth = _auth(oidc_issuer=ISS)
    with pytest.raises(web.HTTPError) as info:
        asyncio.run(auth.build_auth_state_dict({"access_token": "a"}, {"preferred_username": "u"}))
    assert info.value.status_code == 403
