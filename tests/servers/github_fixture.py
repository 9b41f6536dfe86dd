"""The ``github`` fixture: a local GitHub REST API for the trigger and notifier tests.

Registered for every test in tests/conftest.py. A test module that needs another
repository overrides the ``github_repo`` fixture.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.servers.github import GithubServer
from tests.servers.trigger_harness import REPO, TOKEN


@pytest.fixture
def github_repo() -> str:
    """The repository the local GitHub API serves."""
    return REPO


@pytest.fixture
async def github(github_repo: str) -> AsyncIterator[GithubServer]:
    """The local GitHub REST API for ``github_repo``, accepting ``TOKEN``."""
    server = await GithubServer(github_repo, token=TOKEN).start()
    yield server
    await server.stop()
