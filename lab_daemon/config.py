"""The lab host's configuration (``lab.toml``): NATS, the lab, its devices.

One file per lab host; secrets (NATS credentials) via ``creds_file`` or the
usual ``WRTCI_NATS__…`` environment overrides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec

from wrtci.core.config import LoggingConfig, NatsConfig
from wrtci.proto.jobqueue import MAX_IDLE_RATE
from wrtci.proto.subjects import PriorityClass
from wrtci.proto.topology import JOB_ACK_WAIT

DAY = 24 * 3600.0


class DeviceConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    target_file: str
    """labgrid target file, in the openwrt-tests format, used unchanged."""
    target: str
    subtarget: str
    profile: str
    place: str | None = None
    """labgrid place (``LG_PLACE``) for remote devices."""
    env: dict[str, str] = {}
    """Extra environment for labgrid and the suite ."""
    health_image: str | None = None
    """Firmware booted by health checks; default: the last firmware that passed a job."""
    # -- firmware preparation (lab_daemon/firmware_prep.py) --
    image_type: str | None = None
    """Image the device boots, ``type[:filesystem]``; default: the target file's
    ``openwrt: image:`` (openwrt-tests' own key)."""
    decompress: bool | None = None
    """Gunzip gzip images before use; default: when the image name ends in .gz,
    as openwrt-tests' CI does (``false`` keeps e.g. a sysupgrade .img.gz whole)."""
    stage_dir: str | None = None
    """TFTP/HTTP directory the image is linked or copied into before each job
    (``{device}`` and ``{place}`` are replaced); LG_IMAGE then names that copy."""
    stage_name: str | None = None
    """Fixed file name in ``stage_dir`` (e.g. what a U-Boot script loads); default:
    the image's own name."""
    # -- from labnet.yaml (lab_daemon/labnet.py) --
    job_priorities: list[PriorityClass] | None = None
    """Take only jobs of these priority classes (labnet ``snapshots_only``); default: all."""

    @property
    def device_type(self) -> str:
        return f"{self.target}/{self.subtarget}/{self.profile}"


HEALTH_TESTS = ["tests/test_base.py::test_shell", "tests/test_base.py::test_echo",
                "tests/test_base.py::test_uname"]
"""openwrt-tests' boot and shell tests: the default health check."""


class HealthConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A health check is a short plan of the suite itself, run like a job's plans."""

    interval_s: float = DAY
    """A healthy device is checked this often (and at start, and after an infra failure)."""
    unhealthy_recheck_s: float = 3600.0
    """A device whose last check failed is checked again this often (or at
    ``interval_s`` if that is sooner); only a pass puts it back into the pool."""
    warn_after: int = 3
    disable_after: int = 5
    timeout_s: float = 300.0
    check_at_start: bool = True
    """False: a device whose stored record says it passed its last check within
    ``interval_s`` is trusted at start; otherwise (and by default) it is checked
    before it takes a job: a device whose health is unknown never does."""
    tests: list[str] = msgspec.field(default_factory=lambda: list(HEALTH_TESTS))
    """The suite's tests (pytest node ids relative to the checkout) a check runs."""
    keyword: str | None = None
    image: str | None = None
    """The lab's health image, booted by checks of devices without their own."""


class LabSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    suite_dir: str
    """Checkout of the test suite (openwrt-tests layout: conftest.py, tests/)."""
    work_dir: str = "/var/lib/wrtci-lab"
    """Per-job output (logs, junit) and the firmware cache live below this."""
    cache_max_bytes: int = 4 * 1024**3
    download_timeout_s: float = 600.0
    coordinator: str | None = None
    """labgrid gRPC coordinator (``LG_COORDINATOR``) for RemotePlace devices.

    With it, a device that has a ``place`` runs jobs and checks only while the
    lab holds that place (acquired before, released after)."""
    labgrid_user: str | None = None
    """User the lab acquires places as (``LG_USERNAME``); default ``wrtci-<lab name>``."""
    labgrid_client: str | None = None
    """``labgrid-client`` executable; default: next to ``python``, else on PATH."""
    place_timeout_s: float = 30.0
    """Limit for each labgrid-client call (acquire, release, show)."""
    place_check_s: float = 30.0
    """An idle device looks at its place this often; a place someone else holds
    is tried again this often (the device takes no job meanwhile)."""
    python: str | None = None
    """Interpreter that runs pytest and labgrid, managed by the lab maintainer.
    Default: the suite's own environment, which the lab builds from the
    checkout's dependency declaration (``wrtci-lab suite sync``)."""
    suite_base_python: str | None = None
    """Interpreter the suite's virtualenv is created from (default: this one's base)."""
    suite_envs_dir: str | None = None
    """Where the suite's environments live (default: ``work_dir``/suite-envs)."""
    suite_sync_timeout_s: float = 900.0
    job_ack_wait_s: float = JOB_ACK_WAIT
    job_idle_rate: Annotated[float, msgspec.Meta(gt=0)] = MAX_IDLE_RATE
    """NATS requests/s an idle device type may cost: the safety poll that finds jobs
    back in the queue without a new publish (naked, or left by a lab that went away)."""
    progress_interval_s: float = 30.0
    """JobProgress heartbeat and in-progress ack period (kept well under the ack wait)."""
    heartbeat_s: float = 30.0
    shutdown_grace_s: float = 60.0
    """On SIGTERM a running job gets this long to finish before it is handed back."""
    fetch_timeout_s: float = 1.0
    log_chunk_bytes: int = 64 * 1024
    log_flush_s: float = 1.0
    log_memory_bytes: Annotated[int, msgspec.Meta(ge=0)] = 8 * 1024 * 1024
    """Log text a running job may hold in memory while NATS is away ..."""
    log_spill_bytes: Annotated[int, msgspec.Meta(ge=0)] = 256 * 1024 * 1024
    """... and then in a spill file below ``work_dir`` (``log-spill/``, unlinked at
    once); beyond both, text is dropped and the stored log says how much."""
    devices: list[DeviceConfig] = []
    labnet: str | None = None
    """openwrt-tests' labnet.yaml: its devices of lab ``labnet_lab`` are added to
    ``devices`` (see ``labnet.py``); ``wrtci-lab run --labnet FILE --lab NAME`` too."""
    labnet_lab: str | None = None
    """The lab's name in labnet.yaml (e.g. ``labgrid-example``); default: ``name``."""
    labnet_targets: str | None = None
    """Directory of the target files; default: ``targets/`` beside labnet.yaml."""
    health: HealthConfig = msgspec.field(default_factory=HealthConfig)

    @property
    def cache_dir(self) -> Path:
        return Path(self.work_dir) / "cache"

    @property
    def envs_dir(self) -> Path:
        return Path(self.suite_envs_dir) if self.suite_envs_dir \
            else Path(self.work_dir) / "suite-envs"

    @property
    def log_spill_dir(self) -> Path:
        return Path(self.work_dir) / "log-spill"

    @property
    def runs_dir(self) -> Path:
        return Path(self.work_dir) / "runs"

    @property
    def procs_dir(self) -> Path:
        """Records of the running test process groups (see ``leftovers.py``)."""
        return Path(self.work_dir) / "procs"


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    nats: NatsConfig = msgspec.field(default_factory=NatsConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    lab: LabSection
