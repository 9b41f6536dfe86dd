"""The report of a done firmware, as text: mail subject and body, PR comment,
commit status. Pure functions of :class:`FirmwareFacts`.

The verdict, in the order people care about:

- ``failure``: regressions (a test that passed on the previous firmware of
  the lineage fails now), or failed tests;
- ``error``: nothing failed, but jobs ended without results (infrastructure);
- ``success``: everything that ran passed.

Flaky failures are listed apart and do not count as regressions.
"""

from __future__ import annotations

import re

import msgspec

from wrtci.services.notifier.facts import FirmwareFacts
from wrtci.services.weblinks import firmware_href

MARKER_PREFIX = "<!-- wrtci:"
FAILED_TEST_STATUSES = ("FAIL",)
MAX_LOG_LINES = 10
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_BACKTICKS = re.compile(r"`+")


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    state: str
    """success, failure or error: also the GitHub commit status state."""
    headline: str
    """``3 regressions on 2 device types``, ``PASS``, ..."""


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _counts(counts: dict[str, int]) -> str:
    return " ".join(f"{key}={value}" for key, value in sorted(counts.items())) or "-"


def verdict(facts: FirmwareFacts) -> Verdict:
    summary = facts.summary
    regressed = [d for d in summary.device_types if d.regressions]
    if regressed:
        return Verdict(state="failure", headline=(
            f"{_plural(summary.regression_count, 'regression')} on "
            f"{_plural(len(regressed), 'device type')}"))
    failed = sum(summary.tests.get(status, 0) for status in FAILED_TEST_STATUSES)
    if failed:
        return Verdict(state="failure",
                       headline=f"no regressions, {_plural(failed, 'failed test')}")
    errors = sum(d.jobs.get("error", 0) for d in summary.device_types)
    if errors or not summary.device_types:
        return Verdict(state="error", headline=(
            f"ERROR: {_plural(errors, 'job')} without results" if errors else "ERROR: no jobs"))
    return Verdict(state="success", headline="PASS")


def firmware_name(facts: FirmwareFacts) -> str:
    """``24.10.0 r28427``, ``SNAPSHOT r28500``, ``pr-123 0123456789ab``."""
    if facts.revision:
        return f"{facts.version} {facts.revision.split('-')[0]}"
    if facts.commit:
        return f"{facts.version} {facts.commit[:12]}"
    return facts.version


def one_line(text: str) -> str:
    """Control characters (CR, LF, ...) as spaces: names come from firmware and test
    sources nobody vouches for, and a newline would end a mail header or a table row."""
    return _CONTROL.sub(" ", text)


