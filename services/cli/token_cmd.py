"""``wrtci token create|list|revoke``: the API tokens of uploads, control and reads.

A token is printed once, by ``create``; the database keeps only its digest
(``services.auth``). ``list`` never shows a secret; ``revoke`` refuses the
token at once and keeps its row, so that later uses get "revoked" as reason.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import sys

from wrtci.services.auth import SCOPES, TokenError, TokenInfo, check_name, check_scopes
from wrtci.services.cli.common import CliError, add_command, cli_config, command_group

_EXPIRES_RE = re.compile(r"^(\d+)([hdw])$")
_UNIT = {"h": dt.timedelta(hours=1), "d": dt.timedelta(days=1), "w": dt.timedelta(weeks=1)}


def parse_expires(value: str | None, now: dt.datetime) -> dt.datetime | None:
    """``--expires 90d`` (h, d, w; ``never``) -> the expiry time; None: never."""
    if value is None or value == "never":
        return None
    match = _EXPIRES_RE.match(value.strip())
    if not match or int(match[1]) == 0:
        raise CliError(f"--expires: {value!r} is not a duration like 12h, 90d, 52w (or never)")
    return now + int(match[1]) * _UNIT[match[2]]


def add_parser(sub: argparse._SubParsersAction) -> None:
    token_sub = command_group(sub, "token", "create, list and revoke API tokens")
    create = add_command(
        token_sub, "create", run_create, "a new token, printed once",
        description="Scopes: upload (POST /api/v1/firmware, the buildbot webhook), control "
                    "(retry/cancel through the API), read (pages and REST when "
                    "[api] require_read_token is set; every token may read).")
    create.add_argument("name", help="who uses it (shown as submitter / requested_by)")
    create.add_argument("--scope", action="append", required=True, choices=SCOPES,
                        help="what it may do (repeat for more than one)")
    create.add_argument("--expires", metavar="DURATION",
                        help="valid for 12h, 90d, 52w ... (default: never)")
    listing = add_command(token_sub, "list", run_list, "the tokens (never their secrets)")
    listing.add_argument("--json", action="store_true", help="one JSON document")
    add_command(token_sub, "revoke", run_revoke, "refuse a token from now on").add_argument("name")


async def _with_conn(args: argparse.Namespace, work):
    from wrtci.services import db

    conn = await db.connect(cli_config(args).database)
    try:
        return await work(conn)
    finally:
        await conn.close()


def run_create(args: argparse.Namespace) -> int:
    from wrtci.services.auth import create_token

    try:
        check_name(args.name)
        scopes = check_scopes(args.scope)
        expires = parse_expires(args.expires, dt.datetime.now(dt.UTC))
        token = asyncio.run(_with_conn(
            args, lambda conn: create_token(conn, args.name, scopes, expires)))
    except TokenError as exc:
        raise CliError(str(exc)) from None
    until = f"until {expires:%Y-%m-%d %H:%M} UTC" if expires else "no expiry"
    print(f"token {args.name} created (scope {', '.join(scopes)}, {until}).", file=sys.stderr)
    print("It is shown only now; the database keeps a digest. Use it as "
          "'Authorization: Bearer TOKEN' or WRTCI_TOKEN:", file=sys.stderr)
    print(token)
    return 0


def _when(value: dt.datetime | None, never: str = "-") -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else never


def run_list(args: argparse.Namespace) -> int:
    import msgspec

    from wrtci.services.auth import list_tokens

    tokens: list[TokenInfo] = asyncio.run(_with_conn(args, list_tokens))
    now = dt.datetime.now(dt.UTC)
    if args.json:
        items = [msgspec.to_builtins(t) | {"state": t.state(now)} for t in tokens]
        print(msgspec.json.encode(items).decode())
        return 0
    if not tokens:
        print("no API tokens (wrtci token create NAME --scope upload|control|read)")
        return 0
    print(f"{'NAME':24} {'SCOPE':16} {'STATE':8} {'CREATED':16}  {'EXPIRES':16}  "
          f"{'LAST USED':16}  REVOKED")
    for t in tokens:
        print(f"{t.name:24} {','.join(t.scopes):16} {t.state(now):8} {_when(t.created_at):16}  "
              f"{_when(t.expires_at, 'never'):16}  {_when(t.last_used_at, 'never'):16}  "
              f"{_when(t.revoked_at)}")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    from wrtci.services.auth import revoke_token

    info = asyncio.run(_with_conn(args, lambda conn: revoke_token(conn, args.name)))
    if info is None:
        raise CliError(f"no token named {args.name!r} (wrtci token list)")
    print(f"token {info.name} revoked at {_when(info.revoked_at)} UTC; "
          "requests with it get 401 from now on")
    return 0
