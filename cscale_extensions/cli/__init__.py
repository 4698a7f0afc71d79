"""`cscale-hub`: the command line of C-SCALE Hub."""

from __future__ import annotations

import argparse
import logging
import sys

from cscale_extensions.cli import accounts, data, runs, workshop
from cscale_extensions.services.eomqs.service import add_eomqs_parser


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

    accounts.add_parser(sub, _context)
    data.add_data_parser(sub)
    add_eomqs_parser(sub)
    runs.add_run_parsers(sub)
    workshop.add_workshop_parser(sub)
    return parser


def _context(args):
    """The resolved settings and data dir for commands that act on a platform's state."""
    from cscale_extensions import config as settings
    from cscale_extensions.localstack.launcher import default_data_dir

    cfg = settings.load(getattr(args, "config", None))
    data_dir = getattr(args, "data_dir", None) or cfg["platform"]["data_dir"] or default_data_dir()
    from pathlib import Path

    return cfg, Path(data_dir)


def _up(args) -> int:
    from cscale_extensions.localstack.launcher import up

    return up(args.config, args.data_dir, args.port)


def _config(args) -> int:
    import json

    from cscale_extensions import config as settings
    from cscale_extensions.config.docs import render

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
