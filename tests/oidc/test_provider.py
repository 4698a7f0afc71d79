"""The embedded OIDC provider over real HTTP: the node process started on a free port."""

from __future__ import annotations

import json

import jwt
import pytest
import requests

from cscale_extensions import config as settings
from cscale_extensions.localstack.oidc import accounts, embedded
from cscale_extensions.privatefiles import write_json_private

MEMBER_URN = accounts.entitlement("vo.cscale.eu")
ADMIN_URN = accounts.entitlement("vo.cscale.eu", "admin")


@pytest.fixture(scope="module")
def creds(provider) -> dict[str, str]:
    return json.loads((provider.accounts_file.parent / "demo-credentials.json").read_text())


def _tokens(provider, oidc, username: str, password: str) -> dict:
    result = oidc.login(provider, username, password)
    assert result.code, result.last.text[:500]
    r = oidc.exchange(provider, result.code, result.verifier)
    assert r.status_code == 200, r.text
    return r.json()


def test_discovery_lists_endpoints_and_s256(provider):
    doc = provider.discovery()
    assert doc["issuer"] == provider.issuer
    for key in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"):
        assert doc[key].startswith(provider.issuer + "/")
    assert doc["end_session_endpoint"].startswith(provider.issuer + "/")
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert {"client_secret_post", "client_secret_basic"} <= set(
        doc["token_endpoint_auth_methods_supported"]
    )
    assert {"openid", "profile", "email", "eduperson_entitlement", "offline_access"} <= set(
        doc["scopes_supported"]
    )
    assert "eduperson_entitlement" in doc["claims_supported"]
    assert "refresh_token" in doc["grant_types_supported"]


def test_login_page_is_ours(provider, oidc):
    result = oidc.login(provider, "nobody", "x")
    page = result.last
    assert "C-SCALE Hub — sign in (embedded identity provider)" in page.text
    forms = oidc.parse_forms(page.text)
    assert any({"username", "password"} <= set(f["inputs"]) for f in forms)


def test_code_flow_with_pkce_gives_userinfo_with_entitlements(provider, oidc, creds):
    result = oidc.login(provider, "demo-member", creds["demo-member"])
    assert result.code and result.state_ok
    r = oidc.exchange(provider, result.code, result.verifier)
    assert r.status_code == 200, r.text
    tokens = r.json()
    assert tokens["token_type"].lower() == "bearer"
    assert {"access_token", "id_token", "refresh_token"} <= set(tokens)

    info = oidc.userinfo(provider, tokens["access_token"])
    assert info.status_code == 200, info.text
    claims = info.json()
    assert claims["preferred_username"] == "demo-member"
    assert claims["eduperson_entitlement"] == [MEMBER_URN]
    assert claims["email"] == "demo-member@example.org" and claims["email_verified"] is True
    assert claims["name"] == "Demo Member"
    assert claims["given_name"] == "Demo" and claims["family_name"] == "Member"

    # the ID token is signed with a key from the provider's JWKS, for our client and this issuer
    jwks = jwt.PyJWKClient(provider.discovery()["jwks_uri"])
    key = jwks.get_signing_key_from_jwt(tokens["id_token"])
    idt = jwt.decode(
        tokens["id_token"],
        key.key,
        algorithms=["RS256"],
        audience=provider.client_id,
        issuer=provider.issuer,
    )
    assert idt["sub"] == claims["sub"]


