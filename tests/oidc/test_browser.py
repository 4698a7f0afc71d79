"""The login page in a real browser (headless Chromium): cookies, form posting and redirects."""

from __future__ import annotations

import json
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
]


def _authorize_url(provider, oidc) -> tuple[str, str]:
    _, challenge = oidc.pkce_pair()
    state = secrets.token_urlsafe(8)
    query = urlencode(
        {
            "response_type": "code",
            "client_id": provider.client_id,
            "redirect_uri": provider.redirect_uri,
            "scope": "openid profile email eduperson_entitlement offline_access",
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    return f"{provider.discovery()['authorization_endpoint']}?{query}", state


def test_sign_in_in_a_browser(provider, oidc, browser, tmp_path):
    creds = json.loads((provider.accounts_file.parent / "demo-credentials.json").read_text())
    context = browser.new_context()
    page = context.new_page()
    landed: list[str] = []

    # the hub is not running: answer its callback URL in the browser and record it
    def callback(route):
        landed.append(route.request.url)
        route.fulfill(status=200, body="callback reached", content_type="text/plain")

    page.route(f"{provider.redirect_uri}*", callback)
    try:
        url, state = _authorize_url(provider, oidc)
        page.goto(url)
        assert page.title() == "C-SCALE Hub — sign in (embedded identity provider)"
        page.screenshot(path=str(tmp_path / "login.png"))

        page.fill("input[name=username]", "demo-member")
        page.fill("input[name=password]", "wrong password")
        page.click("button[type=submit]:has-text('Sign in')")
        assert "Invalid username or password" in page.inner_text("main")
        assert not landed
        assert page.input_value("input[name=username]") == "demo-member"

        page.fill("input[name=password]", creds["demo-member"])
        page.click("button[type=submit]:has-text('Sign in')")
        page.wait_for_url(f"{provider.redirect_uri}*")
        assert len(landed) == 1
        query = parse_qs(urlsplit(landed[0]).query)
        assert query["state"] == [state] and query["code"][0]
    finally:
        context.close()
