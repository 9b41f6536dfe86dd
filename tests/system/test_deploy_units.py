"""The systemd units under deploy/systemd: valid, and what they start exists after install.

An installation is a virtualenv with wrtci installed (``/opt/wrtci/.venv`` on a
central host, ``/opt/wrtci-lab`` on a lab host); this test's own virtualenv is
one, so the units are checked with their install prefix pointing at it.
systemd-analyze verify needs no running systemd.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from wrtci.services import registry

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
PREFIXES = ("/opt/wrtci/.venv/bin", "/opt/wrtci-lab/bin")
BIN = Path(sys.executable).parent


def _installed(text: str) -> str:
    for prefix in PREFIXES:
        text = text.replace(prefix, str(BIN))
    return text


def _instances(unit: Path) -> list[str]:
    if unit.name.endswith("@.service"):
        return [unit.name.replace("@.", f"@{name}.") for name in sorted(registry.SERVICES)]
    return [unit.name]


def _commands(unit: Path) -> list[list[str]]:
    return [shlex.split(m) for m in re.findall(r"^Exec(?:Start|StartPre)=(.+)$",
                                              unit.read_text(), re.M)]


@pytest.mark.parametrize("unit", sorted(UNITS.glob("*.service")), ids=lambda p: p.name)
def test_unit_passes_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze not installed (apt-get install systemd)")
    (tmp_path / unit.name).write_text(_installed(unit.read_text()))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *_instances(unit)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@pytest.mark.parametrize("unit", sorted(UNITS.glob("*.service")), ids=lambda p: p.name)
def test_unit_commands_exist_after_install_and_accept_their_arguments(unit: Path) -> None:
    for argv in _commands(unit):
        program = argv[0]
        assert program.startswith(PREFIXES), f"{unit.name}: {program} is not installed by wrtci"
        installed = Path(_installed(program))
        assert installed.is_file(), f"{unit.name}: {installed} missing after install"
        if installed.name == "wrtci" and argv[1] == "run":
            # `wrtci run %i`: every instance names a service `wrtci run` knows
            # (independent processes: side by side).
            with ThreadPoolExecutor() as pool:
                helps = pool.map(lambda name, wrtci=str(installed): subprocess.run(
                    [wrtci, "run", name, "--help"], capture_output=True, text=True,
                    timeout=60), registry.SERVICES)
            for name, help_run in zip(registry.SERVICES, helps, strict=True):
                assert help_run.returncode == 0, (name, help_run.stderr)
        elif installed.name == "wrtci-lab":
            help_lab = subprocess.run([str(installed), argv[1], "--help"],
                                      capture_output=True, text=True, timeout=60)
            assert help_lab.returncode == 0, help_lab.stderr