def test_code_cannot_be_redeemed_twice(provider, oidc, creds):
    result = oidc.login(provider, "demo-member", creds["demo-member"])
    assert oidc.exchange(provider, result.code, result.verifier).status_code == 200
    again = oidc.exchange(provider, result.code, result.verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_admin_gets_admin_entitlement_and_outsider_only_other_vo(provider, oidc, creds):
    admin = _tokens(provider, oidc, "demo-admin", creds["demo-admin"])
    ents = oidc.userinfo(provider, admin["access_token"]).json()["eduperson_entitlement"]
    assert sorted(ents) == sorted([MEMBER_URN, ADMIN_URN])
    outsider = _tokens(provider, oidc, "demo-outsider", creds["demo-outsider"])
    ents = oidc.userinfo(provider, outsider["access_token"]).json()["eduperson_entitlement"]
    assert ents and not any(":vo.cscale.eu:" in e for e in ents)


def test_refresh_token_yields_new_working_access_token(provider, oidc, creds):
    tokens = _tokens(provider, oidc, "demo-member", creds["demo-member"])
    token_url = provider.discovery()["token_endpoint"]
    r = requests.post(
        token_url,
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=(provider.client_id, provider.client_secret),
        timeout=10,
    )
    assert r.status_code == 200, r.text
    fresh = r.json()
    assert fresh["access_token"] != tokens["access_token"]
    info = oidc.userinfo(provider, fresh["access_token"])
    assert info.status_code == 200 and info.json()["preferred_username"] == "demo-member"
    # refresh tokens are not rotated: the same one keeps working
    again = requests.post(
        token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": provider.client_id,
            "client_secret": provider.client_secret,
        },
        timeout=10,
    )
    assert again.status_code == 200, again.text


def test_refresh_token_issued_without_offline_access(provider, oidc, creds):
    result = oidc.login(
        provider, "demo-member", creds["demo-member"], scope="openid profile eduperson_entitlement"
    )
    tokens = oidc.exchange(provider, result.code, result.verifier).json()
    assert tokens.get("refresh_token")


def test_explicit_consent_prompt_is_granted_for_first_party_client(provider, oidc, creds):
    result = oidc.login(
        provider, "demo-member", creds["demo-member"], extra={"prompt": "login consent"}
    )
    assert result.code, result.last.text[:300]
    tokens = oidc.exchange(provider, result.code, result.verifier).json()
    assert "offline_access" in tokens["scope"].split() and tokens["refresh_token"]
    claims = oidc.userinfo(provider, tokens["access_token"]).json()
    assert claims["eduperson_entitlement"] == [MEMBER_URN]


def test_cancel_returns_access_denied(provider, oidc):
    result = oidc.login(provider, "", "", action="abort")
    assert result.code is None and result.error == "access_denied" and result.state_ok


def test_client_secret_basic_is_accepted(provider, oidc, creds):
    result = oidc.login(provider, "demo-member", creds["demo-member"])
    r = oidc.exchange(provider, result.code, result.verifier, basic=True)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("basic", [False, True], ids=["post", "basic"])
def test_wrong_client_secret_is_refused(provider, oidc, creds, basic):
    result = oidc.login(provider, "demo-member", creds["demo-member"])
    bad = oidc.exchange(
        provider, result.code, result.verifier, secret="not-the-secret", basic=basic
    )
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    assert "access_token" not in bad.json()
    # the refusal was the secret's fault: the same code still works with the right one
    assert oidc.exchange(provider, result.code, result.verifier, basic=basic).status_code == 200


