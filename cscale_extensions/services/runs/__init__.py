"""Headless parameterised notebook runs as a platform service (``/services/runs/``).

Wiring for the hub: :func:`service_spec` (the ``c.JupyterHub.services`` entry) and
:func:`role_spec` (its role for ``c.JupyterHub.load_roles``). The command line (``cscale-hub run``,
``cscale-hub runs …``) is :mod:`cscale_extensions.cli.runs`. See docs/runs.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

SERVICE_NAME = "runs"
SETTINGS_ENV = "CSCALE_RUNS_SETTINGS"
#: JSON of the ``compute`` section (its ``sites``: where runs may execute)
COMPUTE_ENV = "CSCALE_COMPUTE_SETTINGS"
#: the least the service needs, each for one thing (see runs/usertokens.py):
#: - start:servers: start the users' `runs` servers (POST /users/<name>/servers/runs);
#: - read:servers: see whether a server is ready and where (GET /users/<name>; it includes
#:   read:users:name, which also tells who is an admin);
#: - tokens: mint (and delete) for each user a short-lived token scoped to
#:   access:servers!server=<user>/runs, the only credential the service shows to a user's
#:   server. The hub requires `tokens` on the user for POST /users/<name>/tokens and checks
#:   the requested scopes against the user's own, not the service's, so the service itself
#:   holds no access:servers: its own token opens no user server and goes to the hub API only.
#: - read:users:groups: a user's VOs (hub groups), for the compute sites open to them.
SERVICE_SCOPES = ["start:servers", "read:servers", "tokens", "read:users:groups"]


def role_spec() -> dict[str, Any]:
    """The role of the runs service, for ``c.JupyterHub.load_roles``."""
    return {
        "name": "runs-service",
        "description": "Start users' 'runs' servers and execute notebooks in them",
        "scopes": list(SERVICE_SCOPES),
        "services": [SERVICE_NAME],
    }


def proxy_url(cfg: dict[str, Any]) -> str:
    """Where the service reaches the proxy (scheme://host:port)."""
    url = cfg["runs"]["proxy_url"] or cfg["platform"]["public_url"]
    if not url:
        h = cfg["hub"]
        host = "127.0.0.1" if h["ip"] in ("", "0.0.0.0", "::") else h["ip"]
        url = f"http://{host}:{h['port']}"
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def service_spec(cfg: dict[str, Any], port: int, state_dir: Path) -> dict[str, Any]:
    """The hub-managed ``runs`` service entry for ``c.JupyterHub.services``."""
    return {
        "name": SERVICE_NAME,
        "url": f"http://127.0.0.1:{port}",
        "command": [
            sys.executable,
            "-m",
            "cscale_extensions.services.runs",
            "--port",
            str(port),
            "--state-dir",
            str(state_dir),
            "--proxy-url",
            proxy_url(cfg),
        ],
        "environment": {
            SETTINGS_ENV: json.dumps(cfg["runs"]),
            COMPUTE_ENV: json.dumps(cfg.get("compute") or {}),
        },
        "display": False,
        "oauth_no_confirm": True,
    }
