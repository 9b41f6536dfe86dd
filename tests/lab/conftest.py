"""The lab daemon: devices, the suite and its environment, jobs, places, labnet.

The servers and the lab and GitHub fixtures come from tests/conftest.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.lab_helpers import EventLog, lab_config
from wrtci.lab_daemon.config import Config


@pytest.fixture
async def events(nc, subjects) -> EventLog:
    """Every lab event and log chunk from the start of the test on."""
    return await EventLog().start(nc, subjects)


@pytest.fixture
def lab1(nats_config, fake_suite, tmp_path) -> Config:
    """The lab ``lab1`` with its defaults: the fake suite, its work dir in tmp_path."""
    return lab_config(nats_config, tmp_path / "work", fake_suite)


@pytest.fixture
def place_lab(nats_config, fake_suite, tmp_path, labgrid_coordinator,
              labgrid_place) -> Callable[..., Config]:
    """``lab1`` whose device sits on this test's labgrid place (acquired through the real
    coordinator); ``make(**changes)`` takes lab_config's keywords."""
    def make(**changes) -> Config:
        return lab_config(nats_config, tmp_path / "work", fake_suite, place=labgrid_place,
                          coordinator=labgrid_coordinator.address, **changes)
    return make
