"""The Python side of the account store and the ``accounts`` CLI (no node needed)."""

from __future__ import annotations

import argparse
import io
import json
import re
import stat

import pytest

from cscale_extensions import config as settings
from cscale_extensions.cli import accounts as cli
from cscale_extensions.localstack.oidc import accounts, embedded


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_entitlement_urn():
    assert (
        accounts.entitlement("vo.cscale.eu")
        == "urn:mace:egi.eu:group:vo.cscale.eu:role=member#aai.egi.eu"
    )
    assert accounts.entitlement("vo.x", "admin", "urn:geant:example:group", None) == (
        "urn:geant:example:group:vo.x:role=admin"
    )


def test_hash_format_and_verification():
    h = accounts.hash_password("correct horse")
    assert re.fullmatch(r"scrypt\$16384\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+", h)
    assert accounts.verify_password("correct horse", h)
    assert not accounts.verify_password("correct horsE", h)
    assert accounts.hash_password("correct horse") != h  # salted
    assert not accounts.verify_password("x", "not-a-hash")
    assert not accounts.verify_password("x", "bcrypt$1$2$3$a$b")


def test_add_list_disable_and_file_mode(tmp_path):
    path = tmp_path / "accounts.json"
    pw = accounts.add_account(
        path, "alice", name="Alice", email="a@example.org", entitlements=["u"]
    )
    assert len(pw) >= 16
    assert _mode(path) == 0o600
    data = json.loads(path.read_text())
    assert accounts.verify_password(pw, data["accounts"]["alice"]["password"])
    rows = accounts.list_accounts(path)
    assert rows == [
        {
            "username": "alice",
            "sub": data["accounts"]["alice"]["sub"],
            "name": "Alice",
            "email": "a@example.org",
            "email_verified": True,
            "entitlements": ["u"],
            "disabled": False,
            "created": data["accounts"]["alice"]["created"],
        }
    ]
    accounts.disable_account(path, "alice")
    assert accounts.list_accounts(path)[0]["disabled"] is True
    with pytest.raises(accounts.AccountError, match="already exists"):
        accounts.add_account(path, "alice")
    with pytest.raises(accounts.AccountError, match="no account"):
        accounts.set_password(path, "bob")
    with pytest.raises(accounts.AccountError, match="invalid username"):
        accounts.add_account(path, "../etc")


def test_unreadable_accounts_file_is_a_clear_error(tmp_path):
    path = tmp_path / "accounts.json"
    path.write_text("{not json")
    with pytest.raises(accounts.AccountError, match="cannot read"):
        accounts.list_accounts(path)


def test_ensure_demo_accounts_is_idempotent(tmp_path):
    path = tmp_path / "accounts.json"
    first = accounts.ensure_demo_accounts(path, "vo.cscale.eu", "admin")
    assert set(first) == {"demo-member", "demo-admin", "demo-outsider"}
    before = path.read_text()
    second = accounts.ensure_demo_accounts(path, "vo.cscale.eu", "admin")
    assert second == first
    assert path.read_text() == before
    creds = tmp_path / "demo-credentials.json"
    assert json.loads(creds.read_text()) == first and _mode(creds) == 0o600

    stored = json.loads(path.read_text())["accounts"]
    for user, pw in first.items():
        assert accounts.verify_password(pw, stored[user]["password"])
    member = accounts.entitlement("vo.cscale.eu")
    assert stored["demo-member"]["entitlements"] == [member]
    assert stored["demo-admin"]["entitlements"] == [
        member,
        accounts.entitlement("vo.cscale.eu", "admin"),
    ]
    assert not any("vo.cscale.eu" in e for e in stored["demo-outsider"]["entitlements"])


