"""Lab isolation (generated NATS credentials, identity checks) and API tokens.

The servers and the lab and GitHub fixtures come from tests/conftest.py."""

from __future__ import annotations

import pytest

from tests.isolation_support import SecuredNats


@pytest.fixture
def secured(tmp_path, subjects, database_config, storage_config):
    """A nats-server under the authorization `wrtci lab add` generates, for this test."""
    server = SecuredNats(tmp_path, subjects, database_config, storage_config)
    yield server
    server.stop()
