"""Regressions and flaky tests, from the history of a test on a device type.

A firmware's *verdict* for one test on one device type comes from all its
runs there (attempts, reruns, several labs): ``pass`` or ``fail`` when they
agree, ``flaky`` when they disagree (then it counts as neither).

- A regression starts at the first failing firmware after a passing one of
  the same lineage (source kind + channel) and is fixed by the next passing
  one. Episodes are recomputed from the history each time, so results that
  arrive out of order give the same rows.
- A test is flaky on a device type when its outcome flips between runs of
  the same firmware; the score is flips / comparable consecutive pairs over
  the latest ``window`` runs. Failures of a flaky test are marked flaky
  instead of counting as regressions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import asyncpg
import msgspec

PASS, FAIL = "PASS", "FAIL"
LINEAGE_WINDOW = 50
"""Firmwares of a lineage that regression episodes are recomputed over."""


class FirmwareRuns(msgspec.Struct, frozen=True, kw_only=True):
    checkout_id: str
    statuses: list[str]
    """KCIDB statuses of every run, in run order."""
    last_test_id: str


class Episode(msgspec.Struct, kw_only=True):
    last_passing: str
    first_failing: str
    first_failing_test_id: str
    fixed: str | None = None
    fixed_test_id: str | None = None


class Flakiness(msgspec.Struct, frozen=True, kw_only=True):
    flips: int
    pairs: int
    runs: int

    @property
    def score(self) -> float:
        return self.flips / self.pairs if self.pairs else 0.0

    def is_flaky(self, threshold: float) -> bool:
        return self.flips > 0 and self.score >= threshold


def verdict(statuses: Sequence[str]) -> str | None:
    outcomes = {s for s in statuses if s in (PASS, FAIL)}
    if not outcomes:
        return None
    return "flaky" if len(outcomes) > 1 else outcomes.pop()


def episodes(history: Sequence[FirmwareRuns]) -> list[Episode]:
    """Regression episodes in a lineage's history (oldest firmware first)."""
    found: list[Episode] = []
    last_pass: str | None = None
    current: Episode | None = None
    for firmware in history:
        outcome = verdict(firmware.statuses)
        if outcome == PASS:
            if current is not None:
                current.fixed, current.fixed_test_id = firmware.checkout_id, firmware.last_test_id
                found.append(current)
                current = None
            last_pass = firmware.checkout_id
        elif outcome == FAIL and current is None and last_pass is not None:
            current = Episode(last_passing=last_pass, first_failing=firmware.checkout_id,
                              first_failing_test_id=firmware.last_test_id)
    if current is not None:
        found.append(current)
    return found


def flakiness(runs: Sequence[tuple[str, str]]) -> Flakiness:
    """``runs``: (checkout_id, status) oldest first; flips only count within a firmware."""
    flips = pairs = 0
    previous: dict[str, str] = {}
    counted = 0
    for checkout_id, status in runs:
        if status not in (PASS, FAIL):
            continue
        counted += 1
        before = previous.get(checkout_id)
        if before is not None:
            pairs += 1
            flips += before != status
        previous[checkout_id] = status
    return Flakiness(flips=flips, pairs=pairs, runs=counted)


def regression_id(lineage: str, device_type: str, path: str, first_failing: str) -> str:
    digest = hashlib.sha256(
        "\0".join((lineage, device_type, path, first_failing)).encode()
    ).hexdigest()[:24]
    return f"wrtci:regression:{digest}"


# -- SQL ----------------------------------------------------------------------------


async def analyse_attempt(conn: asyncpg.Connection, job_id: str, attempt: int, *,
                          window: int, threshold: float) -> None:
    """Update flaky_tests and regressions for the tests of one finished attempt."""
    job = await conn.fetchrow(
        """SELECT j.device_type, c.source_kind, c.channel
             FROM jobs j JOIN checkouts c ON c.id = j.checkout_id WHERE j.id = $1""", job_id)
    if job is None:
        return
    paths = [r["path"] for r in await conn.fetch(
        "SELECT DISTINCT path FROM tests WHERE job_id = $1 AND attempt = $2", job_id, attempt)]
    if not paths:
        return
    device_type = job["device_type"]
    flaky = await _update_flakiness(conn, device_type, paths, window, threshold)
    lineage = f"{job['source_kind']}/{job['channel']}"
    await _update_regressions(conn, lineage, job["source_kind"], job["channel"], device_type,
                              paths, flaky)


