"""Fixtures for the lab daemon tests (registered in tests/conftest.py)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.lab_helpers import (
    FAKE_CONFTEST,
    FAKE_FIRMWARE,
    FAKE_TESTS,
    REVISION,
    VERSION,
    VIRTUAL_LAB,
    Firmware,
)
from tests.servers.labgrid_coordinator import LabgridCoordinator


@pytest.fixture(scope="session")
def virtual_firmware() -> Iterator[Firmware]:
    """The virtual device's firmware (a combined disk image), built by the project's script."""
    out = Path(tempfile.mkdtemp(prefix="wrtci-firmware-"))
    result = subprocess.run([str(VIRTUAL_LAB / "build-firmware.sh"), str(out), VERSION, REVISION],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"build-firmware.sh failed:\n{result.stderr}")
    sha256, image = result.stdout.split()
    yield Firmware(directory=out, image=Path(image), sha256=sha256)
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture
def fake_suite(tmp_path: Path) -> Path:
    """A tiny suite in the openwrt-tests layout; pytest runs it as it would the real one."""
    suite = tmp_path / "suite"
    (suite / "tests").mkdir(parents=True)
    (suite / "conftest.py").write_text(FAKE_CONFTEST)
    (suite / "tests" / "test_fake.py").write_text(FAKE_TESTS)
    (suite / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    return suite


@pytest.fixture
async def file_server(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """An HTTP server for firmware downloads: (base URL, directory it serves)."""
    root = tmp_path / "www"
    root.mkdir()
    app = web.Application()
    app.router.add_static("/", root)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", root
    await runner.cleanup()


@pytest.fixture
def fake_firmware_url(file_server: tuple[str, Path]) -> str:
    """Where the fake firmware (``FAKE_FIRMWARE``) is served for the lab to download."""
    base_url, www = file_server
    (www / "fw.bin").write_bytes(FAKE_FIRMWARE)
    return f"{base_url}/fw.bin"


@pytest.fixture(scope="session")
def labgrid_coordinator() -> Iterator[LabgridCoordinator]:
    """labgrid's real gRPC coordinator on a free loopback port."""
    root = Path(tempfile.mkdtemp(prefix="wrtci-labgrid-"))
    coordinator = LabgridCoordinator(root).start()
    yield coordinator
    coordinator.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def labgrid_place(labgrid_coordinator: LabgridCoordinator) -> str:
    """A new place of this test's own on the coordinator (as a lab maintainer creates it)."""
    name = f"dut-{uuid.uuid4().hex[:10]}"
    labgrid_coordinator.client("create", place=name)
    return name