def test_provider_process_prepares_state_once(tmp_path):
    cfg = settings.defaults()
    spec, issuer = embedded.provider_process(
        cfg, tmp_path, client_secret="s", redirect_uri="http://127.0.0.1:8000/hub/oauth_callback"
    )
    d = tmp_path / "oidc"
    conf = json.loads((d / "provider.json").read_text())
    assert (
        conf["issuer"] == issuer and spec.ready_url == f"{issuer}/.well-known/openid-configuration"
    )
    assert conf["clients"][0]["redirect_uris"] == ["http://127.0.0.1:8000/hub/oauth_callback"]
    assert "http://127.0.0.1:8000/hub/" in conf["clients"][0]["post_logout_redirect_uris"]
    assert conf["ttl"]["access_token"] == cfg["embedded_oidc"]["access_token_ttl"]
    assert spec.argv[1].endswith("provider.mjs") and spec.argv[2] == str(d / "provider.json")
    for name in ("provider.json", "state.json", "accounts.json", "demo-credentials.json"):
        assert _mode(d / name) == 0o600, name
    creds = embedded.demo_credentials(cfg, tmp_path)
    keys = conf["cookie_keys"]
    _, issuer2 = embedded.provider_process(
        cfg, tmp_path, client_secret="s", redirect_uri="http://x/cb"
    )
    assert issuer2 == issuer
    assert json.loads((d / "provider.json").read_text())["cookie_keys"] == keys
    assert embedded.demo_credentials(cfg, tmp_path) == creds


def test_no_demo_accounts_when_turned_off_or_file_preexists(tmp_path):
    cfg = settings.deep_merge(settings.defaults(), {"embedded_oidc": {"demo_accounts": False}})
    embedded.provider_process(cfg, tmp_path / "a", client_secret="s", redirect_uri="http://x/cb")
    assert accounts.list_accounts(tmp_path / "a" / "oidc" / "accounts.json") == []
    assert embedded.demo_credentials(cfg, tmp_path / "a") == {}

    own = tmp_path / "own.json"
    accounts.add_account(own, "mine")
    cfg = settings.deep_merge(settings.defaults(), {"embedded_oidc": {"accounts_file": str(own)}})
    embedded.provider_process(cfg, tmp_path / "b", client_secret="s", redirect_uri="http://x/cb")
    assert [r["username"] for r in accounts.list_accounts(own)] == ["mine"]


def _parser(tmp_path):
    parser = argparse.ArgumentParser(prog="cscale-hub")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.add_parser(sub, lambda args: (settings.defaults(), tmp_path))
    return parser


def _run(tmp_path, argv, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    args = _parser(tmp_path).parse_args(argv)
    return args.func(args)


def test_cli_add_passwd_disable_list(tmp_path, capsys, monkeypatch):
    path = tmp_path / "oidc" / "accounts.json"
    assert _run(tmp_path, ["accounts", "add", "carol", "--admin", "--email", "c@example.org"]) == 0
    out = capsys.readouterr().out
    pw = re.search(r"password: (\S+)", out).group(1)
    rec = json.loads(path.read_text())["accounts"]["carol"]
    assert accounts.verify_password(pw, rec["password"])
    assert rec["entitlements"] == [
        accounts.entitlement("vo.cscale.eu"),
        accounts.entitlement("vo.cscale.eu", "admin"),
    ]

    assert (
        _run(
            tmp_path, ["accounts", "passwd", "carol", "--password-stdin"], "n3w pass\n", monkeypatch
        )
        == 0
    )
    assert "password:" not in capsys.readouterr().out
    rec = json.loads(path.read_text())["accounts"]["carol"]
    assert accounts.verify_password("n3w pass", rec["password"])

    assert _run(tmp_path, ["accounts", "add", "dave", "--no-membership", "--vo", "vo.other"]) == 0
    capsys.readouterr()
    assert _run(tmp_path, ["accounts", "disable", "dave"]) == 0
    assert "disabled" in capsys.readouterr().out
    assert _run(tmp_path, ["accounts", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [(r["username"], r["disabled"]) for r in listing] == [("carol", False), ("dave", True)]
    assert listing[1]["entitlements"] == [accounts.entitlement("vo.other")]
    assert "password" not in json.dumps(listing)

    assert _run(tmp_path, ["accounts", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["carol", "active", "c@example.org"]
    assert lines[1].split()[:2] == ["dave", "disabled"]

    assert _run(tmp_path, ["accounts", "disable", "nobody"]) == 1
    assert "no account 'nobody'" in capsys.readouterr().err