def code(text: str) -> str:
    """``text`` as a Markdown code span it cannot leave: no markup, links or @mentions.

    The fence is one backtick longer than the longest run inside; ``|`` is
    escaped since a table would split the cell at it even in a code span.
    """
    text = one_line(text).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in _BACKTICKS.findall(text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def web_link(web_url: str, firmware_id: str) -> str:
    return web_url.rstrip("/") + firmware_href(firmware_id, safe=":")  # ':' kept readable


def marker(firmware_id: str) -> str:
    """Hidden in the PR comment, so that later rounds edit it instead of adding one."""
    return f"{MARKER_PREFIX}{firmware_id} -->"


def mail_subject(facts: FirmwareFacts) -> str:
    again = f" (retry {facts.round})" if facts.round else ""
    return one_line(f"[wrtci] {firmware_name(facts)}: {verdict(facts).headline}{again}")


def mail_body(facts: FirmwareFacts, web_url: str) -> str:
    summary = facts.summary
    result = verdict(facts)
    lines = [
        f"wrtci results for {firmware_name(facts)} ({facts.channel}, {facts.source_kind})",
        "",
        f"Result:    {result.headline}",
        f"Firmware:  {facts.firmware_id}",
        f"Web page:  {web_link(web_url, facts.firmware_id)}",
    ]
    if facts.round:
        lines.append(f"Round:     {facts.round} (after a retry)")
    if facts.pull_request is not None:
        lines.append(f"Pull request: {facts.pull_request.url}")
    lines += [f"Tests:     {_counts(summary.tests)}", ""]
    regressions = [(d.device_type, r) for d in summary.device_types for r in d.regressions]
    if regressions:
        lines.append("Regressions (passed on the previous firmware, fail now):")
        lines += [f"  {dtype}  {r.path}  (last passed on {r.last_passing_checkout_id})"
                  for dtype, r in regressions]
        lines.append("")
    lines.append("Per device type:")
    for dtype in summary.device_types:
        lines.append(f"  {dtype.device_type}: {_plural(len(dtype.regressions), 'regression')}; "
                     f"tests {_counts(dtype.tests)}; jobs {_counts(dtype.jobs)}")
    flaky = [(d.device_type, r) for d in summary.device_types for r in d.flaky_failures]
    if flaky:
        lines += ["", "Flaky failures (known to flip, not counted as regressions):"]
        lines += [f"  {dtype}  {r.path}" for dtype, r in flaky]
    fixed = [(d.device_type, r) for d in summary.device_types for r in d.fixed]
    if fixed:
        lines += ["", "Fixed (failed before, pass now):"]
        lines += [f"  {dtype}  {r.path}" for dtype, r in fixed]
    lines += _incident_lines(facts)
    if facts.failed_jobs:
        lines += ["", "Console logs of the failed jobs:"]
        for job in facts.failed_jobs:
            why = job.result + (f" ({job.error_code})" if job.error_code else "")
            lines.append(f"  {job.device_type}  {why}  {job.log_key or '(no log)'}")
    lines += ["", "-- ", "wrtci, OpenWrt firmware on real devices"]
    return "\n".join(lines) + "\n"


def _incident_lines(facts: FirmwareFacts) -> list[str]:
    incidents = [(d.device_type, i) for d in facts.summary.device_types for i in d.incidents]
    if not incidents:
        return []
    lines = ["", "Incidents found in the console logs:"]
    for dtype, incident in incidents:
        lines.append(f"  {dtype}  {incident.title or incident.issue_id}  "
                     f"[{incident.test_id or incident.job_id}]")
        found = facts.incident_lines.get(incident.id)
        if found is not None:
            if found.log_key:
                lines.append(f"    log: {found.log_key}")
            lines += [f"    {number:>6}: {text}" for number, text in found.lines[:MAX_LOG_LINES]]
    return lines


def status_description(facts: FirmwareFacts) -> str:
    """At most 140 characters, as GitHub allows."""
    tests = facts.summary.tests
    text = f"{verdict(facts).headline}; tests {_counts(tests)}"
    return text if len(text) <= 140 else text[:139] + "…"


def comment_body(facts: FirmwareFacts, web_url: str) -> str:
    summary = facts.summary
    result = verdict(facts)
    icon = {"success": "✅", "failure": "❌", "error": "⚠️"}[result.state]
    link = web_link(web_url, facts.firmware_id)
    lines = [
        marker(facts.firmware_id),
        f"### {icon} wrtci: {result.headline}",
        "",
        f"Firmware {code(firmware_name(facts))} — [results]({link})"
        + (f", round {facts.round} (after a retry)" if facts.round else ""),
        "",
        "| device type | regressions | tests | jobs |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {code(d.device_type)} | {len(d.regressions)} | {_counts(d.tests)} | "
              f"{_counts(d.jobs)} |" for d in summary.device_types]
    sections = [
        ("Regressions", [f"{code(d.device_type)} {code(r.path)} (last passed on "
                         f"{code(r.last_passing_checkout_id)})"
                         for d in summary.device_types for r in d.regressions]),
        ("Flaky failures", [f"{code(d.device_type)} {code(r.path)}"
                            for d in summary.device_types for r in d.flaky_failures]),
        ("Fixed", [f"{code(d.device_type)} {code(r.path)}"
                   for d in summary.device_types for r in d.fixed]),
        ("Incidents", [f"{code(d.device_type)} {code(i.title or i.issue_id)}"
                       for d in summary.device_types for i in d.incidents]),
    ]
    for title, items in sections:
        if items:
            lines += ["", f"**{title}**", *[f"- {item}" for item in items]]
    return "\n".join(lines) + "\n"
