"""``cscale-hub accounts add|passwd|disable|enable|list``: manage the embedded provider's accounts.

The running provider re-reads the accounts file when it changes: no restart needed.
Wire it into the main parser with::

    from cscale_extensions.localstack.oidc import cli as accounts_cli
    accounts_cli.add_parser(subparsers, context)   # context(args) -> (cfg, data_dir)
    ...
    return args.func(args)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cscale_extensions.localstack.oidc import accounts
from cscale_extensions.localstack.oidc.embedded import accounts_path

Context = Callable[[argparse.Namespace], tuple[dict[str, Any], Path]]


def _target(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    cfg, data_dir = args.accounts_context(args)
    path = args.accounts_file or accounts_path(cfg, data_dir)
    return cfg, Path(path)


def _read_password(args: argparse.Namespace) -> str | None:
    if not getattr(args, "password_stdin", False):
        return None
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise accounts.AccountError("no password on standard input")
    return password


def _entitlements(cfg: dict[str, Any], args: argparse.Namespace) -> list[str]:
    auth = cfg["auth"]
    vos = args.vo or ([] if args.no_membership else [auth["vos"][0]])
    roles = ["member"]
    if args.admin:
        roles.append((auth.get("admin_roles") or ["admin"])[0])
    roles += [r for r in args.role or [] if r not in roles]
    ents = [
        accounts.entitlement(vo, role, auth["entitlement_namespace"], auth["entitlement_authority"])
        for vo in vos
        for role in roles
    ]
    return ents + [e for e in args.entitlement or [] if e not in ents]


def _run(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except accounts.AccountError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


@_run
def cli_add(args: argparse.Namespace) -> int:
    """Create an account; print its password when it was generated."""
    cfg, path = _target(args)
    given = _read_password(args)
    password = accounts.add_account(
        path,
        args.username,
        given,
        name=args.name,
        email=args.email,
        entitlements=_entitlements(cfg, args),
        disabled=args.disabled,
    )
    print(f"created account {args.username!r} in {path}")
    if given is None:
        print(f"password: {password}")
    return 0


@_run
def cli_passwd(args: argparse.Namespace) -> int:
    """Set a new password (generated and printed unless --password-stdin)."""
    _, path = _target(args)
    given = _read_password(args)
    password = accounts.set_password(path, args.username, given)
    print(f"password of {args.username!r} changed")
    if given is None:
        print(f"password: {password}")
    return 0


@_run
def cli_disable(args: argparse.Namespace) -> int:
    """Disable an account: it can no longer sign in, and its tokens stop working."""
    _, path = _target(args)
    accounts.disable_account(path, args.username, True)
    print(f"account {args.username!r} disabled")
    return 0


@_run
def cli_enable(args: argparse.Namespace) -> int:
    """Enable a disabled account again."""
    _, path = _target(args)
    accounts.disable_account(path, args.username, False)
    print(f"account {args.username!r} enabled")
    return 0


@_run
def cli_list(args: argparse.Namespace) -> int:
    """List accounts (never their passwords)."""
    _, path = _target(args)
    rows = accounts.list_accounts(path)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no accounts in {path}")
        return 0
    width = max(len(r["username"]) for r in rows)
    for r in rows:
        state = "disabled" if r.get("disabled") else "active"
        ents = ", ".join(r.get("entitlements") or []) or "-"
        print(f"{r['username']:<{width}}  {state:<8}  {r.get('email') or '-'}  {ents}")
    return 0


def add_parser(subparsers: Any, context: Context) -> argparse.ArgumentParser:
    """Register ``accounts`` and its subcommands; each sets ``args.func`` (returns an exit code).

    ``context(args)`` returns ``(cfg, data_dir)``: the resolved configuration and the data
    directory, from which the accounts file is found unless ``--accounts-file`` is given.
    """
    parser = subparsers.add_parser(
        "accounts",
        help="manage accounts of the embedded identity provider",
        description="Manage accounts of the embedded OpenID Connect provider (local stack). "
        "Changes apply to a running stack at once.",
    )
    parser.add_argument(
        "--accounts-file",
        type=Path,
        default=None,
        help="accounts file (default: from the configuration)",
    )
    parser.set_defaults(accounts_context=context)
    sub = parser.add_subparsers(dest="accounts_command", required=True, metavar="COMMAND")

    add = sub.add_parser("add", help="create an account")
    add.add_argument("username")
    add.add_argument("--name", help="display name (default: the username)")
    add.add_argument("--email")
    add.add_argument(
        "--vo",
        action="append",
        help="VO the account is a member of (repeatable; default: the first of auth.vos)",
    )
    add.add_argument("--no-membership", action="store_true", help="no VO membership (a non-member)")
    add.add_argument("--admin", action="store_true", help="also give the first of auth.admin_roles")
    add.add_argument("--role", action="append", help="extra VO role (repeatable)")
    add.add_argument(
        "--entitlement", action="append", help="extra entitlement URN, verbatim (repeatable)"
    )
    add.add_argument("--disabled", action="store_true", help="create it disabled")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.set_defaults(func=cli_add)

    passwd = sub.add_parser("passwd", help="set a new password")
    passwd.add_argument("username")
    passwd.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    passwd.set_defaults(func=cli_passwd)

    for name, func, text in (
        ("disable", cli_disable, "disable an account"),
        ("enable", cli_enable, "enable a disabled account"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("username")
        p.set_defaults(func=func)

    lst = sub.add_parser("list", help="list accounts")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=cli_list)
    return parser
