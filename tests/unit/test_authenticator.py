"""The authenticator's decisions, with a real CScaleAuthenticator over real HTTP to a scripted
provider (conftest.TinyIdp): who is admitted, who is admin, which hub groups a user gets, and
what a periodic token refresh does to a signed-in user (keep, update, or log out).

Signed-in users are real hub users whose auth state the authenticator itself built from a
token response, as at sign-in. The whole OIDC login over a browser is played at stack level
(tests/security/test_identity.py, test_auth_matrix.py); here every rule is checked alone,
in milliseconds.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tornado import web
from traitlets.config import Config

from cscale_extensions import config
from cscale_extensions.hub import configure_auth
from cscale_extensions.hub.auth import IDENTITY_KEY, CScaleAuthenticator, identity_of

VO = "vo.cscale.eu"
OTHER_VO = "vo.other.eu"


def urn(*groups: str, role: str = "member", authority: str | None = "aai.egi.eu") -> str:
    """An EGI Check-in group entitlement ``urn:mace:egi.eu:group:<groups>:role=<role>#<auth>``."""
    tail = f"#{authority}" if authority else ""
    return f"urn:mace:egi.eu:group:{':'.join(groups)}:role={role}{tail}"


MEMBER = urn(VO)
VO_ADMIN = urn(VO, role="admin")
OPS = urn(VO, "hub-ops")  # listed in admin_entitlements by some tests


def make_auth(base_url: str, **kw: Any) -> CScaleAuthenticator:
    """A real authenticator whose endpoints are ``base_url``'s (no discovery needed)."""
    kw.setdefault("vos", [VO])
    return CScaleAuthenticator(
        authorize_url=base_url + "/authorize",
        token_url=base_url + "/token",
        userdata_url=base_url + "/userinfo",
        username_claim="preferred_username",
        client_id="cscale-hub",
        client_secret="not-a-secret",
        admin_roles=["admin"],
        **kw,
    )


def info(sub: str, name: str, urns: list[str]) -> dict[str, Any]:
    return {"sub": sub, "preferred_username": name, "eduperson_entitlement": urns}


async def signed_in(auth, idp, hub_user, user_info, *, expires_in=3600, access="at-1"):
    """A hub user as a sign-in with ``user_info`` leaves it (token ``access`` is valid)."""
    idp.userinfo[access] = user_info
    token = {
        "access_token": access,
        "token_type": "Bearer",
        "refresh_token": "rt-1",
        "expires_in": expires_in,
    }
    state = await auth.build_auth_state_dict(token, user_info)
    return await hub_user(auth.normalize_username(user_info["preferred_username"]), state)


def fresh_tokens(access: str, refresh: str | None = None) -> tuple[int, dict[str, Any]]:
    """The token endpoint's answer to a successful refresh."""
    doc = {"access_token": access, "token_type": "Bearer", "expires_in": 3600}
    if refresh:
        doc["refresh_token"] = refresh
    return 200, doc


# --------------------------------------------------------------------------- admission


def test_check_allowed_admits_vo_members_admins_and_listed_users_only():
    auth = make_auth("http://127.0.0.1:9", allowed_users={"guest"})

    def allowed(name: str, **model: Any) -> bool:
        return asyncio.run(auth.check_allowed(name, {"name": name, "admin": False, **model}))

    assert allowed("m", groups=[VO])
    assert allowed("m", groups=[OTHER_VO, VO, "workshop-eo1"])
    assert not allowed("o", groups=[OTHER_VO])
    assert not allowed("o", groups=[])
    # a cohort subgroup is a hub group, never a reason to be admitted
    assert not allowed("o", groups=["workshop-eo1"])
    assert allowed("a", groups=[], admin=True)
    assert allowed("guest", groups=[])


def test_refusal_names_the_vos_and_where_to_join():
    auth = make_auth(
        "http://127.0.0.1:9", vos=[VO, "vo.b.eu"], enrollment_url="https://join.example/{vo}"
    )
    msg = auth.custom_403_message
    assert f"'{VO}' or 'vo.b.eu'" in msg
    assert f"https://join.example/{VO}, https://join.example/vo.b.eu" in msg
    plain = make_auth("http://127.0.0.1:9").custom_403_message
    assert "Ask the VO's managers" in plain and "{vo}" not in plain


