"""`cscale-hub`: the command line of C-SCALE Hub."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys


def _optional(module: str, func: str):
    """A parser-registering function of an optional part of the platform, or None."""
    try:
        return getattr(importlib.import_module(f"cscale_extensions.{module}"), func)
    except (ImportError, AttributeError):
        return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cscale-hub",
        description="C-SCALE Hub: JupyterHub for Earth-observation analysis on a STAC federation.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("up", help="bring the whole platform up on this machine")
    p.add_argument("--config", "-c", help="platform settings (YAML); see docs/configuration.md")
    p.add_argument("--data-dir", help="state directory (default: /var/lib/cscale-hub as root)")
    p.add_argument("--port", type=int, help="public port (default 8000; 0 picks a free one)")
    p.set_defaults(func=lambda a: _up(a))

    p = sub.add_parser("config", help="show or check the platform settings")
    p.add_argument("action", choices=["check", "show", "docs"])
    p.add_argument("--config", "-c")
    p.set_defaults(func=lambda a: _config(a))

    from .oidc import cli as accounts_cli

    accounts_cli.add_parser(sub, _context)
    for module, func in (
        ("eodata", "add_data_parser"),
        ("eomqs", "add_eomqs_parser"),
        ("runs", "add_run_parsers"),
        ("workshop", "add_workshop_parser"),
    ):
        register = _optional(module, func)
        if register:
            try:
                register(sub)
            except Exception as exc:  # a broken optional part must not take the CLI down
                logging.getLogger("cscale").warning("commands of %s unavailable: %s", module, exc)
    return parser


def _context(args):
    """The resolved settings and data dir for commands that act on a platform's state."""
    from . import settings
    from .launcher import default_data_dir

    cfg = settings.load(getattr(args, "config", None))
    data_dir = getattr(args, "data_dir", None) or cfg["platform"]["data_dir"] or default_data_dir()
    from pathlib import Path

    return cfg, Path(data_dir)


def _up(args) -> int:
    from .launcher import up

    return up(args.config, args.data_dir, args.port)


def _config(args) -> int:
    import json

    from . import settings
    from .settings.docs import render

    if args.action == "docs":
        print(render())
        return 0
    try:
        cfg = settings.load(args.config)
    except settings.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(cfg, indent=2) if args.action == "show" else "configuration is valid")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("cscale").setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    rc = args.func(args)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
