"""Opaque, tamper-evident paging tokens: compressed JSON state signed with HMAC-SHA256."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
import zlib
from pathlib import Path
from typing import Any

from cscale_extensions.services.eomqs.errors import bad_request

log = logging.getLogger("cscale.eomqs")
MAX_TOKEN_CHARS = 200_000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Signs and checks paging tokens bound to one search and one federation."""

    def __init__(self, secret: bytes, max_age: float):
        self.secret = secret
        self.max_age = max_age

    def _sig(self, payload: bytes) -> str:
        return _b64(hmac.new(self.secret, payload, hashlib.sha256).digest()[:20])

    def dump(self, state: dict[str, Any], query: str, federation: str) -> str:
        doc = {"v": 1, "q": query, "f": federation, "t": int(time.time()), "s": state}
        payload = _b64(zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 6))
        return f"{payload}.{self._sig(payload.encode())}"

    def load(self, token: str, query: str, federation: str) -> dict[str, Any]:
        """The state of a token; 400 when forged, stale, or from another search or federation."""
        if len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
            raise bad_request("InvalidToken", "the paging token is malformed")
        payload, sig = token.split(".")
        if not hmac.compare_digest(sig, self._sig(payload.encode())):
            raise bad_request("InvalidToken", "the paging token is not valid (altered or forged)")
        try:
            doc = json.loads(zlib.decompress(_unb64(payload)))
        except (ValueError, zlib.error):
            raise bad_request("InvalidToken", "the paging token is malformed") from None
        if not isinstance(doc, dict) or doc.get("v") != 1 or not isinstance(doc.get("s"), dict):
            raise bad_request("InvalidToken", "the paging token has an unknown format")
        if time.time() - float(doc.get("t", 0)) > self.max_age:
            raise bad_request("StaleToken", "the paging token has expired; start the search again")
        if doc.get("f") != federation:
            raise bad_request(
                "StaleToken",
                "the federation changed since this token was issued; start the search again",
            )
        if doc.get("q") != query:
            raise bad_request("InvalidToken", "the paging token belongs to a different search")
        return doc["s"]


def resolve_secret(secret: str | None, secret_file: str | None, data_dir: str | None) -> bytes:
    """The configured secret, else the one kept in a file (created 0600 with a random secret)."""
    if secret:
        return secret.encode()
    path = Path(secret_file) if secret_file else None
    if path is None and data_dir:
        path = Path(data_dir) / "secrets" / "eomqs_token_secret"
    if path is not None:
        try:
            if path.is_file():
                text = path.read_text().strip()
                if text:
                    return text.encode()
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            value = secrets.token_hex(32)
            with os.fdopen(fd, "w") as f:
                f.write(value)
            return value.encode()
        except FileExistsError:
            return path.read_text().strip().encode()
        except OSError as exc:
            log.warning(
                "cannot keep the token secret in %s (%s); tokens end with this process", path, exc
            )
    else:
        log.warning("no token secret configured; paging tokens end with this process")
    return secrets.token_bytes(32)
