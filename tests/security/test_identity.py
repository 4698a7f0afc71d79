"""Becoming someone else's hub user, or a hub admin, over the real OIDC flow.

The attacker holds a provider account of their own (own password, own ``sub``) whose name
maps to an existing hub user: a case variant (``EvSec-A`` after ``evsec-a``), or literally
the sanitised + hashed hub name of a user whose name needed hashing (``EvSec.Dot`` →
``evsec-dot-<hash>``). Each hub user is bound to the ``sub`` of its first login, so both are
refused with a clear page, and the victim's session, server and binding stay as they were.
A VO manager's own subgroup admin role does not make a hub admin; the VO's admin role does.
"""

from __future__ import annotations

import pytest
import requests
from seckit import VO, assert_clean_page, logged_in, login_flow

from cscale_extensions.hub.auth import IDENTITY_KEY
from cscale_extensions.localstack.oidc import accounts

rel = pytest.mark.reliability
REFUSAL = "belongs to another identity"


def _me(sec, session: requests.Session) -> requests.Response:
    return session.get(sec.url + "hub/api/user", timeout=30)


def _sub_of(sec, account: str) -> str:
    return next(
        a["sub"] for a in accounts.list_accounts(sec.idp.accounts_file) if a["username"] == account
    )


def _operator(sec) -> requests.Session:
    """The operator's API session (service cscale-admin): reads auth state, starts servers."""
    token = (sec.stack.state_dir / "secrets" / "admin_api_token").read_text().strip()
    return sec.api(token)


def _bound(op: requests.Session, sec, hub_name: str) -> dict | None:
    r = op.get(sec.url + f"hub/api/users/{hub_name}", timeout=30)
    assert r.status_code == 200, r.text
    return (r.json().get("auth_state") or {}).get(IDENTITY_KEY)


def _hub_log(sec) -> str:
    return (sec.stack.state_dir / "logs" / "hub.log").read_text(errors="replace")


def _refused_as_other_identity(sec, account: str, victim: str) -> None:
    s, r = login_flow(sec.url, account, sec.passwords[account])
    assert_clean_page(r)
    assert r.status_code == 403, f"{account} was not refused: HTTP {r.status_code} at {r.url}"
    assert REFUSAL in r.text and "operator" in r.text and victim in r.text
    assert not logged_in(s), f"{account} got a hub session"
    assert _me(sec, s).status_code == 403


@rel(
    injected="provider account EvSec-A (own sub, own password) signs in after hub user evsec-a "
    "exists and runs a server",
    expected="403 'this hub account belongs to another identity', logged; evsec-a's session, "
    "server and sub binding unchanged, evsec-a can still sign in",
)
def test_case_variant_account_cannot_become_the_existing_user(sec):
    op = _operator(sec)
    sec.member("evsec-a")
    victim = sec.login("evsec-a")
    assert _me(sec, victim).json()["name"] == "evsec-a"
    admin_token = op.headers["Authorization"].split()[1]
    sec.stack.start_server(admin_token, "evsec-a")
    bound = _bound(op, sec, "evsec-a")
    assert bound and bound["sub"] == _sub_of(sec, "evsec-a"), bound

    sec.member("EvSec-A")
    assert _sub_of(sec, "EvSec-A") != bound["sub"]
    _refused_as_other_identity(sec, "EvSec-A", "evsec-a")

    me = _me(sec, victim)
    assert me.status_code == 200 and me.json()["name"] == "evsec-a"
    model = op.get(sec.url + "hub/api/users/evsec-a", timeout=30).json()
    assert model["servers"][""]["ready"], model
    assert model["admin"] is False
    assert _bound(op, sec, "evsec-a") == bound
    log = _hub_log(sec)
    assert "Refused a sign-in as hub user evsec-a" in log and bound["sub"] in log
    assert sec.passwords["EvSec-A"] not in log
    # the owner is not locked out
    assert _me(sec, sec.login("evsec-a")).json()["name"] == "evsec-a"


@rel(
    injected="provider account literally named like another user's sanitised+hashed hub name "
    "(EvSec.Dot -> evsec-dot-<hash>)",
    expected="403 'belongs to another identity'; the hashed user's binding unchanged",
)
def test_account_named_like_a_hashed_hub_name_cannot_become_that_user(sec):
    op = _operator(sec)
    sec.member("EvSec.Dot")
    hub_name = _me(sec, sec.login("EvSec.Dot")).json()["name"]
    assert hub_name.startswith("evsec-dot-") and hub_name != "evsec-dot", hub_name
    bound = _bound(op, sec, hub_name)
    assert bound and bound["sub"] == _sub_of(sec, "EvSec.Dot")

    sec.member(hub_name)  # the provider accepts this name: letters, digits and '-'
    _refused_as_other_identity(sec, hub_name, hub_name)
    assert _bound(op, sec, hub_name) == bound
    assert _me(sec, sec.login("EvSec.Dot")).json()["name"] == hub_name


@rel(
    injected="VO member holding role=admin only in a subgroup (vo:project-x:role=admin), which "
    "any VO manager can create",
    expected="admitted (group = VO), not a hub admin; role=admin on the VO itself is admin",
)
def test_subgroup_admin_role_is_not_hub_admin(sec):
    sub_admin = f"urn:mace:egi.eu:group:{VO}:project-x:role=admin#aai.egi.eu"
    sec.add_user("evsec-subadmin", [accounts.entitlement(VO), sub_admin])
    me = _me(sec, sec.login("evsec-subadmin")).json()
    assert (me["name"], me["groups"], me["admin"]) == ("evsec-subadmin", [VO], False)
    # the admin API stays closed to it
    s = sec.login("evsec-subadmin")
    assert s.get(sec.url + "hub/api/users", timeout=30).status_code == 403

    sec.member("evsec-voadmin", role="admin")
    me = _me(sec, sec.login("evsec-voadmin")).json()
    assert me["admin"] is True and me["groups"] == [VO]


@rel(
    injected="the person behind hub user evsec-b gets a new IdP account (EvSec-B, new sub); the "
    "operator re-binds evsec-b to that sub through the admin API (PATCH auth_state)",
    expected="refused before the re-binding; afterwards EvSec-B signs in as evsec-b and the old "
    "account is refused",
)
def test_operator_rebinds_a_hub_user_to_a_new_identity(sec):
    op = _operator(sec)
    sec.member("evsec-b")
    sec.login("evsec-b")
    sec.member("EvSec-B")
    _refused_as_other_identity(sec, "EvSec-B", "evsec-b")

    iss = _bound(op, sec, "evsec-b")["iss"]
    state = {IDENTITY_KEY: {"iss": iss, "sub": _sub_of(sec, "EvSec-B")}}
    r = op.patch(sec.url + "hub/api/users/evsec-b", json={"auth_state": state}, timeout=30)
    assert r.status_code == 200, r.text
    assert _me(sec, sec.login("EvSec-B")).json()["name"] == "evsec-b"
    assert _bound(op, sec, "evsec-b") == state[IDENTITY_KEY]
    _refused_as_other_identity(sec, "evsec-b", "evsec-b")
