"""Who gets in, over the real OIDC flow (browser-like session → IdP login form → hub callback).

Every case ends where it must: admitted users hold a hub session with the right groups and
admin flag; everybody else gets a clear page (4xx, no traceback) and no hub session. Accounts
are added to the IdP's accounts file while it runs (the provider re-reads it).
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urljoin, urlparse

import pytest
import requests
from seckit import ACCESS_TTL, REFRESH_AGE, VO, assert_clean_page, logged_in, login_flow

from cscale_extensions.localstack.oidc import accounts

rel = pytest.mark.reliability


def _me(sec, session_or_token) -> requests.Response:
    if isinstance(session_or_token, str):
        return sec.api(session_or_token).get(sec.url + "hub/api/user", timeout=30)
    return session_or_token.get(sec.url + "hub/api/user", timeout=30)


def _refused(sec, name: str, password: str | None = None) -> requests.Response:
    s, r = login_flow(sec.url, name, password or sec.passwords[name])
    assert_clean_page(r)
    assert r.status_code in (400, 401, 403), f"HTTP {r.status_code} at {r.url}"
    assert not logged_in(s), f"{name} got a hub session"
    assert _me(sec, s).status_code == 403
    return r


@rel(injected="account with no entitlement", expected="403 page naming the VO, no session")
def test_no_entitlement_is_refused(sec):
    sec.add_user("sec-none", [])
    r = _refused(sec, "sec-none")
    assert VO in r.text and "virtual organisation" in r.text


@rel(injected="member of another VO only", expected="403, no session")
def test_other_vo_only_is_refused(sec):
    sec.add_user("sec-othervo", [accounts.entitlement("vo.other.example.org")])
    assert VO in _refused(sec, "sec-othervo").text


@rel(
    injected="entitlement for the hub's VO from the wrong authority (#evil.example.org)",
    expected="403, no session",
)
def test_wrong_authority_is_refused(sec):
    sec.add_user(
        "sec-evilauth",
        [
            accounts.entitlement(VO, authority="evil.example.org"),
            accounts.entitlement(VO, "admin", authority="evil.example.org"),
        ],
    )
    _refused(sec, "sec-evilauth")


@rel(injected="entitlement without authority suffix", expected="403, no session")
def test_entitlement_without_authority_is_refused(sec):
    sec.add_user("sec-noauth", [accounts.entitlement(VO, authority=None)])
    _refused(sec, "sec-noauth")


@rel(injected="VO member", expected="admitted, group = VO, not admin")
def test_member_is_admitted_not_admin(sec):
    sec.member("sec-member")
    me = _me(sec, sec.login("sec-member")).json()
    assert (me["name"], me["groups"], me["admin"]) == ("sec-member", [VO], False)


@rel(injected="VO member with role=admin", expected="admitted as hub admin")
def test_admin_role_gives_admin(sec):
    sec.member("sec-admin", role="admin")
    me = _me(sec, sec.login("sec-admin")).json()
    assert me["admin"] is True and me["groups"] == [VO]


@rel(injected="role=admin in another VO", expected="not admitted (no membership of the hub's VO)")
def test_admin_role_in_other_vo_is_not_admin(sec):
    sec.add_user("sec-otheradmin", [accounts.entitlement("vo.other.example.org", "admin")])
    _refused(sec, "sec-otheradmin")


@rel(injected="disabled account", expected="IdP refuses the sign-in, no hub session")
def test_disabled_account_is_refused(sec):
    sec.member("sec-disabled")
    accounts.disable_account(sec.idp.accounts_file, "sec-disabled")
    r = _refused(sec, "sec-disabled")
    assert "disabled" in r.text


@rel(injected="wrong password", expected="IdP login form again (401), no hub session")
def test_wrong_password_is_refused(sec):
    sec.member("sec-pw")
    r = _refused(sec, "sec-pw", "not-the-password")
    assert "Invalid username or password" in r.text


@rel(
    injected="expired access token with a refresh token; without one (revoked); account disabled "
    "while signed in",
    expected="refreshed and still in; login required and API token "
    "refused (auth_refresh_strict); likewise for the disabled account",
)
def test_expired_access_tokens(sec):
    for name in ("sec-fresh", "sec-stale", "sec-gone"):
        sec.member(name)
    sessions = {n: sec.login(n) for n in ("sec-fresh", "sec-stale", "sec-gone")}
    tokens = {n: sec.token(n) for n in sessions}
    states = {}
    operator = sec.api(sec.admin_token())  # users' own tokens cannot read the auth state
    for n in tokens:
        r = operator.get(sec.url + f"hub/api/users/{n}", timeout=30)
        states[n] = r.json()["auth_state"]
    stale = states["sec-stale"]
    assert stale["refresh_token"], "the IdP gave no refresh token"
    assert sec.idp.revoke(stale["refresh_token"]) == 200
    accounts.disable_account(sec.idp.accounts_file, "sec-gone")
    time.sleep(ACCESS_TTL + REFRESH_AGE + 2)  # every first access token has expired

    # with a refresh token: a new access token, still signed in, the API token works
    assert _me(sec, sessions["sec-fresh"]).status_code == 200
    fresh = sec.api(tokens["sec-fresh"]).get(
        sec.url + "hub/api/cscale/users/sec-fresh/access-token", timeout=30
    )
    assert fresh.status_code == 200, fresh.text
    new_token = fresh.json()["access_token"]
    assert new_token != states["sec-fresh"]["access_token"]
    info = requests.get(
        sec.idp.discovery()["userinfo_endpoint"],
        headers={"Authorization": f"Bearer {new_token}"},
        timeout=10,
    )
    assert info.status_code == 200 and info.json()["preferred_username"] == "sec-fresh"
    home = sessions["sec-fresh"].get(sec.url + "hub/home", timeout=30)
    assert home.status_code == 200 and "/hub/login" not in home.url

    # without a usable refresh token (revoked) or with a disabled account: login required
    for n in ("sec-stale", "sec-gone"):
        r = sessions[n].get(sec.url + "hub/home", timeout=30)
        assert_clean_page(r)
        assert (
            urlparse(r.url).netloc != urlparse(sec.url).netloc
            or "/login" in r.url
            or r.status_code == 403
        ), f"{n} is still in: {r.url}"
        assert sec.api(tokens[n]).get(sec.url + "hub/api/user", timeout=30).status_code == 403, (
            f"the API token of {n} still works with stale auth"
        )
    # the disabled one cannot come back; the revoked one can by logging in again
    assert sec.login("sec-stale")
    _refused(sec, "sec-gone")


@rel(
    injected="VO membership removed at the IdP while signed in",
    expected="next refresh requires login; the new login is refused",
)
def test_leaving_the_vo_ends_access(sec):
    sec.member("sec-leaver")
    s = sec.login("sec-leaver")
    token = sec.token("sec-leaver")
    accounts.set_entitlements(sec.idp.accounts_file, "sec-leaver", [])
    time.sleep(REFRESH_AGE + 2)
    assert sec.api(token).get(sec.url + "hub/api/user", timeout=30).status_code == 403
    r = s.get(sec.url + "hub/home", timeout=30)
    assert_clean_page(r)
    assert "/hub/home" not in r.url or r.status_code == 403
    _refused(sec, "sec-leaver")


# --------------------------------------------------------------------------- OAuth state


@rel(
    injected="callback URL replayed after a completed login (same and other browser)",
    expected="400, no new session, code not redeemable",
)
def test_replayed_callback_is_refused(sec):
    sec.member("sec-replay")
    s, r = login_flow(sec.url, "sec-replay", sec.passwords["sec-replay"])
    callback = next(
        (
            h.headers["Location"]
            for h in [*r.history]
            if "oauth_callback" in h.headers.get("Location", "")
        ),
        None,
    )
    if callback is None:  # login_flow follows by hand: rebuild from the session's history
        s2, cb = login_flow(
            sec.url, "sec-replay", sec.passwords["sec-replay"], stop_at_callback=True
        )
        callback = urljoin(cb.url, cb.headers["Location"])
        done = s2.get(callback, timeout=30)
        assert done.status_code == 200 and logged_in(s2)
        s = s2
    again = s.get(callback, timeout=30)
    assert_clean_page(again)
    assert again.status_code == 400
    thief = requests.Session()
    stolen = thief.get(callback, timeout=30)
    assert_clean_page(stolen)
    assert stolen.status_code == 400 and not logged_in(thief)
    # a thief with a state cookie of their own: mismatched state
    thief.get(sec.url + "hub/oauth_login", timeout=30, allow_redirects=False)
    stolen = thief.get(callback, timeout=30)
    assert stolen.status_code == 400 and not logged_in(thief)


@rel(
    injected="callback with another session's state and code (login CSRF)",
    expected="400 state mismatch; the victim stays logged out; the owner can still finish",
)
def test_callback_with_another_sessions_state(sec):
    sec.member("sec-csrf")
    attacker, cb = login_flow(sec.url, "sec-csrf", sec.passwords["sec-csrf"], stop_at_callback=True)
    callback = urljoin(cb.url, cb.headers["Location"])
    assert parse_qs(urlparse(callback).query).get("state")
    victim = requests.Session()
    victim.get(sec.url + "hub/oauth_login", timeout=30, allow_redirects=False)  # own state cookie
    r = victim.get(callback, timeout=30)
    assert_clean_page(r)
    assert r.status_code == 400 and "state" in r.text.lower()
    assert not logged_in(victim)
    # the code was not spent by the refused callback
    assert attacker.get(callback, timeout=30).status_code == 200 and logged_in(attacker)


# --------------------------------------------------------------------------- cookies


def _tamper_cookie(value: str, other: str | None = None) -> str:
    """Tornado v2 secure cookie ``2|1:0|10:<ts>|<n>:<name>|<n>:<b64 cookie id>|<hmac>``: flip a
    byte of the signature, or put ``other``'s cookie id under this cookie's signature."""
    parts = value.strip('"').split("|")
    if other is None:
        sig = parts[-1]
        parts[-1] = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    else:
        parts[4] = other.strip('"').split("|")[4]
    return "|".join(parts)


@rel(
    injected="hub login cookie with a flipped signature byte / value swapped to an admin",
    expected="treated as logged out (login page, API 403)",
)
def test_forged_hub_cookie_is_refused(sec):
    sec.member("sec-cookie")
    sec.member("sec-admin", role="admin")
    s = sec.login("sec-cookie")
    cookie = next(c for c in s.cookies if c.name == "jupyterhub-hub-login")
    admin = next(c for c in sec.login("sec-admin").cookies if c.name == "jupyterhub-hub-login")
    for forged in (_tamper_cookie(cookie.value), _tamper_cookie(cookie.value, admin.value)):
        assert forged.strip('"') != cookie.value.strip('"')
        f = requests.Session()
        f.cookies.set("jupyterhub-hub-login", forged, domain=cookie.domain, path=cookie.path)
        assert _me(sec, f).status_code == 403
        r = f.get(sec.url + "hub/home", timeout=30)
        assert_clean_page(r)
        assert "/hub/login" in r.url or urlparse(r.url).netloc != urlparse(sec.url).netloc
    assert _me(sec, s).json()["name"] == "sec-cookie"  # the genuine cookie still works


# --------------------------------------------------------------------------- callback errors


def _state_of_new_login(sec) -> tuple[requests.Session, str]:
    s = requests.Session()
    r = s.get(sec.url + "hub/oauth_login", timeout=30, allow_redirects=False)
    return s, parse_qs(urlparse(r.headers["Location"]).query)["state"][0]


@rel(
    injected="callback with a valid state but a bogus code / an IdP error (access_denied) / no code",
    expected="4xx page saying what went wrong, no session, no 500",
)
def test_bad_callbacks_get_clear_pages(sec):
    for params in (
        {"code": "bogus-code"},
        {"error": "access_denied", "error_description": "cancelled"},
        {},
    ):
        s, state = _state_of_new_login(sec)
        r = s.get(sec.url + "hub/oauth_callback", params={**params, "state": state}, timeout=30)
        assert_clean_page(r)
        assert 400 <= r.status_code < 500, f"{params}: HTTP {r.status_code}"
        assert not logged_in(s)


@rel(
    injected="IdP down while the hub redeems the code",
    expected="503 page saying the IdP is unreachable (no traceback), no session; works again once the IdP is back",
)
def test_idp_down_during_login(sec):
    sec.member("sec-idpdown")
    s, cb = login_flow(sec.url, "sec-idpdown", sec.passwords["sec-idpdown"], stop_at_callback=True)
    callback = urljoin(cb.url, cb.headers["Location"])
    sec.idp.supervisor.stop()
    try:
        r = s.get(callback, timeout=60)
        assert r.status_code == 503, f"HTTP {r.status_code}"
        assert "not reachable" in r.text and "Traceback" not in r.text
        assert int(r.headers["Retry-After"]) >= 1
        assert not logged_in(s)
    finally:
        sec.idp.supervisor.start(sec.idp.spec)
    assert sec.login("sec-idpdown")


@rel(
    injected="the IdP's userinfo endpoint answers {param} during a sign-in (token endpoint fine)",
    expected="{param} 500/502: 503 page saying the IdP is unreachable; 401: 403 page asking to "
    "log in again; no traceback, no session; sign-in works once userinfo answers again",
)
@pytest.mark.parametrize("status", [500, 502, 401])
def test_userinfo_failure_during_login(sec, status):
    user = f"sec-userinfo-{status}"
    sec.member(user)
    path = urlparse(sec.idp.discovery()["userinfo_endpoint"]).path
    with sec.idp.front.failing(path, status):
        s, r = login_flow(sec.url, user, sec.passwords[user])
    assert "Traceback" not in r.text
    assert not logged_in(s)
    if status >= 500:
        assert r.status_code == 503, f"HTTP {r.status_code}: {r.text[:300]}"
        assert "not reachable" in r.text
    else:
        assert r.status_code == 403, f"HTTP {r.status_code}: {r.text[:300]}"
        assert "log in again" in r.text
    assert sec.login(user)


@rel(
    injected="IdP down while signed-in users' tokens are due for refresh",
    expected="users stay signed in (auth re-checked when the IdP is back), no 500",
)
def test_idp_down_keeps_signed_in_users(sec):
    sec.member("sec-outage")
    s = sec.login("sec-outage")
    token = sec.token("sec-outage")
    sec.idp.supervisor.stop()
    try:
        time.sleep(REFRESH_AGE + 2)
        r = s.get(sec.url + "hub/home", timeout=60)
        assert_clean_page(r)
        assert r.status_code == 200 and "/hub/home" in r.url
        assert sec.api(token).get(sec.url + "hub/api/user", timeout=60).status_code == 200
    finally:
        sec.idp.supervisor.start(sec.idp.spec)
    time.sleep(REFRESH_AGE + 2)
    assert _me(sec, s).status_code == 200