#: one entitlement: (VO, subgroups, role, authority) — the ways a real or forged one differs
entitlement = st.tuples(
    st.sampled_from([VO, OTHER_VO]),
    st.lists(st.sampled_from(["project-x", "workshop-eo1", "hub-ops"]), max_size=2),
    st.sampled_from(["member", "admin", "manager"]),
    st.sampled_from(["aai.egi.eu", "evil.example.org", None]),
)
_names = itertools.count()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ents=st.lists(entitlement, max_size=5), listed_admin=st.booleans())
def test_refresh_admits_sets_admin_and_groups_as_the_entitlements_say(
    idp, hub_user, ents, listed_admin
):
    """Any mix of real, subgroup and forged entitlements: admitted iff a member of the VO
    from the right authority (or holding a listed admin entitlement), admin iff role=admin
    on the VO itself or the listed entitlement, groups = the VO + its workshop- subgroups."""
    urns = [urn(vo, *groups, role=role, authority=a) for vo, groups, role, a in ents]
    genuine = [e for e in ents if e[3] == "aai.egi.eu" and e[0] == VO]
    want_admin = OPS in urns or any(not g and role == "admin" for _, g, role, _ in genuine)
    want_admitted = bool(genuine) or want_admin
    want_groups = (
        {VO} | {g[-1] for _, g, _, _ in genuine if g and g[-1].startswith("workshop-")}
        if genuine
        else set()
    )
    name = f"user-{next(_names)}"

    async def go():
        auth = make_auth(
            idp.url,
            admin_entitlements=[OPS],
            subgroup_prefixes=["workshop-"],
            admin_users={name} if listed_admin else set(),
        )
        user = await signed_in(auth, idp, hub_user, info(f"sub-{name}", name, urns))
        return await auth.refresh_user(user)

    model = asyncio.run(go())
    if not (want_admitted or listed_admin):
        assert model is False
        return
    assert isinstance(model, dict)
    assert model["admin"] is (want_admin or listed_admin)
    assert set(model["groups"]) == want_groups


# --------------------------------------------------------------------------- refresh


def test_refresh_keeps_a_member_and_asks_the_provider_with_the_current_token(idp, hub_user):
    async def go():
        auth = make_auth(idp.url)
        user = await signed_in(auth, idp, hub_user, info("s1", "Alice", [MEMBER]))
        return user, await auth.refresh_user(user)

    user, model = asyncio.run(go())
    assert user.name == "alice"
    assert model["name"] == "alice" and model["groups"] == [VO] and model["admin"] is False
    assert idp.calls == [("/userinfo", "at-1")]  # far from expiry: no refresh grant


def test_a_user_who_left_the_vo_must_log_in_again(idp, hub_user):
    async def go():
        auth = make_auth(idp.url)
        user = await signed_in(auth, idp, hub_user, info("s1", "bob", [MEMBER]))
        idp.userinfo["at-1"] = info("s1", "bob", [urn(OTHER_VO)])  # the VO removed them
        return await auth.refresh_user(user)

    assert asyncio.run(go()) is False


def test_admin_follows_the_role_at_every_refresh(idp, hub_user):
    async def go():
        auth = make_auth(idp.url)
        user = await signed_in(auth, idp, hub_user, info("s1", "carol", [MEMBER]))
        before = await auth.refresh_user(user)
        idp.userinfo["at-1"] = info("s1", "carol", [MEMBER, VO_ADMIN])
        promoted = await auth.refresh_user(user)
        idp.userinfo["at-1"] = info("s1", "carol", [MEMBER, urn(VO, "sub", role="admin")])
        demoted = await auth.refresh_user(user)
        return before, promoted, demoted

    before, promoted, demoted = asyncio.run(go())
    assert (before["admin"], promoted["admin"], demoted["admin"]) == (False, True, False)


