"""The notifier's pure parts (texts, recipients, rounds, config) and its SMTP
client's reading of a real server's answers."""

from __future__ import annotations

import asyncio

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from tests.servers.smtp import Mailbox
from wrtci.core.config import load_config
from wrtci.proto.events import FirmwareStateChanged, FirmwareStateData
from wrtci.proto.model import FirmwareState, PullRequest
from wrtci.services.lifecycle import state_event_id
from wrtci.services.notifier import Config, mail, report
from wrtci.services.notifier.config import MailRule, MailSection, NotifierSection
from wrtci.services.notifier.delivery import PermanentFailure, TemporaryFailure
from wrtci.services.notifier.facts import FirmwareFacts, IncidentLines
from wrtci.services.notifier.service import event_round
from wrtci.services.stack.servers import free_port
from wrtci.services.summary import (
    DeviceTypeSummary,
    FirmwareSummary,
    IncidentInfo,
    RegressionInfo,
)

FW = "wrtci:official:stable:24.10.0:r28427-6df0e3d02a"
PREVIOUS = "wrtci:official:stable:24.10.0:r28400-0123456789"


def _regression(path: str, *, flaky: bool = False, fixed: bool = False) -> RegressionInfo:
    return RegressionInfo(id=f"reg:{path}", path=path, last_passing_checkout_id=PREVIOUS,
                          first_failing_checkout_id=PREVIOUS if fixed else FW,
                          fixed_checkout_id=FW if fixed else None, flaky=flaky)


def facts(*device_types: DeviceTypeSummary, round_: int = 0, **fields) -> FirmwareFacts:
    totals: dict[str, int] = {}
    for dtype in device_types:
        for status, count in dtype.tests.items():
            totals[status] = totals.get(status, 0) + count
    values = dict(
        firmware_id=FW, round=round_, state="done", source_kind="official", channel="stable",
        version="24.10.0", revision="r28427-6df0e3d02a", commit="6df0e3d02a" + "0" * 30,
        submitter=None, pull_request=None,
        summary=FirmwareSummary(firmware_id=FW, version="24.10.0", channel="stable",
                                state="done", tests=totals, device_types=list(device_types)),
        incident_lines={}, failed_jobs=[])
    return FirmwareFacts(**(values | fields))


def dtype(name: str, tests: dict[str, int], jobs: dict[str, int], **lists) -> DeviceTypeSummary:
    return DeviceTypeSummary(device_type=name, tests=tests, jobs=jobs,
                             regressions=lists.get("regressions", []),
                             flaky_failures=lists.get("flaky_failures", []),
                             fixed=lists.get("fixed", []), incidents=lists.get("incidents", []))


def test_verdict_regressions_then_failures_then_errors_then_pass():
    regressed = facts(
        dtype("x86/64/generic", {"FAIL": 2}, {"fail": 1},
              regressions=[_regression("a"), _regression("b")]),
        dtype("ath79/generic/c7", {"FAIL": 1}, {"fail": 1}, regressions=[_regression("a")]))
    assert report.verdict(regressed) == report.Verdict(
        state="failure", headline="3 regressions on 2 device types")
    assert report.mail_subject(regressed) == (
        "[wrtci] 24.10.0 r28427: 3 regressions on 2 device types")
    one = facts(dtype("x86/64/generic", {"FAIL": 1}, {"fail": 1},
                      regressions=[_regression("a")]))
    assert report.verdict(one).headline == "1 regression on 1 device type"
    failing = facts(dtype("x86/64/generic", {"FAIL": 1, "PASS": 3}, {"fail": 1},
                          flaky_failures=[_regression("a", flaky=True)]))
    assert report.verdict(failing) == report.Verdict(
        state="failure", headline="no regressions, 1 failed test")
    broken = facts(dtype("x86/64/generic", {}, {"error": 2}))
    assert report.verdict(broken) == report.Verdict(
        state="error", headline="ERROR: 2 jobs without results")
    assert report.verdict(facts()).headline == "ERROR: no jobs"
    passing = facts(dtype("x86/64/generic", {"PASS": 3, "SKIP": 1}, {"pass": 1}), round_=2)
    assert report.verdict(passing).state == "success"
    assert report.mail_subject(passing) == "[wrtci] 24.10.0 r28427: PASS (retry 2)"


