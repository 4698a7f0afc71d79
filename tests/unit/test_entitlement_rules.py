"""Entitlement rules as properties over generated AARC-G002 URNs (the fixed cases, attacks
included, are in test_entitlements.py and test_identity_rules.py next to this file).

An entitlement the hub cannot read must never admit anyone, and the decision must not depend
on the order or repetition of a user's entitlements (providers send them in any order).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cscale_extensions.config import entitlements as ent

VO = "vo.cscale.eu"
name = st.text(st.sampled_from("abcxyz.-_0189"), min_size=1, max_size=8)
urn_parts = st.tuples(
    st.sampled_from([VO, "vo.other.eu"]) | name,
    st.lists(name, max_size=3),
    st.sampled_from(["member", "admin", "manager"]) | name,
    st.sampled_from(["aai.egi.eu", "evil.example.org", None]),
)


def urn(vo: str, groups: list[str], role: str, authority: str | None) -> str:
    tail = f"#{authority}" if authority else ""
    return f"urn:mace:egi.eu:group:{':'.join([vo, *groups])}:role={role}{tail}"


@settings(max_examples=100, deadline=None)
@given(parts=urn_parts)
def test_a_well_formed_entitlement_parses_into_its_parts(parts):
    vo, groups, role, authority = parts
    e = ent.parse(urn(*parts))
    assert (e.vo, e.groups, e.role, e.authority) == (vo, (vo, *groups), role, authority)


@settings(max_examples=120, deadline=None)
@given(
    text=st.text(max_size=60)
    | st.builds(lambda p, s: p + s, st.just("urn:mace:egi.eu:group:"), st.text(max_size=30))
)
def test_any_string_either_parses_or_is_ignored_never_raises(text):
    e = ent.parse(text)
    if e is not None:
        assert e.vo and e.role and all(e.groups) and e.groups[0] == e.vo
        assert text.startswith("urn:mace:egi.eu:group:" + e.vo)
    assert ent.memberships([text], authority=None) == ({e.vo: {e.role}} if e else {})


@settings(max_examples=100, deadline=None)
@given(ents=st.lists(urn_parts, max_size=6), data=st.data())
def test_decisions_do_not_depend_on_order_or_repetition(ents, data):
    urns = [urn(*p) for p in ents]
    shuffled = data.draw(st.permutations(urns + urns[: len(urns) // 2]))
    for fn in (ent.memberships, ent.vo_roles):
        assert fn(urns) == fn(shuffled)
    assert ent.is_admin(urns, [VO], ["admin"]) == ent.is_admin(shuffled, [VO], ["admin"])
    assert ent.subgroups(urns, [VO], ["x"]) == ent.subgroups(shuffled, [VO], ["x"])


@settings(max_examples=100, deadline=None)
@given(ents=st.lists(urn_parts, max_size=6))
def test_admin_implies_membership_and_only_the_right_authority_counts(ents):
    urns = [urn(*p) for p in ents]
    genuine = [urn(*p) for p in ents if p[3] == "aai.egi.eu"]
    roles = ent.memberships(urns)
    assert roles == ent.memberships(genuine)  # forged or authority-less ones add nothing
    if ent.is_admin(urns, [VO], ["admin"]):
        assert ent.admitted_vos(roles, [VO]) == [VO]
    for vo, on_vo in ent.vo_roles(urns).items():
        assert on_vo <= roles[vo]  # roles on the VO itself are among its memberships