def test_a_token_about_to_expire_is_refreshed_before_userinfo_is_asked(idp, hub_user):
    """Within ``refresh_margin`` of expiry the refresh token is used first, so the access
    token a user server reads from the hub is always usable; a refresh answer without a
    refresh token keeps the current one."""
    idp.refresh["rt-1"] = fresh_tokens("at-2")

    async def go():
        auth = make_auth(idp.url, refresh_margin=600)
        user = await signed_in(auth, idp, hub_user, info("s1", "dan", [MEMBER]), expires_in=30)
        idp.userinfo["at-2"] = idp.userinfo.pop("at-1")
        return await auth.refresh_user(user)

    model = asyncio.run(go())
    assert idp.calls == [("/token", "rt-1"), ("/userinfo", "at-2")]
    state = model["auth_state"]
    assert state["access_token"] == "at-2" and state["refresh_token"] == "rt-1"
    assert state["expires_at"] > time.time() + 3000
    assert identity_of(state) == (idp.url + "/token", "s1")


def test_a_rotated_refresh_token_replaces_the_old_one(idp, hub_user):
    idp.refresh["rt-1"] = fresh_tokens("at-2", refresh="rt-2")

    async def go():
        auth = make_auth(idp.url)
        user = await signed_in(auth, idp, hub_user, info("s1", "erin", [MEMBER]), expires_in=0)
        idp.userinfo["at-2"] = idp.userinfo["at-1"]
        return await auth.refresh_user(user)

    assert asyncio.run(go())["auth_state"]["refresh_token"] == "rt-2"



def test_an_expired_access_token_is_replaced_through_the_refresh_token(idp, hub_user):
    """No expiry recorded (a provider that sends no ``expires_in``): userinfo refuses the old
    token (401), then the refresh token gets a new one."""
    idp.refresh["rt-1"] = fresh_tokens("at-2")

    async def go():
        auth = make_auth(idp.url)
        user = await signed_in(auth, idp, hub_user, info("s1", "fay", [MEMBER]), expires_in=None)
        idp.userinfo["at-2"] = idp.userinfo.pop("at-1")
        return await auth.refresh_user(user)

    model = asyncio.run(go())
    assert model["auth_state"]["access_token"] == "at-2"
    assert idp.calls == [("/userinfo", "at-1"), ("/token", "rt-1"), ("/userinfo", "at-2")]


@pytest.mark.parametrize(
    "expires_in",
    [30, None],
    ids=["proactive", "after-401"],
)
def test_a_refused_refresh_token_means_log_in_again(idp, hub_user, expires_in):
    """Revoked session or disabled account: the token endpoint says invalid_grant."""

    async def go():
        auth = make_auth(idp.url)
        user = await signed_in(
            auth, idp, hub_user, info("s1", "gus", [MEMBER]), expires_in=expires_in
        )
        idp.userinfo.clear()
        return await auth.refresh_user(user)

    assert asyncio.run(go()) is False
    assert ("/token", "rt-1") in idp.calls


def test_refreshed_tokens_of_another_identity_log_the_user_out(idp, hub_user):
    """The provider's answer names another ``sub`` than the one the hub user is bound to."""
    idp.refresh["rt-1"] = fresh_tokens("at-2")

    async def go():
        auth = make_auth(idp.url)
        user = await signed_in(auth, idp, hub_user, info("s1", "hal", [MEMBER]), expires_in=0)
        idp.userinfo["at-2"] = info("s-other", "hal", [MEMBER])
        return user, await auth.refresh_user(user)

    user, model = asyncio.run(go())
    assert model is False
    assert identity_of(asyncio.run(user.get_auth_state())) == (idp.url + "/token", "s1")


@pytest.mark.parametrize(
    "state",
    [None, {IDENTITY_KEY: {"iss": "https://issuer.example", "sub": "s1"}}],
    ids=["no-auth-state", "binding-only"],
)
def test_without_tokens_the_user_logs_in_again_without_asking_the_provider(idp, hub_user, state):
    """``binding-only`` is what an operator leaves to re-bind a user (docs/security.md)."""

    async def go():
        auth = make_auth(idp.url)
        return await auth.refresh_user(await hub_user("ivy", state))

    assert asyncio.run(go()) is False
    assert idp.calls == []


