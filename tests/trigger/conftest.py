"""Firmware sources: the downloads server, GitHub PRs, uploads, buildbot.

The servers and the lab and GitHub fixtures come from tests/conftest.py; the
downloads server with the repository's openwrt-downloads tree is started here."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.servers.downloads import DownloadsServer


@pytest.fixture
async def downloads(fixtures_dir) -> AsyncIterator[DownloadsServer]:
    server = await DownloadsServer(fixtures_dir / "openwrt-downloads").start()
    yield server
    await server.stop()
