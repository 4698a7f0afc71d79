"""Accounts of the embedded OpenID Connect provider: a JSON file of scrypt-hashed passwords.

The file (mode 0600, rewritten atomically under a lock) is read by ``provider.mjs``, which
re-reads it when it changes, so accounts added here can sign in without a restart::

    {"version": 1, "accounts": {"<username>": {"sub": "...", "password": "scrypt$N$r$p$<salt>$<hash>",
      "name": "...", "given_name": "...", "family_name": "...", "email": "...",
      "email_verified": true, "entitlements": ["urn:mace:egi.eu:group:<vo>:role=member#aai.egi.eu"],
      "disabled": false, "created": "<ISO time>"}}}
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import unicodedata
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cscale_extensions.privatefiles import write_json_private

DEFAULT_NAMESPACE = "urn:mace:egi.eu:group"
DEFAULT_AUTHORITY = "aai.egi.eu"
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 16384, 8, 1, 32
USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
DEMO_CREDENTIALS = "demo-credentials.json"
#: VO given to the demo non-member (never one the hub admits, see ensure_demo_accounts)
OUTSIDER_VO = "vo.outsider.example.org"


class AccountError(ValueError):
    """A bad username, a missing account or an unreadable accounts file."""


def entitlement(
    vo: str,
    role: str = "member",
    namespace: str = DEFAULT_NAMESPACE,
    authority: str | None = DEFAULT_AUTHORITY,
) -> str:
    """The AARC-G002 entitlement URN for ``role`` in ``vo``.

    >>> entitlement("vo.cscale.eu")
    'urn:mace:egi.eu:group:vo.cscale.eu:role=member#aai.egi.eu'
    """
    urn = f"{namespace}:{vo}:role={role}"
    return f"{urn}#{authority}" if authority else urn


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    pw = unicodedata.normalize("NFC", password).encode("utf-8")
    return hashlib.scrypt(pw, salt=salt, n=n, r=r, p=p, dklen=length, maxmem=256 * n * r + 2**20)


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$<salt b64>$<hash b64>`` — the format ``provider.mjs`` verifies."""
    if not password:
        raise AccountError("the password must not be empty")
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches the scrypt hash ``encoded`` (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        salt_b, digest_b = base64.b64decode(salt), base64.b64decode(digest)
        derived = _scrypt(password, salt_b, int(n), int(r), int(p), len(digest_b))
    except (ValueError, AttributeError):
        return False
    return hmac.compare_digest(derived, digest_b)


def generate_password() -> str:
    """A strong random password (about 120 bits), easy to copy."""
    return secrets.token_urlsafe(15)


# --------------------------------------------------------------------------- the file


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"version": 1, "accounts": {}}
    except (OSError, json.JSONDecodeError) as exc:
        raise AccountError(f"cannot read the accounts file {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("accounts"), dict):
        raise AccountError(f'{path} is not an accounts file (no "accounts" object)')
    return data


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[dict[str, Any]]:
    """Read-modify-write the accounts file under an exclusive lock."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.name}.lock")
    with open(lock, "a") as lf:
        os.fchmod(lf.fileno(), 0o600)
        fcntl.flock(lf, fcntl.LOCK_EX)
        try:
            data = _read(path)
            yield data
            write_json_private(path, data)
        finally:
            fcntl.flock(lf, fcntl.LOCK_UN)


def _check_username(username: str) -> None:
    if not USERNAME_RE.match(username or ""):
        raise AccountError(
            f"invalid username {username!r}: use 1-64 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )


def add_account(
    path: Path,
    username: str,
    password: str | None = None,
    *,
    name: str | None = None,
    email: str | None = None,
    entitlements: list[str] | None = None,
    disabled: bool = False,
    given_name: str | None = None,
    family_name: str | None = None,
) -> str:
    """Create ``username``; returns its password (a generated one when ``password`` is None)."""
    _check_username(username)
    password = password or generate_password()
    record: dict[str, Any] = {
        "sub": uuid.uuid4().hex,
        "password": hash_password(password),
        "name": name or username,
        "entitlements": list(entitlements or []),
        "disabled": bool(disabled),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if email:
        record.update(email=email, email_verified=True)
    if given_name:
        record["given_name"] = given_name
    if family_name:
        record["family_name"] = family_name
    with _locked(Path(path)) as data:
        if username in data["accounts"]:
            raise AccountError(f"account {username!r} already exists")
        data["accounts"][username] = record
    return password


def _update(path: Path, username: str, **changes: Any) -> None:
    with _locked(Path(path)) as data:
        record = data["accounts"].get(username)
        if record is None:
            raise AccountError(f"no account {username!r} in {path}")
        record.update(changes)


def set_password(path: Path, username: str, password: str | None = None) -> str:
    """Change the password of ``username``; returns it (generated when None)."""
    password = password or generate_password()
    _update(path, username, password=hash_password(password))
    return password


def disable_account(path: Path, username: str, disabled: bool = True) -> None:
    """Disable (or with ``disabled=False`` re-enable) ``username``; its tokens stop working."""
    _update(path, username, disabled=bool(disabled))


def set_entitlements(path: Path, username: str, entitlements: list[str]) -> None:
    """Replace the entitlements of ``username``."""
    _update(path, username, entitlements=list(entitlements))


def list_accounts(path: Path) -> list[dict[str, Any]]:
    """Every account without its password hash, sorted by username."""
    accounts = _read(Path(path))["accounts"]
    out = []
    for username in sorted(accounts):
        record = {k: v for k, v in accounts[username].items() if k != "password"}
        out.append({"username": username, **record})
    return out


def ensure_demo_accounts(
    path: Path,
    vo: str,
    admin_role: str = "admin",
    *,
    namespace: str = DEFAULT_NAMESPACE,
    authority: str | None = DEFAULT_AUTHORITY,
) -> dict[str, str]:
    """Create the demo accounts once; returns ``{username: password}``.

    ``demo-member`` is a member of ``vo``, ``demo-admin`` a member with role ``admin_role``,
    ``demo-outsider`` only a member of another VO. Passwords are generated and kept in
    ``<dir>/demo-credentials.json`` (0600); later calls return those and never regenerate.
    Existing accounts of the same name are left alone.
    """
    path = Path(path)
    creds_file = path.with_name(DEMO_CREDENTIALS)
    if creds_file.exists():
        try:
            stored = json.loads(creds_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise AccountError(f"cannot read {creds_file}: {exc}") from exc
        return {str(k): str(v) for k, v in stored.items()}
    member = entitlement(vo, "member", namespace, authority)
    other_vo = OUTSIDER_VO if vo != OUTSIDER_VO else f"other.{OUTSIDER_VO}"
    demo = {
        "demo-member": ("Demo Member", [member]),
        "demo-admin": ("Demo Admin", [member, entitlement(vo, admin_role, namespace, authority)]),
        "demo-outsider": ("Demo Outsider", [entitlement(other_vo, "member", namespace, authority)]),
    }
    existing = set(_read(path)["accounts"])
    created: dict[str, str] = {}
    for username, (full_name, ents) in demo.items():
        if username in existing:
            continue
        given, family = full_name.split(" ", 1)
        created[username] = add_account(
            path,
            username,
            name=full_name,
            given_name=given,
            family_name=family,
            email=f"{username}@example.org",
            entitlements=ents,
        )
    write_json_private(creds_file, created)
    return created


def read_demo_credentials(path: Path) -> dict[str, str]:
    """The demo passwords stored next to the accounts file ``path`` ({} when none)."""
    try:
        return json.loads(Path(path).with_name(DEMO_CREDENTIALS).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