def test_firmware_names_and_links():
    assert report.firmware_name(facts(revision=None, version="pr-42")) == "pr-42 6df0e3d02a00"
    assert report.firmware_name(facts(revision=None, commit=None, version="x")) == "x"
    link = report.web_link("https://ci.example.org/", "wrtci:pr:openwrt/openwrt#42:abc")
    assert link == "https://ci.example.org/firmware/wrtci:pr:openwrt%2Fopenwrt%2342:abc"
    assert report.marker(FW) == f"<!-- wrtci:{FW} -->"


def test_mail_body_lists_regressions_first_flaky_and_fixed_apart_and_incident_lines():
    body = report.mail_body(facts(
        dtype("ath79/generic/c7", {"PASS": 2}, {"pass": 1},
              fixed=[_regression("base.c", fixed=True)]),
        dtype("x86/64/generic", {"FAIL": 2, "PASS": 5}, {"fail": 1},
              regressions=[_regression("base.a")],
              flaky_failures=[_regression("base.b", flaky=True)],
              incidents=[IncidentInfo(id="inc1", issue_id="wrtci:issue:panic",
                                      title="Kernel panic", job_id="job1", test_id=None)]),
        incident_lines={"inc1": IncidentLines(log_key="logs/job1/1/console.log",
                                              lines=[(42, "Kernel panic - not syncing")])},
    ), "https://ci.example.org")
    order = [body.index(text) for text in (
        "Regressions (passed", "Per device type:", "Flaky failures", "Fixed", "Incidents")]
    assert order == sorted(order)
    assert f"  x86/64/generic  base.a  (last passed on {PREVIOUS})" in body
    assert "  x86/64/generic  base.b\n" in body
    assert "  ath79/generic/c7  base.c\n" in body
    assert "  x86/64/generic: 1 regression; tests FAIL=2 PASS=5; jobs fail=1" in body
    assert "    log: logs/job1/1/console.log\n        42: Kernel panic - not syncing" in body


def test_comment_and_status_description():
    pr = PullRequest(repository="openwrt/openwrt", number=42, head_sha="c" * 40, url="u")
    many = {f"STATUS{i}": i for i in range(40)}
    f = facts(dtype("x86/64/generic", many, {"pass": 1}), pull_request=pr, round_=1)
    assert len(report.status_description(f)) <= 140
    body = report.comment_body(f, "https://ci.example.org")
    assert body.startswith(f"<!-- wrtci:{FW} -->\n### ")
    assert "round 1 (after a retry)" in body


def _done(firmware_id: str, event_id: str) -> FirmwareStateChanged:
    return FirmwareStateChanged.build(
        FirmwareStateData(firmware_id=firmware_id, state=FirmwareState.DONE),
        source="test", id=event_id)


def test_round_of_a_done_event_comes_from_the_schedulers_event_id():
    for round_ in (0, 1, 12):
        event_id = state_event_id(FW, FirmwareState.DONE, round_)
        assert event_round(_done(FW, event_id)) == round_
    assert event_round(_done(FW, "0b5a5a1e-uuid")) is None
    assert event_round(_done(FW, f"firmware.state:{FW}:done:rx")) is None


def test_recipients_follow_the_rules_and_the_submitter():
    section = MailSection(rules=[
        MailRule(to=["devel@example.org"], source_kinds=["official"]),
        MailRule(to=["stable@example.org", "devel@example.org"], channels=["stable"]),
        MailRule(to=["pr@example.org"], source_kinds=["github_pr"], channels=["pr"]),
    ], submitter_addresses={"alice": "alice@example.org"})
    assert mail.recipients(facts(), section) == ["devel@example.org", "stable@example.org"]
    upload = facts(source_kind="upload", channel="custom", submitter="alice")
    assert mail.recipients(upload, section) == ["alice@example.org"]
    assert mail.recipients(facts(source_kind="upload", channel="custom",
                                 submitter="bob@example.org"), section) == ["bob@example.org"]
    assert mail.recipients(facts(source_kind="upload", channel="custom", submitter="bob"),
                           section) == []
    quiet = MailSection(rules=section.rules, mail_submitter=False,
                        submitter_addresses=section.submitter_addresses)
    assert mail.recipients(upload, quiet) == []


