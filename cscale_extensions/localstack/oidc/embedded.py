"""Run the embedded OpenID Connect provider (``provider.mjs``) as a process of the local stack.

State lives in ``<data_dir>/oidc/`` (all files 0600): ``provider.json`` (the provider's
configuration, rewritten at every start), ``state.json`` (the port chosen once and the cookie
keys), ``jwks.json`` (signing key, made by node on first start), ``store.json`` (sessions,
grants and tokens, so they survive a restart), ``accounts.json`` and ``demo-credentials.json``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cscale_extensions.localstack.oidc import accounts
from cscale_extensions.localstack.supervisor import ProcessSpec
from cscale_extensions.net import free_port
from cscale_extensions.privatefiles import write_json_private

PROVIDER_JS = Path(__file__).with_name("provider.mjs")
REPO_ROOT = Path(__file__).resolve().parents[3]
#: environment variable naming the node_modules directory that holds oidc-provider
NODE_MODULES_ENV = "CSCALE_NODE_MODULES"


def oidc_dir(data_dir: Path) -> Path:
    """``<data_dir>/oidc``, created with mode 0700."""
    d = Path(data_dir) / "oidc"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def accounts_path(cfg: dict[str, Any], data_dir: Path) -> Path:
    """The accounts file: ``embedded_oidc.accounts_file`` or ``<data_dir>/oidc/accounts.json``."""
    configured = cfg.get("embedded_oidc", {}).get("accounts_file")
    return (
        Path(configured).expanduser() if configured else Path(data_dir) / "oidc" / "accounts.json"
    )


def demo_credentials(cfg: dict[str, Any], data_dir: Path) -> dict[str, str]:
    """``{username: password}`` of the demo accounts ({} when they are off or not made yet)."""
    if not cfg.get("embedded_oidc", {}).get("demo_accounts", True):
        return {}
    return accounts.read_demo_credentials(accounts_path(cfg, data_dir))


def node_modules_dir() -> Path:
    """``$CSCALE_NODE_MODULES`` or the repository's ``node_modules``."""
    return Path(os.environ.get(NODE_MODULES_ENV) or REPO_ROOT / "node_modules")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _load_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text())
        return state if isinstance(state, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _post_logout_uris(redirect_uri: str) -> list[str]:
    """The hub's own pages next to its OAuth callback (``…/hub/oauth_callback`` → ``…/hub/``)."""
    parts = urlsplit(redirect_uri)
    base = parts.path.rsplit("/", 1)[0] + "/"
    uris = [urlunsplit((parts.scheme, parts.netloc, base, "", ""))]
    uris.append(urlunsplit((parts.scheme, parts.netloc, base + "login", "", "")))
    uris.append(urlunsplit((parts.scheme, parts.netloc, "/", "", "")))
    return list(dict.fromkeys(uris))


def provider_process(
    cfg: dict[str, Any],
    data_dir: Path,
    *,
    client_secret: str,
    redirect_uri: str,
    post_logout_redirect_uris: list[str] | None = None,
) -> tuple[ProcessSpec, str]:
    """Prepare ``<data_dir>/oidc`` and return the provider's ProcessSpec and its issuer URL.

    ``cfg`` is the resolved configuration (sections ``auth`` and ``embedded_oidc`` are used).
    The client is ``auth.client_id`` with ``client_secret``, allowed ``redirect_uri``.
    """
    eo, auth = cfg["embedded_oidc"], cfg["auth"]
    node = shutil.which("node")
    if not node:
        raise RuntimeError("node is not installed; the embedded OIDC provider needs Node.js >= 20")
    modules = node_modules_dir()
    if not (modules / "oidc-provider" / "package.json").exists():
        raise RuntimeError(
            f"oidc-provider is missing from {modules}; run `npm ci` at the repository root "
            f"or point ${NODE_MODULES_ENV} at a node_modules directory that has it"
        )
    d = oidc_dir(data_dir)
    state_file = d / "state.json"
    state = _load_state(state_file)
    if eo["port"]:
        port = int(eo["port"])
    else:
        port = state.get("port") if isinstance(state.get("port"), int) else 0
        if not port or not _port_free(port):
            port = free_port()
    if not state.get("cookie_keys"):
        state["cookie_keys"] = [secrets.token_urlsafe(32)]
    state["port"] = port
    write_json_private(state_file, state)

    acc_file = accounts_path(cfg, data_dir)
    creds_file = acc_file.with_name(accounts.DEMO_CREDENTIALS)
    if eo["demo_accounts"] and (not acc_file.exists() or creds_file.exists()):
        accounts.ensure_demo_accounts(
            acc_file,
            auth["vos"][0],
            (auth.get("admin_roles") or ["admin"])[0],
            namespace=auth["entitlement_namespace"],
            authority=auth["entitlement_authority"],
        )
    if not acc_file.exists():
        write_json_private(acc_file, {"version": 1, "accounts": {}})

    issuer = f"http://127.0.0.1:{port}"
    provider_cfg = {
        "issuer": issuer,
        "host": "127.0.0.1",
        "port": port,
        "accounts_file": str(acc_file.resolve()),
        "jwks_file": str((d / "jwks.json").resolve()),
        "store_file": str((d / "store.json").resolve()),
        "cookie_keys": state["cookie_keys"],
        "clients": [
            {
                "client_id": auth["client_id"],
                "client_secret": client_secret,
                "client_name": "C-SCALE Hub",
                "redirect_uris": [redirect_uri],
                "post_logout_redirect_uris": post_logout_redirect_uris
                if post_logout_redirect_uris is not None
                else _post_logout_uris(redirect_uri),
            }
        ],
        "ttl": {
            "access_token": eo["access_token_ttl"],
            "id_token": eo["id_token_ttl"],
            "refresh_token": eo["refresh_token_ttl"],
            "session": eo.get("session_ttl", 28800),
        },
        "pkce_required": True,
        "login_throttle": dict(eo.get("login_throttle") or {}),
    }
    config_file = d / "provider.json"
    write_json_private(config_file, provider_cfg)
    spec = ProcessSpec(
        name="oidc",
        argv=[node, str(PROVIDER_JS), str(config_file)],
        env={NODE_MODULES_ENV: str(modules), "NODE_ENV": "production"},
        cwd=str(d),
        ready_url=f"{issuer}/.well-known/openid-configuration",
        ready_timeout=30.0,
    )
    return spec, issuer
