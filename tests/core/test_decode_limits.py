"""Decoders refuse what PostgreSQL would refuse: the message is terminated once."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.js.errors import NotFoundError

from wrtci.core.runtime import EventPublisher
from wrtci.proto.events import (
    DecodeError,
    DeviceHealthChanged,
    DeviceHealthData,
    JobProgressData,
    decode,
    encode,
)
from wrtci.proto.limits import INT32_MAX, NAME_MAX, storable_text
from wrtci.proto.model import DeviceHealth, DeviceState
from wrtci.proto.subjects import Subjects
from wrtci.proto.tokens import TokenError, decode_token, encode_token
from wrtci.services.batch_consume import consume_batches
from wrtci.services.consume import Pull
from wrtci.services.results.service import consumer_config, ingest_handler


def health(consecutive_failures: int = 0, lab: str = "lab-a",
           message: str = "") -> DeviceHealthChanged:
    return DeviceHealthChanged.build(DeviceHealthData(
        lab=lab, device="dut-1", device_type="x86/64/generic", health=DeviceHealth.UNHEALTHY,
        state=DeviceState.UNHEALTHY, consecutive_failures=consecutive_failures,
        message=message), source="lab/lab-a", time=dt.datetime.now(dt.UTC))


def test_consecutive_failures_beyond_an_integer_column_is_refused() -> None:
    assert decode(encode(health(INT32_MAX))).data.consecutive_failures == INT32_MAX
    with pytest.raises(DecodeError, match="consecutive_failures"):
        decode(encode(health(2**40)))


def test_lab_name_whose_escape_decodes_to_nul_is_refused() -> None:
    with pytest.raises(TokenError, match="NUL"):
        decode_token("lab~00x")
    with pytest.raises(TokenError):
        Subjects("wrtci").lab_of_subject("wrtci.lab.~00.device.health")


def test_nul_in_names_and_overlong_names_are_refused() -> None:
    with pytest.raises(DecodeError, match="lab"):
        decode(encode(health(lab="a\x00b")))
    # Free text from a serial console may carry NUL: it decodes, and is stripped on storing.
    noisy = decode(encode(health(message="boot\x00log")))
    assert storable_text(noisy.data.message) == "bootlog"
    with pytest.raises(DecodeError, match="lab"):
        decode(encode(health(lab="x" * (NAME_MAX + 1))))


@given(st.text(max_size=40), st.integers(min_value=-2**70, max_value=2**70))
def test_property_decode_accepts_exactly_what_the_database_takes(text: str, count: int) -> None:
    event = health(count, lab=text or "lab", message=text)
    storable = "\x00" not in text and 0 <= count <= INT32_MAX
    try:
        decoded = decode(encode(event))
    except DecodeError:
        assert not storable
    else:
        assert storable and decoded == event


@given(st.text(min_size=0, max_size=30))
def test_property_token_roundtrip_never_yields_nul(name: str) -> None:
    token = encode_token(name)
    if "\x00" in name:
        with pytest.raises(TokenError):
            decode_token(token)
    else:
        assert decode_token(token) == name


async def test_results_consumer_terminates_the_reported_event_once(
        js, subjects: Subjects, pool) -> None:
    """The event of the report: consecutive_failures = 2**40, redelivered 8 times before."""
    bad = health(2**40)
    await EventPublisher(js, subjects).publish(bad)
    stop = asyncio.Event()
    config = consumer_config(subjects, "results-limits")
    loop = asyncio.create_task(consume_batches(
        js, Pull(subjects.events_stream, config, batch=500, fetch_timeout=0.2),
        ingest_handler(pool, subjects), stop))
    try:
        info = None
        for _ in range(200):
            with contextlib.suppress(NotFoundError):  # the loop creates the consumer
                info = await js.consumer_info(subjects.events_stream, "results-limits")
                if info.ack_floor.stream_seq >= 1:
                    break
            await asyncio.sleep(0.05)
        assert info is not None
    finally:
        stop.set()
        await asyncio.wait_for(loop, 10)
    assert (info.ack_floor.stream_seq, info.num_redelivered, info.num_ack_pending) == (1, 0, 0)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM device_health") == 0


def test_structs_built_in_code_are_not_checked_only_decoded() -> None:
    """msgspec checks constraints when decoding; building a Struct stays free."""
    data = JobProgressData(job_id="j", attempt=1, lab="l", device="d", stage="boot")
    assert msgspec.json.decode(msgspec.json.encode(data), type=JobProgressData) == data
