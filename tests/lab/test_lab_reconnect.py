"""The lab's NATS connection comes back: jobs published meanwhile are taken at once."""

from __future__ import annotations

import msgspec

from tests.helpers import eventually
from tests.lab_helpers import DEVICE_TYPE, fake_job, lab_config, publish_job, running_lab
from tests.relay import TcpRelay
from wrtci.proto import events as ev

HOURS = 4 * 3600.0
NEVER = 1e-6
"""A job_idle_rate whose safety poll never comes within a test."""


async def test_job_published_while_the_lab_was_cut_off_is_taken_when_it_is_back(
        js, nc, subjects, events, nats_server, nats_config, fake_suite, fake_firmware_url,
        tmp_path):
    spec = fake_job("wrtci:job:reconnect", fake_firmware_url,
                    tests=["tests/test_fake.py::test_prints"])
    async with TcpRelay(nats_server.port) as relay:
        # The lab reaches NATS through the relay; the test (the scheduler) directly.
        config = lab_config(msgspec.structs.replace(nats_config, url=relay.url),
                            tmp_path / "work", fake_suite,
                            job_ack_wait_s=HOURS, job_idle_rate=NEVER)
        async with running_lab(config, central=nats_config) as daemon:
            # After the start-up look, nothing but a wake-up (or a look after the
            # connection came back) makes this lab ask for a job for hours.
            assert daemon.queue is not None and daemon.queue.poll_interval > HOURS
            await eventually(lambda: daemon.queue.waiting(DEVICE_TYPE) == 1,
                             "the idle device waiting for a job")
            await relay.cut()
            await publish_job(nc, subjects, spec, ack_wait=HOURS)  # its wake-up is lost
            await relay.restore()
            await events.wait_for(lambda e: e.of(ev.JobFinished))
    [finished] = events.of(ev.JobFinished)
    assert finished.data.job_id == spec.job_id
    assert [e.data.job_id for e in events.of(ev.JobStarted)] == [spec.job_id]
