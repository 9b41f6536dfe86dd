"""``wrtci job retry|cancel ID`` and ``wrtci firmware retry|cancel ID``.

They publish the request events the scheduler acts on (the API publishes the
same ones), so the command returns at once; ``wrtci events --job ID`` shows
what follows.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import uuid

from proto.events import (
    CloudEvent,
    FirmwareCancelRequested,
    FirmwareCancelRequestedData,
    FirmwareRetryRequested,
    JobCancelRequested,
    JobRequestData,
    JobRetryRequested,
)
from services.cli.common import add_config_argument, cli_config, nats_connection
from services.runtime import EventPublisher

SOURCE = "wrtci/cli"


def add_parser(sub: argparse._SubParsersAction) -> None:
    for noun in ("job", "firmware"):
        parser = sub.add_parser(noun, help=f"retry or cancel a {noun}")
        verbs = parser.add_subparsers(dest=f"{noun}_command", required=True)
        for verb, help_text in (("retry", f"run the {noun} again (failed jobs of a firmware)"),
                                ("cancel", f"stop the {noun} and mark it cancelled")):
            command = verbs.add_parser(verb, help=help_text)
            add_config_argument(command)
            command.add_argument("id", help=f"{noun} id")
            command.add_argument("--reason", help="recorded with the request")
            command.set_defaults(func=run_request, noun=noun, verb=verb)


def request_event(noun: str, verb: str, object_id: str, reason: str | None,
                  requested_by: str) -> CloudEvent:
    if noun == "job":
        data = JobRequestData(job_id=object_id, requested_by=requested_by, reason=reason)
        event_type = JobRetryRequested if verb == "retry" else JobCancelRequested
    else:
        data = FirmwareCancelRequestedData(firmware_id=object_id, requested_by=requested_by,
                                           reason=reason)
        event_type = FirmwareRetryRequested if verb == "retry" else FirmwareCancelRequested
    # Each request is new (a second retry is a second request): a random id.
    return event_type.build(data, source=SOURCE, subject=object_id,  # type: ignore[arg-type]
                            id=f"{noun}.{verb}:{object_id}:{uuid.uuid4().hex}")


async def _publish(args: argparse.Namespace) -> None:
    config = cli_config(args)
    event = request_event(args.noun, args.verb, args.id, args.reason, getpass.getuser())
    async with nats_connection(config.nats) as nc:
        await EventPublisher(nc.jetstream(), config.nats.subjects).publish(event)


def run_request(args: argparse.Namespace) -> int:
    asyncio.run(_publish(args))
    print(f"{args.verb} of {args.noun} {args.id} requested")
    return 0
