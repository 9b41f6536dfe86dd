"""Retry / cancel through the API: exactly the CLI's events, and nothing for bad requests."""

from __future__ import annotations

import datetime as dt
import logging
from urllib.parse import quote

import pytest

from tests.api_support import TOKEN, serving
from tests.factories_results import Factory
from tests.pipeline import stored_events
from tests.token_support import add_token
from wrtci.core.publisher import central_key, msg_id
from wrtci.proto.events import (
    FirmwareCancelRequested,
    FirmwareRetryRequested,
    JobCancelRequested,
    JobRetryRequested,
)
from wrtci.services.auth import revoke_token


@pytest.fixture
async def api(js, nats_config, database_config, storage_config):
    async with serving(nats_config, database_config, storage_config) as client:
        yield client


async def _requests(js, subjects):
    return [e for e in await stored_events(js, subjects) if e.kind.endswith("_requested")]


@pytest.mark.parametrize(("noun", "verb", "event_type"), [
    ("jobs", "retry", JobRetryRequested),
    ("jobs", "cancel", JobCancelRequested),
    ("firmware", "retry", FirmwareRetryRequested),
    ("firmware", "cancel", FirmwareCancelRequested),
])
async def test_request_publishes_the_scheduler_event(api, js, subjects, pool, noun, verb,
                                                     event_type):
    factory = Factory(pool)
    firmware = await factory.firmware()
    job = await factory.job(firmware)
    object_id = job if noun == "jobs" else firmware

    status, body = await api.post(f"/api/v1/{noun}/{quote(object_id, safe='')}/{verb}",
                                  b'{"reason": "flashed the wrong image"}')
    assert status == 202, body
    (event,) = await _requests(js, subjects)
    assert isinstance(event, event_type)
    assert (body["event_id"], body["type"], body["id"]) == (event.id, event.kind, object_id)
    assert event.subject == object_id and event.source == "wrtci/api"
    data = event.data
    assert (getattr(data, "job_id", None) or data.firmware_id) == object_id
    assert (data.requested_by, data.reason) == ("alice", "flashed the wrong image")
    # The subject the scheduler's consumer filters on.
    kind = "job" if noun == "jobs" else "firmware"
    subject = subjects.event(f"{kind}.{verb}_requested")
    msg = await js.get_last_msg(subjects.events_stream, subject)
    # Keyed with the central key: no lab can send it first (core/publisher.py).
    key = await central_key(js, subjects)
    assert msg.header["Nats-Msg-Id"] == msg_id(key, subject, event.id) != event.id

    # Without a body: no reason. A second request is a second event.
    status, _ = await api.post(f"/api/v1/{noun}/{object_id}/{verb}")
    assert status == 202
    first, second = await _requests(js, subjects)
    assert second.id != first.id and second.data.reason is None


@pytest.mark.parametrize(("path", "body", "token", "status", "error"), [
    ("/api/v1/jobs/{job}/retry", b"", None, 401, "missing bearer token"),
    ("/api/v1/jobs/{job}/retry", b"", "not-the-token", 401, "invalid token"),
    ("/api/v1/firmware/{firmware}/cancel", b"", "", 401, "missing bearer token"),
    # 401 before 404: no token, no knowing which ids exist
    ("/api/v1/jobs/wrtci:none/retry", b"", "guess", 401, "invalid token"),
    ("/api/v1/jobs/wrtci:none/retry", b"", TOKEN, 404, "no job wrtci:none"),
    ("/api/v1/firmware/wrtci:none/cancel", b"", TOKEN, 404, "no firmware wrtci:none"),
    ("/api/v1/jobs/{job}/retry", b"{not json", TOKEN, 400, "bad JSON body"),
    ("/api/v1/jobs/{job}/retry", b'{"reason": 5}', TOKEN, 400, "bad JSON body"),
    ("/api/v1/jobs/{job}/retry", b'{"force": true}', TOKEN, 400, "bad JSON body"),
    ("/api/v1/jobs/{job}/retry", b"[1, 2]", TOKEN, 400, "bad JSON body"),
    ("/api/v1/jobs/{job}/retry", b'{"reason": "' + b"x" * 2000 + b'"}', TOKEN, 400,
     "reason is over"),
    ("/api/v1/jobs/{job}/retry", b"\xff\xfe", TOKEN, 400, "bad JSON body"),
    ("/api/v1/jobs/{job}/retry", b"x" * 20000, TOKEN, 413, "body is over"),
    ("/api/v1/jobs/{job}/explode", b"", TOKEN, 405, "not allowed"),
])
async def test_bad_requests_publish_nothing(api, js, subjects, pool, path, body, token, status,
                                            error):
    factory = Factory(pool)
    firmware = await factory.firmware()
    job = await factory.job(firmware)
    got, answer = await api.post(path.format(job=quote(job, safe=""), firmware=firmware), body,
                                 token=token)
    assert got == status and error in answer["error"], answer
    assert await _requests(js, subjects) == []


async def test_expired_revoked_and_other_scope_tokens_are_refused_with_the_reason(
        api, js, subjects, pool, caplog) -> None:
    """401 / 403 with the reason in the JSON error, a logged line without the secret,
    nothing published, nothing else disturbed; the last use of a token let through."""
    factory = Factory(pool)
    job = await factory.job(await factory.firmware())
    path = f"/api/v1/jobs/{quote(job, safe='')}/retry"
    await add_token(pool, "old", "old-secret", ["control"],
                    expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    await add_token(pool, "gone", "gone-secret", ["control"])
    await add_token(pool, "dev", "dev-secret", ["upload"])
    await add_token(pool, "viewer", "viewer-secret", ["read"])
    async with pool.acquire() as conn:
        await revoke_token(conn, "gone")

    with caplog.at_level(logging.WARNING, logger="wrtci.services.auth"):
        expired = await api.post(path, token="old-secret")
        revoked = await api.post(path, token="gone-secret")
        upload = await api.post(path, token="dev-secret")
        read = await api.post(f"/api/v1/firmware/{quote(job, safe='')}/cancel",
                              token="viewer-secret")

    assert expired[0] == 401 and "token 'old' expired at" in expired[1]["error"]
    assert revoked[0] == 401 and "token 'gone' was revoked at" in revoked[1]["error"]
    assert upload == (403, {"error": "token 'dev' has scope upload; this needs scope control"})
    assert read == (403, {"error": "token 'viewer' has scope read; this needs scope control"})
    assert await _requests(js, subjects) == []
    logged = [(r.token_name, r.status, r.scope) for r in caplog.records
              if r.getMessage() == "api token refused"]
    assert logged == [("old", 401, "control"), ("gone", 401, "control"),
                      ("dev", 403, "control"), ("viewer", 403, "control")]
    assert not any("-secret" in str(r.__dict__) for r in caplog.records)
    refused_used = await pool.fetchval(
        "SELECT count(*) FROM api_tokens WHERE name <> 'alice' AND last_used_at IS NOT NULL")
    assert refused_used == 0

    # The good token still works, and its use is recorded.
    assert await pool.fetchval("SELECT last_used_at FROM api_tokens WHERE name = 'alice'") \
        is None
    status, body = await api.post(path)
    assert status == 202, body
    (event,) = await _requests(js, subjects)
    assert event.data.requested_by == "alice"
    used = await pool.fetchval("SELECT last_used_at FROM api_tokens WHERE name = 'alice'")
    assert used is not None
    # Recorded at most once a minute: a second use within it writes nothing.
    assert (await api.post(path))[0] == 202
    assert await pool.fetchval(
        "SELECT last_used_at FROM api_tokens WHERE name = 'alice'") == used