async def _update_flakiness(conn: asyncpg.Connection, device_type: str, paths: list[str],
                            window: int, threshold: float) -> set[str]:
    rows = await conn.fetch(
        """SELECT p.path, r.checkout_id, r.status
             FROM unnest($2::text[]) AS p(path)
             CROSS JOIN LATERAL (
                 SELECT j.checkout_id, t.status, t.start_time, t.attempt, t.ingested_at
                   FROM tests t JOIN jobs j ON j.id = t.job_id
                  WHERE t.device_type = $1 AND t.path = p.path
                  ORDER BY t.start_time DESC NULLS LAST, t.ingested_at DESC
                  LIMIT $3) AS r
            ORDER BY p.path, r.start_time NULLS FIRST, r.attempt, r.ingested_at""",
        device_type, paths, window,
    )
    runs: dict[str, list[tuple[str, str]]] = {path: [] for path in paths}
    last_checkout: dict[str, str] = {}
    for row in rows:
        runs[row["path"]].append((row["checkout_id"], row["status"]))
        last_checkout[row["path"]] = row["checkout_id"]
    flaky: set[str] = set()
    records = []
    for path, history in runs.items():
        result = flakiness(history)
        if result.is_flaky(threshold):
            flaky.add(path)
        records.append((device_type, path, result.score, result.flips, result.pairs,
                        result.runs, result.is_flaky(threshold), last_checkout.get(path)))
    await conn.executemany(
        """INSERT INTO flaky_tests (device_type, path, score, flips, pairs, runs, flaky,
                                    last_checkout_id, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
           ON CONFLICT (device_type, path) DO UPDATE SET
               score = EXCLUDED.score, flips = EXCLUDED.flips, pairs = EXCLUDED.pairs,
               runs = EXCLUDED.runs, flaky = EXCLUDED.flaky,
               last_checkout_id = EXCLUDED.last_checkout_id, updated_at = now()""",
        records,
    )
    return flaky


async def _update_regressions(conn: asyncpg.Connection, lineage: str, source_kind: str,
                              channel: str, device_type: str, paths: list[str],
                              flaky: set[str]) -> None:
    rows = await conn.fetch(
        """WITH lineage AS (
               SELECT id, created_at FROM checkouts
                WHERE source_kind = $3 AND channel = $4
                ORDER BY created_at DESC, id DESC LIMIT $5)
           SELECT t.path, l.id AS checkout_id, l.created_at,
                  array_agg(t.status ORDER BY t.attempt, t.ingested_at) AS statuses,
                  (array_agg(t.id ORDER BY t.attempt DESC, t.ingested_at DESC))[1]
                      AS last_test_id
             FROM tests t
             JOIN jobs j ON j.id = t.job_id
             JOIN lineage l ON l.id = j.checkout_id
            WHERE t.device_type = $1 AND t.path = ANY($2::text[])
            GROUP BY t.path, l.id, l.created_at
            ORDER BY t.path, l.created_at, l.id""",
        device_type, paths, source_kind, channel, LINEAGE_WINDOW,
    )
    histories: dict[str, list[FirmwareRuns]] = {path: [] for path in paths}
    window: set[str] = set()
    for row in rows:
        window.add(row["checkout_id"])
        histories[row["path"]].append(FirmwareRuns(
            checkout_id=row["checkout_id"], statuses=list(row["statuses"]),
            last_test_id=row["last_test_id"]))
    records = []
    for path, history in histories.items():
        for e in episodes(history):
            rid = regression_id(lineage, device_type, path, e.first_failing)
            records.append((rid, lineage, device_type, path, e.last_passing, e.first_failing,
                            e.first_failing_test_id, e.fixed, e.fixed_test_id, path in flaky))
    await conn.executemany(
        """INSERT INTO regressions (id, lineage, device_type, path,
               last_passing_checkout_id, first_failing_checkout_id,
               first_failing_test_id, fixed_checkout_id, fixed_test_id, flaky, fixed_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                   CASE WHEN $8::text IS NULL THEN NULL ELSE now() END)
           ON CONFLICT (id) DO UPDATE SET
               last_passing_checkout_id = EXCLUDED.last_passing_checkout_id,
               first_failing_test_id = EXCLUDED.first_failing_test_id,
               fixed_checkout_id = EXCLUDED.fixed_checkout_id,
               fixed_test_id = EXCLUDED.fixed_test_id,
               flaky = EXCLUDED.flaky,
               fixed_at = CASE
                   WHEN EXCLUDED.fixed_checkout_id IS NULL THEN NULL
                   WHEN regressions.fixed_checkout_id = EXCLUDED.fixed_checkout_id
                       THEN regressions.fixed_at
                   ELSE now() END""",
        records,
    )
    # Episodes that results arriving out of order have since disproved.
    await conn.execute(
        """DELETE FROM regressions
            WHERE lineage = $1 AND device_type = $2 AND path = ANY($3::text[])
              AND first_failing_checkout_id = ANY($4::text[])
              AND NOT (id = ANY($5::text[]))""",
        lineage, device_type, paths, list(window), [r[0] for r in records],
    )
