"""How the hub registers EO-MQS as a managed service: its name, prefix and ``services`` entry.

Kept apart from :mod:`~cscale_extensions.services.eomqs.service` (which builds and serves the
app) so the hub imports only this: the hub process and its image need none of EO-MQS's own
dependencies (FastAPI, uvicorn, aiohttp, cql2, orjson) to start it as a subprocess.
"""

from __future__ import annotations

import os
import sys
from typing import Any

SERVICE_NAME = "eo-mqs"
SERVICE_PREFIX = f"/services/{SERVICE_NAME}/"


def service_spec(cfg: dict[str, Any], port: int) -> dict[str, Any]:
    """The JupyterHub ``services`` entry of EO-MQS (a hub-managed service on 127.0.0.1:port)."""
    env = {k: os.environ[k] for k in ("CSCALE_HUB_CONFIG",) if k in os.environ}
    return {
        "name": SERVICE_NAME,
        "url": f"http://127.0.0.1:{port}",
        "command": [
            sys.executable,
            "-m",
            "cscale_extensions.services.eomqs",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        "environment": env,
        "display": False,
    }
