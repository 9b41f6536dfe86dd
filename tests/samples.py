"""One realistic instance of every event type."""

from __future__ import annotations

import datetime as dt

from wrtci.proto import events as ev
from wrtci.proto.model import (
    Artifact,
    DeviceHealth,
    DeviceState,
    ErrorCode,
    FirmwareState,
    Image,
    JobResult,
    PriorityClass,
    PullRequest,
    SourceKind,
    TestPlan,
    TestResult,
    TestStatus,
)

T0 = dt.datetime(2026, 11, 25, 10, 0, 0, tzinfo=dt.UTC)
IMAGE = Image(
    id="wrtci:fw1:x86/64/generic:combined-ext4",
    target="x86", subtarget="64", profile="generic",
    name="openwrt-23.05.5-x86-64-generic-ext4-combined.img.gz", type="combined",
    filesystem="ext4",
    sha256="f5c77659a33bd43cba105cf2f75e56d054fa9e0b9a73dc9f2a5bcb0e126ff7d5",
    size=12_345_678,
    url="https://downloads.openwrt.org/releases/23.05.5/targets/x86/64/x.img.gz",
)
PLAN = TestPlan(name="base", tests=["tests/test_base.py"], required_features=[], timeout_s=600)


def sample_events() -> list[ev.CloudEvent]:
    src = "wrtci/test"
    lab, device = "lab-aparcar", "x86-64-1"
    return [
        ev.FirmwareDiscovered.build(ev.FirmwareDiscoveredData(
            firmware_id="wrtci:official:stable:23.05.5:r24106-10cc5fcd00",
            source_kind=SourceKind.GITHUB_PR, priority_class=PriorityClass.PR, channel="pr",
            version="SNAPSHOT", revision="r24106-10cc5fcd00", images=[IMAGE],
            git_commit_hash="10cc5fcd00", pull_request=PullRequest(
                repository="openwrt/openwrt", number=17000, head_sha="ab" * 20,
                url="https://github.com/openwrt/openwrt/pull/17000", title="ath79: add board"),
        ), source=src, id="fw-discovered-1", time=T0),
        ev.FirmwareStateChanged.build(ev.FirmwareStateData(
            firmware_id="fw1", state=FirmwareState.AVAILABLE, previous=FirmwareState.RUNNING,
        ), source=src, time=T0),
        ev.FirmwareCancelRequested.build(ev.FirmwareRequestData(
            firmware_id="fw1", requested_by="alice"), source=src, time=T0),
        ev.FirmwareRetryRequested.build(ev.FirmwareRequestData(
            firmware_id="fw1", requested_by="alice"), source=src, time=T0),
        ev.JobCreated.build(ev.JobSpec(
            job_id="job1", attempt=2, firmware_id="fw1", device_type="x86/64/generic",
            image=IMAGE, plans=[PLAN], priority=5, timeout_s=900.0,
        ), source=src, time=T0),
        ev.JobStarted.build(ev.JobStartedData(job_id="job1", attempt=1, lab=lab, device=device,
                                              deadline=T0 + dt.timedelta(minutes=15)),
                            source=src, time=T0),
        ev.JobProgress.build(ev.JobProgressData(job_id="job1", attempt=1, lab=lab,
                                                device=device, stage="boot", message="booting"),
                             source=src, time=T0),
        ev.JobFinished.build(ev.JobFinishedData(
            job_id="job1", attempt=1, lab=lab, device=device, result=JobResult.ERROR,
            error_code=ErrorCode.BOOT_FAILED, error_message="no shell prompt",
            tests=[TestResult(path="base.test_base.test_shell", status=TestStatus.PASS,
                              duration_s=1.5),
                   TestResult(path="base.test_base.test_ubus", status=TestStatus.FAIL,
                              message="assert 1 == 0", log_excerpt="Oops")],
            log_key="logs/job1/1.log",
            artifacts=[Artifact(name="results.json", content_type="application/json")],
            started_at=T0, finished_at=T0 + dt.timedelta(minutes=3),
        ), source=src, time=T0),
        ev.JobCancelled.build(ev.JobCancelledData(job_id="job1", attempt=1, reason="by user"),
                              source=src, time=T0),
        ev.JobRetryRequested.build(ev.JobRequestData(job_id="job1", requested_by="bob"),
                                   source=src, time=T0),
        ev.JobCancelRequested.build(ev.JobRequestData(job_id="job1"), source=src, time=T0),
        ev.DeviceHealthChanged.build(ev.DeviceHealthData(
            lab=lab, device=device, device_type="x86/64/generic", health=DeviceHealth.WARNING,
            state=DeviceState.CHECKING, consecutive_failures=3, check_passed=False,
            message="no prompt"), source=src, time=T0),
        ev.LabOnline.build(ev.LabOnlineData(lab=lab, version="0.1.0", devices=[
            ev.LabDevice(name=device, device_type="x86/64/generic", features=["rootfs"])]),
            source=src, time=T0),
        ev.LabOffline.build(ev.LabOfflineData(lab=lab, reason="shutdown"), source=src, time=T0),
        ev.LogChunk.build(ev.LogChunkData(job_id="job1", attempt=1, lab=lab, device=device,
                                          seq=7, text="U-Boot 2024.01\r\nüñí\n", final=False),
                          source=src, time=T0),
    ]
