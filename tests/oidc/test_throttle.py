"""Brute force against the embedded provider's login form, over real HTTP.

An attacker guessing passwords gets a growing wait (429 with Retry-After, the password not
even checked meanwhile) after a few failures per account, and after more failures per client
address; a password-like string typed as the username never reaches the log verbatim.
"""

from __future__ import annotations

import time

import pytest

from cscale_extensions.localstack.oidc import accounts


@pytest.fixture(scope="module")
def throttled(tmp_path_factory, oidc):
    """A provider with small limits: 3 free failures per account, 6 per address."""
    base = tmp_path_factory.mktemp("oidc-throttle")
    p = oidc.start_provider(
        base / "data",
        base / "logs",
        {"embedded_oidc": {"login_throttle": {"failures_per_account": 3,
                                              "failures_per_address": 6, "max_delay": 4}}},
    )
    p.log_dir = base / "logs"
    try:
        yield p
    finally:
        p.supervisor.stop()


def _account(p, name: str) -> str:
    return accounts.add_account(
        p.accounts_file, name, entitlements=[accounts.entitlement("vo.cscale.eu")]
    )


def test_guessing_one_accounts_password_is_slowed_down_then_the_owner_gets_in(throttled, oidc):
    pw = _account(throttled, "victim-one")
    for _ in range(3):  # the free failures
        assert oidc.login(throttled, "victim-one", "guess").last.status_code == 401
    assert oidc.login(throttled, "victim-one", "guess").last.status_code == 401  # starts the wait
    # while waiting even the right password is not checked: no code, a clear 429 page
    held = oidc.login(throttled, "Victim-One", pw)  # case variants count for the same account
    assert held.code is None and held.last.status_code == 429
    wait = int(held.last.headers["Retry-After"])
    assert 1 <= wait <= 4
    assert "Too many failed sign-ins" in held.last.text and f"Wait {wait} seconds" in held.last.text
    time.sleep(wait + 0.2)
    assert oidc.login(throttled, "victim-one", pw).code  # the owner gets in after the wait
    # a success clears the account's count: the next mistake is free again
    assert oidc.login(throttled, "victim-one", "typo").last.status_code == 401
    assert oidc.login(throttled, "victim-one", pw).code


def test_spraying_many_names_from_one_address_is_slowed_down(throttled, oidc):
    pw = _account(throttled, "bystander")
    time.sleep(4.2)  # the previous test's failures from this address have waited out
    status = [oidc.login(throttled, f"spray-{i}", "guess").last.status_code for i in range(8)]
    assert 429 in status, status  # past 6 failures from this address the waits begin
    held = oidc.login(throttled, "bystander", pw)
    assert held.code is None and held.last.status_code == 429
    time.sleep(int(held.last.headers["Retry-After"]) + 0.2)
    assert oidc.login(throttled, "bystander", pw).code


def test_a_password_typed_as_the_username_is_not_logged(throttled, oidc):
    secret_like = "Tr0ub4dor&3-correct-horse"
    time.sleep(4.2)
    oidc.login(throttled, secret_like, "x")
    time.sleep(0.5)
    logs = "".join(f.read_text(errors="replace") for f in throttled.log_dir.glob("*.log"))
    assert "login failed" in logs
    assert secret_like not in logs
