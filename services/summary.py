"""The firmware summary: what the API shows and the notifier mails.

Per device type: tests by KCIDB status (the latest attempt of each job
counts), job results, regressions that start at this firmware (flaky ones
apart), regressions this firmware fixed, and log-analysis incidents.
"""

from __future__ import annotations

import asyncpg
import msgspec

from wrtci.services.db.rows import as_struct, columns_of


class RegressionInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A row of ``regressions``: what a summary tells of it (``RegressionItem``: all)."""

    id: str
    path: str
    last_passing_checkout_id: str
    first_failing_checkout_id: str
    fixed_checkout_id: str | None
    flaky: bool


class IncidentRef(msgspec.Struct, frozen=True, kw_only=True):
    """A log-analysis incident, titled by its issue (read from ``INCIDENTS``)."""

    id: str
    issue_id: str
    title: str | None
    test_id: str | None


INCIDENTS = """incidents i
    LEFT JOIN issues s ON s.id = i.issue_id AND s.version = i.issue_version"""
"""Incidents ``i`` with their issue ``s`` (its version the incident names)."""
INCIDENT_EXPRS = {"title": "s.report_subject"}
"""For ``columns_of(..., "i", **INCIDENT_EXPRS)`` over ``INCIDENTS``."""


class IncidentInfo(IncidentRef, frozen=True, kw_only=True):
    job_id: str | None


class DeviceTypeSummary(msgspec.Struct, kw_only=True):
    device_type: str
    tests: dict[str, int] = {}
    jobs: dict[str, int] = {}
    regressions: list[RegressionInfo] = []
    flaky_failures: list[RegressionInfo] = []
    fixed: list[RegressionInfo] = []
    incidents: list[IncidentInfo] = []


class FirmwareSummary(msgspec.Struct, kw_only=True):
    firmware_id: str
    version: str
    channel: str
    state: str
    tests: dict[str, int]
    device_types: list[DeviceTypeSummary]

    @property
    def regression_count(self) -> int:
        return sum(len(d.regressions) for d in self.device_types)


async def firmware_summary(conn: asyncpg.Connection, firmware_id: str) -> FirmwareSummary | None:
    checkout = await conn.fetchrow(
        "SELECT id, version, channel, state FROM checkouts WHERE id = $1", firmware_id)
    if checkout is None:
        return None
    per_type: dict[str, DeviceTypeSummary] = {}

    def entry(device_type: str) -> DeviceTypeSummary:
        # (msgspec copies the empty list and dict defaults for each summary)
        return per_type.setdefault(device_type, DeviceTypeSummary(device_type=device_type))

    for row in await conn.fetch(
            """SELECT device_type, coalesce(result, state) AS outcome, count(*) AS n
                 FROM jobs WHERE checkout_id = $1 GROUP BY 1, 2""", firmware_id):
        entry(row["device_type"]).jobs[row["outcome"]] = row["n"]
    for row in await conn.fetch(
            """WITH latest AS (
                   SELECT t.job_id, max(t.attempt) AS attempt FROM tests t
                     JOIN jobs j ON j.id = t.job_id
                    WHERE j.checkout_id = $1 GROUP BY t.job_id)
               SELECT t.device_type, t.status, count(*) AS n FROM tests t
                 JOIN latest l ON l.job_id = t.job_id AND l.attempt = t.attempt
                GROUP BY 1, 2""", firmware_id):
        entry(row["device_type"]).tests[row["status"]] = row["n"]
    for row in await conn.fetch(
            """SELECT * FROM regressions
                WHERE first_failing_checkout_id = $1 OR fixed_checkout_id = $1
                ORDER BY device_type, path""", firmware_id):
        info = as_struct(row, RegressionInfo)
        summary = entry(row["device_type"])
        if row["fixed_checkout_id"] == firmware_id:
            summary.fixed.append(info)
        elif row["flaky"]:
            summary.flaky_failures.append(info)
        else:
            summary.regressions.append(info)
    for row in await conn.fetch(
            f"""SELECT {columns_of(IncidentInfo, "i", **INCIDENT_EXPRS, job_id="j.id")},
                       j.device_type
                  FROM {INCIDENTS} JOIN jobs j ON j.id = i.misc->>'job_id'
                 WHERE j.checkout_id = $1 ORDER BY i.id""", firmware_id):
        entry(row["device_type"]).incidents.append(as_struct(row, IncidentInfo))
    totals: dict[str, int] = {}
    for summary in per_type.values():
        for status, count in summary.tests.items():
            totals[status] = totals.get(status, 0) + count
    return FirmwareSummary(
        firmware_id=firmware_id, version=checkout["version"], channel=checkout["channel"],
        state=checkout["state"], tests=totals,
        device_types=[per_type[k] for k in sorted(per_type)])
