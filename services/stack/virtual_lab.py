"""The virtual lab of ``wrtci up``: one QEMU device run by a lab daemon.

Builds the virtual device's kernel and firmware into the state directory
(deploy/virtual-lab/build-firmware.sh; offline after the first run) and
writes the lab daemon's ``lab.toml``. The device boots that firmware for its
health checks and takes jobs for ``x86/64/generic``.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
from pathlib import Path

import msgspec
import tomli_w

from core.config import NatsConfig

log = logging.getLogger(__name__)

CHECKOUT = Path(__file__).resolve().parents[2]
VIRTUAL_LAB = CHECKOUT / "deploy" / "virtual-lab"
LAB_NAME = "virtual"
DEVICE_NAME = "qemu-x86-64"
DEVICE_TYPE = "x86/64/generic"

VERSION = "24.10.0"
REVISION = "r28427-6df0e3d02a"


class VirtualFirmware(msgspec.Struct, frozen=True):
    kernel: Path
    image: Path
    version: str
    revision: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.image.read_bytes()).hexdigest()


def build_firmware(out_dir: Path, version: str = VERSION,
                   revision: str = REVISION) -> VirtualFirmware | None:
    """Build (or reuse) the kernel and firmware; None when it cannot be built here."""
    script = VIRTUAL_LAB / "build-firmware.sh"
    image = out_dir / f"openwrt-{version}-x86-64-generic-initramfs-rootfs.cpio.gz"
    kernel = out_dir / "vmlinuz"
    if not (image.exists() and kernel.exists()):
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
    return VirtualFirmware(kernel=kernel, image=image, version=version, revision=revision)


def write_lab_config(state_dir: Path, nats: NatsConfig, firmware: VirtualFirmware) -> Path:
    config = {
        "nats": {"url": nats.url, "prefix": nats.prefix},
        "logging": {"format": "text"},
        "lab": {
            "name": LAB_NAME,
            "suite_dir": str(VIRTUAL_LAB / "openwrt-tests"),
            "work_dir": str(state_dir / "lab"),
            # `wrtci up` stops its daemons within 30 s.
            "shutdown_grace_s": 20.0,
            "devices": [{
                "name": DEVICE_NAME,
                "target_file": str(VIRTUAL_LAB / "qemu-x86-64-virtual.yaml"),
                "target": "x86", "subtarget": "64", "profile": "generic",
                "health_image": str(firmware.image),
                "env": {"WRTCI_VIRTUAL_KERNEL": str(firmware.kernel)},
            }],
        },
    }
    path = state_dir / "lab.toml"
    path.write_text(tomli_w.dumps(config))
    return path
