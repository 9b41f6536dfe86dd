"""Value types shared by events, KV records and the database layer."""

from __future__ import annotations

import enum

import msgspec

from proto.subjects import PriorityClass

__all__ = [
    "Artifact",
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


class Image(msgspec.Struct, frozen=True, kw_only=True):
    """One firmware image for one target/subtarget[/profile] (a KCIDB build)."""

    id: str
    target: str
    subtarget: str
    profile: str | None = None
    """None when the image serves every profile of the subtarget (PR artifacts, uploads)."""
    name: str
    type: str
    """sysupgrade, factory, kernel, combined, combined-efi, rootfs, ..."""
    filesystem: str | None = None
    sha256: str
    size: int | None = None
    url: str | None = None
    """Where a lab downloads it; may be filled in per job (presigned)."""
    object_key: str | None = None
    """Key in object storage when wrtci holds the file itself."""
    architecture: str | None = None
    """OpenWrt package architecture (``arch_packages``: mips_24kc, x86_64); KCIDB's."""

    @property
    def device_types(self) -> str:
        return f"{self.target}/{self.subtarget}/{self.profile or '*'}"


class PullRequest(msgspec.Struct, frozen=True, kw_only=True):
    repository: str
    number: int
    head_sha: str
    url: str
    title: str = ""
    author: str = ""


class TestPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What a job runs: a selection of the OpenWrt pytest suite."""

    __test__ = False

    name: str
    tests: list[str] = []
    """pytest paths relative to the suite checkout."""
    keyword: str | None = None
    """pytest ``-k`` expression."""
    markers: str | None = None
    """pytest ``-m`` expression."""
    required_features: list[str] = []
    timeout_s: float = 1800.0


class TestResult(msgspec.Struct, frozen=True, kw_only=True):
    """One pytest test as run on a device."""

    __test__ = False

    path: str
    """KCIDB test path: ``<plan>.<module>.<test>``."""
    status: TestStatus
    duration_s: float | None = None
    message: str | None = None
    log_excerpt: str | None = None


class Artifact(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    content_type: str = "application/octet-stream"
    size: int | None = None
    sha256: str | None = None
    object_key: str | None = None
