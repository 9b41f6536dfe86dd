"""The ``github`` fixture: a local GitHub REST API for the trigger tests.

Registered for every test in tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.servers.github import GithubServer
from tests.servers.trigger_harness import REPO, TOKEN


@pytest.fixture
async def github() -> AsyncIterator[GithubServer]:
    """The local GitHub REST API for ``REPO``, accepting ``TOKEN``."""
    server = await GithubServer(REPO, token=TOKEN).start()
    yield server
    await server.stop()
