"""Pull-request firmware that nobody wants tested any more is cancelled.

A new push to a PR makes the previous head's firmware obsolete; removing the
trigger label, closing or merging the PR withdraws the request to test it.
The trigger then publishes a ``firmware.cancel_requested`` event for that
firmware and the scheduler does the rest (withdraws its queued jobs, tells the
labs to stop the running ones, ends the firmware ``done``).

The trigger keeps no memory of which PRs it has seen: "the PR's firmware not
yet done" comes from the database on every poll (checkouts of source
``github_pr`` for this repository whose state is not ``done``), so a
restarted trigger or another replica finds them too. A request has a
deterministic event id (``Nats-Msg-Id``) and is marked in
``trigger_announcements`` once published, so the trigger requests it once per
firmware: polling again, even after the stream's dedupe window, sends
nothing, and firmware with a request is not looked at again.
"""

from __future__ import annotations

import enum

import asyncpg
import msgspec

from wrtci.proto.events import FirmwareCancelRequested, FirmwareRequestData

REQUESTED_BY = "wrtci/trigger"
EVENT_SOURCE = "/wrtci/trigger/github_pr"
EVENT_PREFIX = "firmware.cancel_requested:"


class Cause(enum.Enum):
    SUPERSEDED = "superseded"
    LABEL_REMOVED = "label-removed"
    CLOSED = "closed"


class PrFirmware(msgspec.Struct, frozen=True):
    """A PR's firmware as recorded: not done, no cancel requested yet."""

    firmware_id: str
    number: int
    head_sha: str


class PrNow(msgspec.Struct, frozen=True):
    """The PR as GitHub shows it now."""

    head_sha: str
    labelled: bool
    open: bool = True


class CancelRequest(msgspec.Struct, frozen=True):
    firmware_id: str
    cause: Cause
    reason: str

    @property
    def event_id(self) -> str:
        return f"{EVENT_PREFIX}{self.firmware_id}:{self.cause.value}"

    def event(self) -> FirmwareCancelRequested:
        return FirmwareCancelRequested.build(
            FirmwareRequestData(firmware_id=self.firmware_id,
                                        requested_by=REQUESTED_BY, reason=self.reason),
            source=EVENT_SOURCE, subject=self.firmware_id, id=self.event_id)


def to_cancel(firmware: list[PrFirmware], pulls: dict[int, PrNow]) -> list[CancelRequest]:
    """What to cancel, given each PR's state; a PR missing from ``pulls`` is left alone.

    Closed outranks an unlabelled PR, which outranks a new push: the reason
    names what the PR's author did last that matters most.
    """
    requests = []
    for fw in firmware:
        pull = pulls.get(fw.number)
        if pull is None:
            continue
        if not pull.open:
            requests.append(CancelRequest(fw.firmware_id, Cause.CLOSED, "pull request closed"))
        elif not pull.labelled:
            requests.append(CancelRequest(fw.firmware_id, Cause.LABEL_REMOVED, "label removed"))
        elif pull.head_sha != fw.head_sha:
            requests.append(CancelRequest(fw.firmware_id, Cause.SUPERSEDED,
                                          f"superseded by {pull.head_sha}"))
    return requests


async def open_pr_firmware(pool: asyncpg.Pool, repository: str) -> list[PrFirmware]:
    """The repository's PR firmware not done and without a cancel request from us."""
    rows = await pool.fetch(
        """
        SELECT c.id, (c.misc->'pull_request'->>'number')::int AS number,
               c.misc->'pull_request'->>'head_sha' AS head_sha
          FROM checkouts c
         WHERE c.source_kind = 'github_pr' AND c.state <> 'done'
           AND c.misc->'pull_request'->>'repository' = $1
           AND NOT EXISTS (SELECT 1 FROM trigger_announcements a
                            WHERE a.checkout_id = c.id AND starts_with(a.event_id, $2))
         ORDER BY c.id
        """,
        repository, EVENT_PREFIX,
    )
    return [PrFirmware(r["id"], r["number"], r["head_sha"]) for r in rows
            if r["number"] is not None and r["head_sha"] is not None]
