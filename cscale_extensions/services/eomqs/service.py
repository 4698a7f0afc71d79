"""Running EO-MQS: standalone (``run``), from the CLI, and as a JupyterHub managed service."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from typing import Any

from cscale_extensions.services.eomqs.registration import SERVICE_NAME, SERVICE_PREFIX, service_spec

log = logging.getLogger(__name__)

__all__ = ["SERVICE_NAME", "SERVICE_PREFIX", "add_eomqs_parser", "build_app", "run", "service_spec"]


def build_app(cfg: dict[str, Any], prefix: str | None = None):
    """The FastAPI app for a resolved platform configuration ``cfg``."""
    from cscale_extensions.services.eomqs.app import create_app
    from cscale_extensions.services.eomqs.paging_token import resolve_secret

    s = cfg["eomqs"]
    data_dir = cfg.get("platform", {}).get("data_dir")
    secret = resolve_secret(s["token_secret"], s["token_secret_file"], data_dir)
    if prefix is None:
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    return create_app(cfg["federation"]["sites"], s, secret, prefix)


def run(
    cfg: dict[str, Any], host: str = "127.0.0.1", port: int = 8080, prefix: str | None = None
) -> None:
    """Serve EO-MQS for ``cfg`` on host:port until stopped (prefix: $JUPYTERHUB_SERVICE_PREFIX or /)."""
    import uvicorn

    level = cfg["eomqs"]["log_level"]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = build_app(cfg, prefix)
    if kib := cfg["eomqs"]["malloc_mmap_threshold_kib"]:
        set_mmap_threshold(kib * 1024)
    # what is loaded by now lives as long as the process: out of the garbage collector's full
    # collections, which otherwise walk every module's objects again and again while it serves
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=host, port=port, log_level=level.lower(), access_log=False)


def set_mmap_threshold(nbytes: int) -> bool:
    """glibc's ``M_MMAP_THRESHOLD`` for this process: allocations from ``nbytes`` get their own
    mapping, unmapped when freed (fixing it also stops glibc raising it as blocks are freed).
    False where the C library is not glibc."""
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        log.warning("eomqs.malloc_mmap_threshold_kib ignored: the C library is not glibc")
        return False
    m_mmap_threshold = -3  # malloc.h
    return bool(ctypes.CDLL(None).mallopt(m_mmap_threshold, nbytes))


def _cmd(args: argparse.Namespace) -> int:
    from cscale_extensions import config as settings

    try:
        cfg = settings.load(args.config) if args.config else settings.load_resolved()
    except settings.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not cfg["federation"]["sites"]:
        print("warning: federation.sites is empty; EO-MQS will find nothing", file=sys.stderr)
    run(cfg, args.ip, args.port, args.prefix)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="platform settings (YAML); default: $CSCALE_HUB_CONFIG")
    p.add_argument("--ip", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    p.add_argument(
        "--prefix",
        default=None,
        help="URL path it answers under (default: $JUPYTERHUB_SERVICE_PREFIX or /)",
    )


def add_eomqs_parser(subparsers) -> None:
    """``cscale-hub eomqs --config FILE [--port N]``: EO-MQS on its own."""
    p = subparsers.add_parser("eomqs", help="serve EO-MQS, the federated STAC API, on its own")
    add_arguments(p)
    p.set_defaults(func=_cmd)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m cscale_extensions.services.eomqs",
        description="EO-MQS, the federated STAC API of C-SCALE Hub",
    )
    add_arguments(p)
    return _cmd(p.parse_args(argv))