def test_wrong_pkce_verifier_is_refused(provider, oidc, creds):
    result = oidc.login(provider, "demo-member", creds["demo-member"])
    other_verifier, _ = oidc.pkce_pair()
    r = oidc.exchange(provider, result.code, other_verifier)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_authorization_without_pkce_is_refused(provider, oidc):
    r = requests.get(
        provider.discovery()["authorization_endpoint"],
        params={
            "response_type": "code",
            "client_id": provider.client_id,
            "redirect_uri": provider.redirect_uri,
            "scope": "openid",
            "state": "s",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code in (302, 303)
    assert "error=invalid_request" in r.headers["Location"]
    assert "code=" not in r.headers["Location"]


def test_unknown_redirect_uri_gets_error_page_not_redirect(provider):
    r = requests.get(
        provider.discovery()["authorization_endpoint"],
        params={
            "response_type": "code",
            "client_id": provider.client_id,
            "redirect_uri": "http://evil.example/cb",
            "scope": "openid",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 400
    assert "redirect_uri" in r.text and "Traceback" not in r.text and " at " not in r.text


@pytest.mark.parametrize("username", ["demo-member", "no-such-user"])
def test_wrong_password_is_refused_without_code(provider, oidc, username):
    result = oidc.login(provider, username, "definitely-wrong")
    assert result.code is None
    assert result.last.status_code == 401
    assert "Invalid username or password" in result.last.text
    # the form comes back with the username kept and a password field to retry
    forms = oidc.parse_forms(result.last.text)
    assert forms[0]["inputs"]["username"] == username


def test_login_page_escapes_what_it_echoes(provider, oidc):
    result = oidc.login(provider, '"><script>alert(1)</script>', "x")
    assert result.code is None
    assert "<script>alert(1)</script>" not in result.last.text
    assert "&#60;script&#62;" in result.last.text


def test_disabled_account_is_refused(provider, oidc):
    pw = accounts.add_account(
        provider.accounts_file,
        "off-user",
        name="Off User",
        entitlements=[MEMBER_URN],
        disabled=True,
    )
    result = oidc.login(provider, "off-user", pw)
    assert result.code is None
    assert result.last.status_code == 403
    assert "disabled" in result.last.text
    # a wrong password for a disabled account says nothing about the account
    wrong = oidc.login(provider, "off-user", "wrong")
    assert wrong.last.status_code == 401 and "disabled" not in wrong.last.text


def test_disabling_a_signed_in_account_stops_userinfo_and_refresh(provider, oidc):
    pw = accounts.add_account(provider.accounts_file, "soon-off", entitlements=[MEMBER_URN])
    tokens = _tokens(provider, oidc, "soon-off", pw)
    assert oidc.userinfo(provider, tokens["access_token"]).status_code == 200
    accounts.disable_account(provider.accounts_file, "soon-off")
    assert oidc.userinfo(provider, tokens["access_token"]).status_code == 401
    r = requests.post(
        provider.discovery()["token_endpoint"],
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=(provider.client_id, provider.client_secret),
        timeout=10,
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_account_added_while_running_can_log_in(provider, oidc):
    """Also checks that node verifies a password hash made by Python."""
    urn = accounts.entitlement("vo.cscale.eu")
    pw = accounts.add_account(
        provider.accounts_file, "late-comer", "p@ss wörd ✓", name="Late", entitlements=[urn]
    )
    assert pw == "p@ss wörd ✓"
    tokens = _tokens(provider, oidc, "late-comer", pw)
    claims = oidc.userinfo(provider, tokens["access_token"]).json()
    assert claims["preferred_username"] == "late-comer"
    assert claims["eduperson_entitlement"] == [urn]


def test_password_change_takes_effect(provider, oidc):
    old = accounts.add_account(provider.accounts_file, "changer", entitlements=[MEMBER_URN])
    new = accounts.set_password(provider.accounts_file, "changer")
    assert new != old
    assert oidc.login(provider, "changer", old).code is None
    assert oidc.login(provider, "changer", new).code


def test_sign_in_is_remembered_for_the_next_authorization(provider, oidc, creds):
    s = requests.Session()
    assert oidc.login(provider, "demo-member", creds["demo-member"], session=s).code
    # same browser: no password asked (the password given here is wrong on purpose)
    again = oidc.login(provider, "demo-member", "unused", session=s)
    assert again.code


def test_end_session_shows_our_sign_out_page(provider, oidc, creds):
    s = requests.Session()
    assert oidc.login(provider, "demo-member", creds["demo-member"], session=s).code
    r = s.get(provider.discovery()["end_session_endpoint"], timeout=10)
    assert r.status_code == 200 and "Sign out" in r.text
    form = oidc.parse_forms(r.text)[0]
    done = s.post(
        requests.compat.urljoin(r.url, form["action"]),
        data={**form["inputs"], "logout": "yes"},
        timeout=10,
    )
    assert done.status_code == 200 and "signed out" in done.text
    # signed out: the next authorization asks for the password again
    assert oidc.login(provider, "demo-member", "wrong", session=s).code is None


def test_bad_interaction_gets_a_clear_page(provider):
    r = requests.get(f"{provider.issuer}/interaction/doesnotexist", timeout=10)
    assert r.status_code == 400 and "expired" in r.text
    r = requests.post(
        f"{provider.issuer}/interaction/doesnotexist/login", data={"username": "x"}, timeout=10
    )
    assert r.status_code == 400 and "Traceback" not in r.text


def test_tokens_and_signing_key_survive_a_restart(tmp_path, oidc):
    p = oidc.start_provider(tmp_path / "data", tmp_path / "logs")
    try:
        pw = accounts.add_account(p.accounts_file, "stayer", entitlements=[MEMBER_URN])
        tokens = _tokens(p, oidc, "stayer", pw)
        kids = [
            k["kid"] for k in requests.get(p.discovery()["jwks_uri"], timeout=10).json()["keys"]
        ]
        p.restart()
        assert [
            k["kid"] for k in requests.get(p.discovery()["jwks_uri"], timeout=10).json()["keys"]
        ] == kids
        assert oidc.userinfo(p, tokens["access_token"]).status_code == 200
        r = requests.post(
            p.discovery()["token_endpoint"],
            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
            auth=(p.client_id, p.client_secret),
            timeout=10,
        )
        assert r.status_code == 200, r.text
    finally:
        p.supervisor.stop()
    # the next start on the same data dir reuses the port, so the issuer stays the same
    _, issuer = embedded.provider_process(
        settings.defaults(), tmp_path / "data", client_secret="x", redirect_uri=p.redirect_uri
    )
    assert issuer == p.issuer


def test_broken_accounts_file_keeps_the_last_good_accounts(provider, oidc, creds):
    good = provider.accounts_file.read_text()
    try:
        provider.accounts_file.write_text('{"accounts": ')  # e.g. a bad hand edit
        assert oidc.login(provider, "demo-member", creds["demo-member"]).code
    finally:
        write_json_private(provider.accounts_file, json.loads(good))
    assert oidc.login(provider, "demo-member", creds["demo-member"]).code


def test_end_session_redirects_back_to_the_hub(provider, oidc, creds):
    s = requests.Session()
    assert oidc.login(provider, "demo-member", creds["demo-member"], session=s).code
    back = provider.redirect_uri.rsplit("/", 1)[0] + "/"  # http://127.0.0.1:9/hub/
    r = s.get(
        provider.discovery()["end_session_endpoint"],
        params={"client_id": provider.client_id, "post_logout_redirect_uri": back, "state": "st"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    form = oidc.parse_forms(r.text)[0]
    done = s.post(
        requests.compat.urljoin(r.url, form["action"]),
        data={**form["inputs"], "logout": "yes"},
        allow_redirects=False,
        timeout=10,
    )
    assert done.status_code in (302, 303)
    assert done.headers["Location"].startswith(back) and "state=st" in done.headers["Location"]


def test_unregistered_post_logout_uri_is_refused(provider):
    r = requests.get(
        provider.discovery()["end_session_endpoint"],
        params={
            "client_id": provider.client_id,
            "post_logout_redirect_uri": "http://evil.example/",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 400 and "evil.example" not in r.headers.get("Location", "")


def test_revoked_refresh_token_stops_working(provider, oidc, creds):
    tokens = _tokens(provider, oidc, "demo-member", creds["demo-member"])
    doc = provider.discovery()
    auth = (provider.client_id, provider.client_secret)
    r = requests.post(
        doc["revocation_endpoint"],
        data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
        auth=auth,
        timeout=10,
    )
    assert r.status_code == 200
    r = requests.post(
        doc["token_endpoint"],
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=auth,
        timeout=10,
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