def test_config_from_toml_and_secrets_from_the_environment(tmp_path):
    secret = tmp_path / "smtp-password"
    secret.write_text("s3cret\n")
    path = tmp_path / "site.toml"
    path.write_text("""
[notifier]
web_url = "https://ci.example.org"
retry_delays_s = [1.0, 10.0]

[notifier.mail]
enabled = true
host = "smtp.example.org"
port = 465
tls = "ssl"
user = "wrtci"

[[notifier.mail.rules]]
to = ["devel@example.org"]
channels = ["snapshot"]

[notifier.github]
enabled = true
""")
    config = load_config(Config, path, environ={
        "WRTCI_NOTIFIER__MAIL__PASSWORD_FILE": str(secret),
        "WRTCI_NOTIFIER__GITHUB__TOKEN": "ghs_x"})
    section = config.notifier
    assert (section.mail.tls, section.mail.password, section.github.token) == (
        "ssl", "s3cret", "ghs_x")
    assert section.mail.rules[0].channels == ["snapshot"]
    assert [section.retry_delay(n) for n in (1, 2, 3, 9)] == [1.0, 10.0, 10.0, 10.0]
    assert NotifierSection().mail.enabled is False  # no SMTP server unless configured


# -- SMTP answers --------------------------------------------------------------------------


class Refusing(Mailbox):
    def __init__(self, code: str) -> None:
        super().__init__()
        self.code = code

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        return self.code


def _login(server, session, envelope, mechanism, auth_data) -> AuthResult:
    good = auth_data.login == b"wrtci" and auth_data.password == b"right"
    return AuthResult(success=good, handled=False)


@pytest.fixture
async def smtp_factory():
    controllers: list[Controller] = []

    async def start(handler, **options) -> int:
        port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
        await asyncio.to_thread(controller.start)
        controllers.append(controller)
        return port

    yield start
    for controller in controllers:
        await asyncio.to_thread(controller.stop)


def _message(section: MailSection):
    return mail.build_message(section, ["devel@example.org"], "subject", "body\n",
                              mail.message_id(FW, 0, section.from_address))


async def test_smtp_answers_are_sorted_into_temporary_and_permanent(smtp_factory):
    permanent = MailSection(host="127.0.0.1", port=await smtp_factory(
        Refusing("550 5.1.1 no such user")), timeout_s=5)
    with pytest.raises(PermanentFailure, match="recipients refused"):
        await mail.send(permanent, _message(permanent))
    later = MailSection(host="127.0.0.1", port=await smtp_factory(
        Refusing("451 4.3.0 try again later")), timeout_s=5)
    with pytest.raises(TemporaryFailure, match="for now"):
        await mail.send(later, _message(later))
    nobody = MailSection(host="127.0.0.1", port=free_port(), timeout_s=5)
    with pytest.raises(TemporaryFailure, match="ConnectionRefused"):
        await mail.send(nobody, _message(nobody))


async def test_smtp_login(smtp_factory):
    mailbox = Mailbox()
    port = await smtp_factory(mailbox, authenticator=_login, auth_require_tls=False)
    good = MailSection(host="127.0.0.1", port=port, user="wrtci", password="right", timeout_s=5)
    await mail.send(good, _message(good))
    assert [m["Subject"] for m in mailbox.messages] == ["subject"]
    bad = MailSection(host="127.0.0.1", port=port, user="wrtci", password="wrong", timeout_s=5)
    with pytest.raises(PermanentFailure, match="login refused"):
        await mail.send(bad, _message(bad))
    assert len(mailbox.messages) == 1


def test_hostile_names_stay_one_mail_header_and_inside_their_code_spans():
    # version comes from a downloads-server profiles.json, paths and titles from labs.
    hostile = facts(
        dtype("x86/64/generic|x", {"FAIL": 1}, {"fail": 1},
              regressions=[_regression("base.t[`](http://evil) @openwrt/core\n# Hi")],
              incidents=[IncidentInfo(id="inc1", issue_id="wrtci:issue:x",
                                      title="@everyone **bold** <b>x</b>", job_id="j",
                                      test_id=None)]),
        version="24.10.0\r\nBcc: victim@example.org", revision=None, commit=None,
        pull_request=PullRequest(repository="openwrt/openwrt", number=1, head_sha="c" * 40,
                                 url="u"))
    subject = report.mail_subject(hostile)
    assert "\r" not in subject and "\n" not in subject
    message = mail.build_message(MailSection(), ["a@example.org"], subject, "body", "<id@x>")
    assert message["Bcc"] is None and "Bcc: victim" in message["Subject"]

    body = report.comment_body(hostile, "https://ci.example.org")
    assert "\n# Hi" not in body and "\nBcc" not in body
    assert "``base.t[`](http://evil) @openwrt/core # Hi``" in body
    assert "`@everyone **bold** <b>x</b>`" in body
    assert "| `x86/64/generic\\|x` |" in body
    assert report.code("`edge`") == "`` `edge` ``"
