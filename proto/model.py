"""Value types shared by events, KV records and the database layer."""

from __future__ import annotations

import enum

import msgspec

from wrtci.proto.limits import Count, Name, Seconds, Size, Text
from wrtci.proto.subjects import PriorityClass

__all__ = [
    "Artifact",
    "DeviceCondition",
    "DeviceHealth",
    "DeviceState",
    "ErrorCode",
    "FirmwareState",
    "Image",
    "JobResult",
    "JobState",
    "PriorityClass",
    "PullRequest",
    "SourceKind",
    "TestPlan",
    "TestResult",
    "TestStatus",
]


class SourceKind(enum.StrEnum):
    OFFICIAL = "official"
    GITHUB_PR = "github_pr"
    UPLOAD = "upload"
    BUILDBOT = "buildbot"


class FirmwareState(enum.StrEnum):
    """KernelCI node states of a firmware (a KCIDB checkout)."""

    RUNNING = "running"
    AVAILABLE = "available"
    CLOSING = "closing"
    DONE = "done"


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


class JobResult(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"


class ErrorCode(enum.StrEnum):
    """Why a job ended as ``error``: causes in the infrastructure, not the firmware."""

    TIMEOUT = "timeout"
    NO_HEALTHY_DEVICE = "no_healthy_device"
    DOWNLOAD_FAILED = "download_failed"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    BOOT_FAILED = "boot_failed"
    LAB_LOST = "lab_lost"
    TEST_SUITE_ERROR = "test_suite_error"
    CANCELLED = "cancelled"
    INFRASTRUCTURE = "infrastructure"

    @property
    def retryable(self) -> bool:
        return self not in (ErrorCode.CANCELLED, ErrorCode.CHECKSUM_MISMATCH)


class TestStatus(enum.StrEnum):
    """KCIDB v5 status values."""

    __test__ = False  # not a pytest test class

    PASS = "PASS"
    FAIL = "FAIL"
    ERROR = "ERROR"
    SKIP = "SKIP"
    MISS = "MISS"
    DONE = "DONE"


class DeviceState(enum.StrEnum):
    """Where a lab device is in its life (the lab daemon's state machine)."""

    IDLE = "idle"
    BUSY = "busy"
    CHECKING = "checking"
    UNHEALTHY = "unhealthy"
    MAINTENANCE = "maintenance"


class DeviceHealth(enum.StrEnum):
    HEALTHY = "healthy"
    WARNING = "warning"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


class DeviceCondition(msgspec.Struct, frozen=True, kw_only=True):
    """A lab device's condition as its lab sees it: the part of a health event
    (``DeviceHealthData``) that a running lab also answers a status request with
    (``control.DeviceStatus``)."""

    state: DeviceState
    health: DeviceHealth
    consecutive_failures: Count = 0
    """Health checks failed in a row."""
    check_passed: bool | None = None
    """The last health check's outcome; None: not known (no check yet)."""
    message: Text = ""


class Image(msgspec.Struct, frozen=True, kw_only=True):
    """One firmware image for one target/subtarget[/profile] (a KCIDB build)."""

    id: Name
    target: Name
    subtarget: Name
    profile: Name | None = None
    """None when the image serves every profile of the subtarget (PR artifacts, uploads)."""
    name: Name
    type: Name
    """sysupgrade, factory, kernel, combined, combined-efi, rootfs, ..."""
    filesystem: Name | None = None
    sha256: Name
    size: Size | None = None
    url: Text | None = None
    """Where a lab downloads it; may be filled in per job (presigned)."""
    object_key: Name | None = None
    """Key in object storage when wrtci holds the file itself."""
    architecture: Name | None = None
    """OpenWrt package architecture (``arch_packages``: mips_24kc, x86_64); KCIDB's."""

    @property
    def device_types(self) -> str:
        return f"{self.target}/{self.subtarget}/{self.profile or '*'}"


class PullRequest(msgspec.Struct, frozen=True, kw_only=True):
    repository: Name
    number: Count
    head_sha: Name
    url: Text
    title: Text = ""
    author: Name = ""


class TestPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What a job runs: a selection of the OpenWrt pytest suite."""

    __test__ = False

    name: Name
    tests: list[Name] = []
    """pytest paths relative to the suite checkout."""
    keyword: Text | None = None
    """pytest ``-k`` expression."""
    markers: Text | None = None
    """pytest ``-m`` expression."""
    required_features: list[Name] = []
    timeout_s: Seconds = 1800.0


class TestResult(msgspec.Struct, frozen=True, kw_only=True):
    """One pytest test as run on a device."""

    __test__ = False

    path: Name
    """KCIDB test path: ``<plan>.<module>.<test>``."""
    status: TestStatus
    duration_s: Seconds | None = None
    message: Text | None = None
    log_excerpt: Text | None = None


class Artifact(msgspec.Struct, frozen=True, kw_only=True):
    name: Name
    content_type: Name = "application/octet-stream"
    size: Size | None = None
    sha256: Name | None = None
    object_key: Name | None = None
