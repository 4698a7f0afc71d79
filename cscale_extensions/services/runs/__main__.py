"""``python -m cscale_extensions.services.runs``: the runs service (a JupyterHub service).

The hub (managed service) or a launcher (external service) provides JUPYTERHUB_API_TOKEN,
JUPYTERHUB_API_URL and JUPYTERHUB_SERVICE_PREFIX; settings come from $CSCALE_RUNS_SETTINGS
(JSON of the ``runs`` section) merged over the section defaults, the compute sites from
$CSCALE_COMPUTE_SETTINGS (JSON of the ``compute`` section; default: the embedded one).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path


def load_settings() -> dict:
    from cscale_extensions.config import defaults

    out = defaults()["runs"]
    raw = os.environ.get("CSCALE_RUNS_SETTINGS")
    if raw:
        out.update(json.loads(raw))
    return out


def load_compute() -> dict:
    """The ``compute`` section: $CSCALE_COMPUTE_SETTINGS, else the embedded defaults."""
    raw = os.environ.get("CSCALE_COMPUTE_SETTINGS")
    if raw:
        return json.loads(raw)
    from cscale_extensions.config import defaults

    return defaults().get("compute") or {}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cscale_extensions.services.runs")
    p.add_argument("--ip", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--state-dir", required=True, help="database (sqlite) and collected outputs")
    p.add_argument("--proxy-url", required=True, help="the hub's proxy, scheme://host:port")
    args = p.parse_args(argv)
    settings = load_settings()
    logging.basicConfig(
        level=settings["log_level"], format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    missing = [k for k in ("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_API_URL") if not os.environ.get(k)]
    if missing:
        print(
            f"runs service: {', '.join(missing)} not set (start it as a hub service)",
            file=sys.stderr,
        )
        return 2
    import uvicorn

    from cscale_extensions.services.runs.app import create_app

    app = create_app(
        settings,
        Path(args.state_dir),
        os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/runs/"),
        os.environ["JUPYTERHUB_API_URL"],
        args.proxy_url,
        os.environ["JUPYTERHUB_API_TOKEN"],
        load_compute(),
    )
    uvicorn.run(
        app, host=args.ip, port=args.port, log_level=settings["log_level"].lower(), access_log=False
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
