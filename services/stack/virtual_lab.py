"""The virtual lab of ``wrtci up``: one QEMU device run by a lab daemon.

Builds the virtual device's firmware, an x86/64 combined disk image, into
the state directory (deploy/virtual-lab/build-firmware.sh; offline and cached
by a hash of its inputs after the first run) and writes the lab daemon's
``lab.toml``. The device is described by the bundled suite's own target file
(openwrt-tests' QEMU format: disk boot, LAN/WAN NICs, console, then SSH); it
boots that firmware for its health checks and takes jobs for ``x86/64/generic``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
from pathlib import Path

import msgspec
import tomli_w

from wrtci.core.config import NatsConfig

log = logging.getLogger(__name__)

CHECKOUT = Path(__file__).resolve().parents[2]
VIRTUAL_LAB = CHECKOUT / "deploy" / "virtual-lab"
LAB_NAME = "virtual"
DEVICE_NAME = "qemu-x86-64"
DEVICE_TYPE = "x86/64/generic"

VERSION = "24.10.0"
REVISION = "r28427-6df0e3d02a"


SUITE = VIRTUAL_LAB / "openwrt-tests"
TARGET_FILE = SUITE / "targets" / "qemu-x86-64.yaml"


def suite_envs_dir() -> Path:
    """The bundled suite's environments: in the user's cache (``WRTCI_CACHE``, default
    ~/.cache/wrtci, where build-firmware.sh keeps its images), kept across state
    directories; each is keyed by a digest of its inputs and built under a lock."""
    return Path(os.environ.get("WRTCI_CACHE") or Path.home() / ".cache" / "wrtci") / "suite-envs"


def image_name(version: str) -> str:
    return f"openwrt-{version}-x86-64-generic-ext4-combined.img"


class VirtualFirmware(msgspec.Struct, frozen=True):
    image: Path
    version: str
    revision: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.image.read_bytes()).hexdigest()


def build_firmware(out_dir: Path, version: str = VERSION,
                   revision: str = REVISION) -> VirtualFirmware | None:
    """Build (or reuse) the firmware; None when it cannot be built here."""
    script = VIRTUAL_LAB / "build-firmware.sh"
    image = out_dir / image_name(version)
    if not image.exists():
        if not script.exists():
            log.warning("no virtual lab: %s not found (not a source checkout)", script)
            return None
        try:
            subprocess.run([str(script), str(out_dir), version, revision], capture_output=True,
                           text=True, timeout=900, check=True)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            log.warning("no virtual lab: building its firmware failed: %s",
                        getattr(exc, "stderr", None) or exc)
            return None
    return VirtualFirmware(image=image, version=version, revision=revision)


def write_lab_config(state_dir: Path, nats: NatsConfig, firmware: VirtualFirmware) -> Path:
    config = {
        "nats": {"url": nats.url, "prefix": nats.prefix},
        "logging": {"format": "text"},
        "lab": {
            "name": LAB_NAME,
            "suite_dir": str(SUITE),
            "work_dir": str(state_dir / "lab"),
            "suite_envs_dir": str(suite_envs_dir()),
            # `wrtci up` stops its daemons within 30 s.
            "shutdown_grace_s": 20.0,
            "devices": [{
                "name": DEVICE_NAME,
                "target_file": str(TARGET_FILE),
                "target": "x86", "subtarget": "64", "profile": "generic",
                "health_image": str(firmware.image),
                # The target's strategy imports from the suite's conftest (as
                # openwrt-tests' does). pytest makes tests/ importable; the
                # health check, which loads the target file outside pytest,
                # needs it on the path.
                "env": {"PYTHONPATH": str(SUITE / "tests")},
            }],
        },
    }
    path = state_dir / "lab.toml"
    path.write_text(tomli_w.dumps(config))
    return path
