"""The virtual lab of ``wrtci up``: one QEMU device run by a lab daemon.

Builds the virtual device's kernel and firmware into the state directory
(deploy/virtual-lab/build-firmware.sh; offline after the first run) and
writes the lab daemon's ``lab.toml``. The device boots that firmware for its
health checks and takes jobs for ``x86/64/generic``.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import tomli_w

from services.config import NatsConfig

log = logging.getLogger(__name__)

CHECKOUT = Path(__file__).resolve().parents[2]
VIRTUAL_LAB = CHECKOUT / "deploy" / "virtual-lab"
LAB_NAME = "virtual"


def prepare(state_dir: Path, nats: NatsConfig) -> Path | None:
    """Build the firmware and write lab.toml; None when the virtual lab cannot run here."""
    script = VIRTUAL_LAB / "build-firmware.sh"
    if not script.exists():
        log.warning("no virtual lab: %s not found (not a source checkout)", script)
        return None
    out = state_dir / "virtual-lab"
    try:
        result = subprocess.run([str(script), str(out)], capture_output=True, text=True,
                                timeout=900, check=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        log.warning("no virtual lab: building its firmware failed: %s",
                    getattr(exc, "stderr", None) or exc)
        return None
    _, firmware = result.stdout.split()
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
                "name": "qemu-x86-64",
                "target_file": str(VIRTUAL_LAB / "qemu-x86-64-virtual.yaml"),
                "target": "x86", "subtarget": "64", "profile": "generic",
                "health_image": firmware,
                "env": {"WRTCI_VIRTUAL_KERNEL": str(out / "vmlinuz")},
            }],
        },
    }
    path = state_dir / "lab.toml"
    path.write_text(tomli_w.dumps(config))
    return path
