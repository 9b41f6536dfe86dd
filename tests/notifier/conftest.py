"""Mail, GitHub reports and device-health issues.

The servers and the lab and GitHub fixtures come from tests/conftest.py; the
mail server is started here for both files."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.servers.smtp import SmtpServer


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpServer]:
    server = await SmtpServer().start()
    yield server
    await server.stop()
