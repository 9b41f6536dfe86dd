"""``pip install wrtci[lab]`` on a host without the central dependencies.

Builds the wheel from this checkout, installs it with the ``lab`` extra into a
fresh virtualenv (not this one, no system site-packages), and runs every
``wrtci-lab`` command's help, ``wrtci --help``, and ``wrtci-lab check``
against the test NATS server. pip's cache makes the dependencies quick.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers import PROJECT_ROOT
from tests.lab_helpers import lab_config, write_config
from wrtci.lab_daemon.cli import build_parser


def _run(argv: list[str], timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)


def _lab_commands() -> list[str]:
    parser = build_parser()
    [sub] = [a for a in parser._actions if a.dest == "command"]
    return list(sub.choices)


@pytest.mark.slow
async def test_lab_extra_alone_runs_every_lab_command_and_wrtci_help(
        tmp_path, nats_config, fake_suite):
    wheels = tmp_path / "wheels"
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
                   str(PROJECT_ROOT)], cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    [wheel] = wheels.glob("wrtci-*.whl")
    venv = tmp_path / "lab-venv"
    # This pip installs into the new venv (--python): no ensurepip run to give the venv a
    # pip of its own, and no byte-compiling of every installed module (imports compile
    # what they use). The install is the same: the wheel, its [lab] extra, nothing else.
    assert _run([sys.executable, "-m", "venv", "--without-pip", str(venv)]).returncode == 0
    bin_dir = venv / "bin"
    installed = _run([sys.executable, "-m", "pip", "--python", str(bin_dir / "python"),
                      "install", "-q", "--no-compile", f"{wheel}[lab]"], cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    # the host really lacks the central dependencies
    missing = _run([str(bin_dir / "python"), "-c", "import asyncpg"], cwd=tmp_path)
    assert "No module named 'asyncpg'" in missing.stderr
    missing = _run([str(bin_dir / "python"), "-c", "import minio"], cwd=tmp_path)
    assert "No module named 'minio'" in missing.stderr

    def run(*argv: str) -> subprocess.CompletedProcess:
        # cwd outside the checkout: only the installed wheel is importable
        return _run([str(bin_dir / argv[0]), *argv[1:]], timeout=120, cwd=tmp_path)

    top = run("wrtci-lab", "--help")
    assert top.returncode == 0, top.stderr
    commands = _lab_commands()
    assert {"run", "check", "status", "health-check", "maintenance", "suite"} <= set(commands)
    with ThreadPoolExecutor() as pool:  # independent processes: side by side
        helps = pool.map(lambda command: run("wrtci-lab", command, "--help"), commands)
    for command, done in zip(commands, helps, strict=True):
        assert done.returncode == 0, f"wrtci-lab {command} --help:\n{done.stderr}"
        assert "usage: wrtci-lab" in done.stdout
    helped = run("wrtci", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "usage: wrtci" in helped.stdout
    refused = run("wrtci", "db", "migrate")
    assert refused.returncode == 2 and "wrtci[central]" in refused.stderr
    # and a real command: the target file loads (labgrid) and NATS answers
    config = write_config(lab_config(nats_config, tmp_path / "work", fake_suite),
                          tmp_path / "lab.toml")
    checked = run("wrtci-lab", "check", "--config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "wrtci-lab: ok" in checked.stdout
