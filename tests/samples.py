"""One realistic instance of every event type."""

from __future__ import annotations

import datetime as dt

import msgspec

from wrtci.proto import events as ev
from wrtci.proto import model

T0 = dt.datetime(2026, 11, 25, 10, 0, 0, tzinfo=dt.UTC)
IMAGE = model.Image(
    id="wrtci:fw1:x86/64/generic:combined-ext4",
    target="x86", subtarget="64", profile="generic",
    name="openwrt-23.05.5-x86-64-generic-ext4-combined.img.gz", type="combined",
    filesystem="ext4",
    sha256="f5c77659a33bd43cba105cf2f75e56d054fa9e0b9a73dc9f2a5bcb0e126ff7d5",
    size=12_345_678,
    url="https://downloads.openwrt.org/releases/23.05.5/targets/x86/64/x.img.gz",
)
PLAN = model.TestPlan(name="base", tests=["tests/test_base.py"], required_features=[],
                      timeout_s=600)
LAB, DEVICE = "lab-aparcar", "x86-64-1"

_SAMPLES: list[tuple[type[ev.CloudEvent], msgspec.Struct]] = [
    (ev.FirmwareDiscovered, ev.FirmwareDiscoveredData(
        firmware_id="wrtci:official:stable:23.05.5:r24106-10cc5fcd00",
        source_kind=model.SourceKind.GITHUB_PR, priority_class=model.PriorityClass.PR,
        channel="pr", version="SNAPSHOT", revision="r24106-10cc5fcd00", images=[IMAGE],
        git_commit_hash="10cc5fcd00", pull_request=model.PullRequest(
            repository="openwrt/openwrt", number=17000, head_sha="ab" * 20,
            url="https://github.com/openwrt/openwrt/pull/17000", title="ath79: add board"))),
    (ev.FirmwareStateChanged, ev.FirmwareStateData(
        firmware_id="fw1", state=model.FirmwareState.AVAILABLE,
        previous=model.FirmwareState.RUNNING)),
    (ev.FirmwareCancelRequested, ev.FirmwareRequestData(firmware_id="fw1", requested_by="alice")),
    (ev.FirmwareRetryRequested, ev.FirmwareRequestData(firmware_id="fw1", requested_by="alice")),
    (ev.JobCreated, ev.JobSpec(
        job_id="job1", attempt=2, firmware_id="fw1", device_type="x86/64/generic",
        image=IMAGE, plans=[PLAN], priority=5, timeout_s=900.0)),
    (ev.JobStarted, ev.JobStartedData(job_id="job1", attempt=1, lab=LAB, device=DEVICE,
                                      deadline=T0 + dt.timedelta(minutes=15))),
    (ev.JobProgress, ev.JobProgressData(job_id="job1", attempt=1, lab=LAB, device=DEVICE,
                                        stage="boot", message="booting")),
    (ev.JobFinished, ev.JobFinishedData(
        job_id="job1", attempt=1, lab=LAB, device=DEVICE, result=model.JobResult.ERROR,
        error_code=model.ErrorCode.BOOT_FAILED, error_message="no shell prompt",
        tests=[model.TestResult(path="base.test_base.test_shell",
                                status=model.TestStatus.PASS, duration_s=1.5),
               model.TestResult(path="base.test_base.test_ubus", status=model.TestStatus.FAIL,
                                message="assert 1 == 0", log_excerpt="Oops")],
        log_key="logs/job1/1.log",
        artifacts=[model.Artifact(name="results.json", content_type="application/json")],
        started_at=T0, finished_at=T0 + dt.timedelta(minutes=3))),
    (ev.JobCancelled, ev.JobCancelledData(job_id="job1", attempt=1, reason="by user")),
    (ev.JobRetryRequested, ev.JobRequestData(job_id="job1", requested_by="bob")),
    (ev.JobCancelRequested, ev.JobRequestData(job_id="job1")),
    (ev.DeviceHealthChanged, ev.DeviceHealthData(
        lab=LAB, device=DEVICE, device_type="x86/64/generic",
        health=model.DeviceHealth.WARNING, state=model.DeviceState.CHECKING,
        consecutive_failures=3, check_passed=False, message="no prompt")),
    (ev.LabOnline, ev.LabOnlineData(lab=LAB, version="0.1.0", devices=[
        ev.LabDevice(name=DEVICE, device_type="x86/64/generic", features=["rootfs"])])),
    (ev.LabOffline, ev.LabOfflineData(lab=LAB, reason="shutdown")),
    (ev.LogChunk, ev.LogChunkData(job_id="job1", attempt=1, lab=LAB, device=DEVICE, seq=7,
                                  text="U-Boot 2024.01\r\nüñí\n", final=False)),
]


def sample_events() -> list[ev.CloudEvent]:
    """The samples as events, each with a new id (``CloudEvent.build``)."""
    return [kind.build(data, source="wrtci/test", time=T0) for kind, data in _SAMPLES]
