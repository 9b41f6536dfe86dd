"""``wrtci job retry|cancel ID`` and ``wrtci firmware retry|cancel ID``.

They publish the request events the scheduler acts on (the API publishes the
same ones), so the command returns at once; ``wrtci events --job ID`` shows
what follows.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass

from wrtci.core.runtime import EventPublisher
from wrtci.services import db
from wrtci.services.cli.common import (
    CliError,
    add_command,
    cli_config,
    command_group,
    nats_connection,
)
from wrtci.services.operator_requests import NOUNS, publish_request

SOURCE = "wrtci/cli"
_TABLES = {"job": "jobs", "firmware": "checkouts"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    for noun in NOUNS:
        verbs = command_group(sub, noun, f"retry or cancel a {noun}")
        for verb, help_text in (("retry", f"run the {noun} again (failed jobs of a firmware)"),
                                ("cancel", f"stop the {noun} and mark it cancelled")):
            command = add_command(verbs, verb, run_request, help_text)
            command.add_argument("id", help=f"{noun} id")
            command.add_argument("--reason", help="recorded with the request")
            command.set_defaults(noun=noun, verb=verb)


async def _publish(args: argparse.Namespace) -> None:
    config = cli_config(args)
    conn = await db.connect(config.database)
    try:
        # Like the API's 404: a request for an id nobody knows would be dropped silently.
        known = await conn.fetchval(f"SELECT 1 FROM {_TABLES[args.noun]} WHERE id = $1",
                                    args.id)
    finally:
        await conn.close()
    if not known:
        raise CliError(f"no {args.noun} {args.id!r} (see `wrtci show firmware`)")
    async with nats_connection(config.nats) as nc:
        await publish_request(EventPublisher(nc.jetstream(), config.nats.subjects), args.noun,
                              args.verb, args.id, args.reason, getpass.getuser(), SOURCE)


def run_request(args: argparse.Namespace) -> int:
    asyncio.run(_publish(args))
    print(f"{args.verb} of {args.noun} {args.id} requested")
    return 0