@pytest.mark.parametrize("where", ["token", "userinfo", "nothing-listens"])
def test_while_the_provider_is_down_the_current_sign_in_is_kept(
    idp, hub_user, closed_port_url, where
):
    """A 5xx or no answer at all is not a reason to log everyone out: keep (True), check at
    the next refresh; the stored tokens are untouched."""
    expires = {"token": 30, "userinfo": 3600, "nothing-listens": 30}[where]

    async def go():
        auth = make_auth(idp.url)
        user = await signed_in(auth, idp, hub_user, info("s1", "jo", [MEMBER]), expires_in=expires)
        before = await user.get_auth_state()
        if where == "token":
            idp.token_status = 503
        elif where == "userinfo":
            idp.userinfo_status = 502
        else:
            auth = make_auth(closed_port_url)
        return await auth.refresh_user(user), before, await user.get_auth_state()

    result, before, after = asyncio.run(go())
    assert result is True
    assert after == before


# --------------------------------------------------------------------------- sign-in answers


def _http_error(coro) -> web.HTTPError:
    with pytest.raises(web.HTTPError) as info_:
        asyncio.run(coro)
    return info_.value


def test_refused_or_failing_token_requests_become_clear_pages(idp, closed_port_url):
    code = {"grant_type": "authorization_code", "code": "used-already"}
    refused = _http_error(make_auth(idp.url).get_token_info(None, code))
    assert refused.status_code == 403 and "(invalid_grant)" in refused.log_message
    assert "log in again" in refused.log_message
    idp.token_status = 500
    down = _http_error(make_auth(idp.url).get_token_info(None, code))
    assert down.status_code == 503 and "try again" in down.log_message
    gone = _http_error(make_auth(closed_port_url).get_token_info(None, code))
    assert gone.status_code == 503


def test_userinfo_must_answer_and_be_about_the_verified_subject(idp):
    token = {"access_token": "at-9", "token_type": "Bearer"}
    refused = _http_error(make_auth(idp.url).token_to_user(token))
    assert refused.status_code == 403 and "refused" in refused.log_message
    idp.userinfo["at-9"] = info("s-2", "kim", [MEMBER])
    claims = dict(token, id_token_claims={"sub": "s-1"})
    mismatch = _http_error(make_auth(idp.url).token_to_user(claims))
    assert mismatch.status_code == 403 and "do not match" in mismatch.log_message
    idp.userinfo_status = 503
    assert _http_error(make_auth(idp.url).token_to_user(token)).status_code == 503


# --------------------------------------------------------------------------- hub configuration


def test_hub_configuration_builds_the_authenticator_from_the_settings(idp, hub_user):
    """configure_auth with an issuer: VOs, admins, the workshop subgroup prefix and the
    refresh margin (two checks) from the settings; the endpoints nobody configured come from
    the issuer's discovery document, so a refresh reaches the issuer's userinfo."""
    cfg = config.load(
        None,
        {
            "auth": {"issuer": idp.url, "vos": [VO, "vo.b.eu"], "refresh_age": 400},
            "hub": {"admin_users": ["root-admin"]},
            "workshop": {"group_prefix": "ws-"},
        },
    )
    c = Config()
    configure_auth(c, cfg)
    auth = c.JupyterHub.authenticator_class(config=c)
    assert isinstance(auth, CScaleAuthenticator)
    assert auth.vos == [VO, "vo.b.eu"] and auth.allowed_groups == {VO, "vo.b.eu"}
    assert auth.admin_users == {"root-admin"} and auth.subgroup_prefixes == ["ws-"]
    assert auth.refresh_margin == 800 and auth.enable_auth_state and auth.manage_groups
    assert auth.login_service == "C-SCALE identity provider"

    async def go():
        who = info("s1", "lee", [MEMBER, urn(VO, "ws-2027")])
        user = await signed_in(auth, idp, hub_user, who)
        return await auth.refresh_user(user)

    model = asyncio.run(go())
    assert model["groups"] == sorted([VO, "ws-2027"])
    assert ("/.well-known/openid-configuration", "") in idp.calls
    assert ("/userinfo", "at-1") in idp.calls
    assert (auth.token_url, auth.userdata_url) == (idp.url + "/token", idp.url + "/userinfo")
    assert identity_of(model["auth_state"]) == (idp.url, "s1")
