"""``wrtci token create|list|revoke`` against the real database, and the read-token setting."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging

import pytest

from tests.api_support import serving
from tests.helpers import run_cli
from tests.token_support import add_token
from wrtci.services.auth import revoke_token


async def wrtci(*args: str, config, env: dict[str, str] | None = None):
    return await asyncio.to_thread(run_cli, *args, "--config", str(config), env=env,
                                   check=False)


async def test_token_create_list_revoke_through_the_cli(site_config_file, pool) -> None:
    created = await wrtci("token", "create", "ci-bot", "--scope", "upload", "--expires", "90d",
                          config=site_config_file)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("wrtci_") and len(token) > 40 and "\n" not in token
    assert "shown only now" in created.stderr and token not in created.stderr

    # Only the digest is stored; the secret is nowhere in the table.
    row = await pool.fetchrow("SELECT * FROM api_tokens WHERE name = 'ci-bot'")
    assert row["digest"] == hashlib.sha256(token.encode()).hexdigest()
    assert row["scopes"] == ["upload"] and row["revoked_at"] is None
    assert dt.timedelta(days=89, hours=23) < row["expires_at"] - row["created_at"] \
        < dt.timedelta(days=90, minutes=1)
    assert token not in str(dict(row))

    both = await wrtci("token", "create", "operator", "--scope", "control", "--scope", "read",
                       config=site_config_file)
    assert both.returncode == 0, both.stderr

    listing = await wrtci("token", "list", config=site_config_file)
    assert listing.returncode == 0, listing.stderr
    assert token not in listing.stdout and row["digest"] not in listing.stdout
    lines = {line.split()[0]: line.split() for line in listing.stdout.splitlines()[1:]}
    assert lines["ci-bot"][1:3] == ["upload", "active"]
    assert lines["operator"][1:3] == ["control,read", "active"]
    assert "never" in lines["operator"]  # no expiry, never used
    as_json = json.loads((await wrtci("token", "list", "--json",
                                      config=site_config_file)).stdout)
    assert [(t["name"], t["scopes"], t["state"], t["last_used_at"]) for t in as_json] == [
        ("ci-bot", ["upload"], "active", None), ("operator", ["control", "read"], "active", None)]
    assert "digest" not in as_json[0]

    revoked = await wrtci("token", "revoke", "ci-bot", config=site_config_file)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    first_time = await pool.fetchval("SELECT revoked_at FROM api_tokens WHERE name = 'ci-bot'")
    assert first_time is not None
    again = await wrtci("token", "revoke", "ci-bot", config=site_config_file)
    assert again.returncode == 0  # idempotent: the first revocation time stays
    assert await pool.fetchval(
        "SELECT revoked_at FROM api_tokens WHERE name = 'ci-bot'") == first_time
    as_json = json.loads((await wrtci("token", "list", "--json",
                                      config=site_config_file)).stdout)
    assert {t["name"]: t["state"] for t in as_json} == {"ci-bot": "revoked",
                                                       "operator": "active"}
    assert await pool.fetchval("SELECT revoked_at FROM api_tokens WHERE name = 'operator'") \
        is None


@pytest.mark.parametrize(("args", "status", "message"), [
    (("create", "ci-bot", "--scope", "upload"), 1, "exists already"),  # even when revoked
    (("create", "new", "--scope", "admin"), 2, "invalid choice"),
    (("create", "new"), 2, "--scope"),
    (("create", "new", "--scope", "read", "--expires", "soon"), 1, "is not a duration"),
    (("create", "new", "--scope", "read", "--expires", "0d"), 1, "is not a duration"),
    (("create", "bad name!", "--scope", "read"), 1, "bad token name"),
    (("create", "-x", "--scope", "read"), 2, ""),
    (("revoke", "nobody"), 1, "no token named 'nobody'"),
])
async def test_token_cli_bad_input(site_config_file, pool, args, status, message) -> None:
    await add_token(pool, "ci-bot", "secret-of-ci-bot", ["upload"])
    async with pool.acquire() as conn:
        await revoke_token(conn, "ci-bot")
    before = [dict(r) for r in await pool.fetch("SELECT * FROM api_tokens ORDER BY name")]
    result = await wrtci("token", *args, config=site_config_file)
    assert result.returncode == status and message in result.stderr, result.stderr
    assert result.stdout == ""  # no token printed
    assert [dict(r) for r in await pool.fetch("SELECT * FROM api_tokens ORDER BY name")] \
        == before


async def test_reads_need_a_token_when_the_setting_says_so(js, nats_config, database_config,
                                                         storage_config, pool, caplog) -> None:
    await add_token(pool, "reader", "read-secret", ["read"])
    await add_token(pool, "uploader", "upload-secret", ["upload"])
    await add_token(pool, "gone", "gone-secret", ["read"])
    await add_token(pool, "old", "old-secret", ["read"],
                    expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    async with pool.acquire() as conn:
        await revoke_token(conn, "gone")

    async with serving(nats_config, database_config, storage_config,
                       require_read_token=True) as api:
        async def get(path: str, token: str | None) -> tuple[int, object]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with api.session.get(api.base + path, headers=headers) as resp:
                body = await resp.read()
                return resp.status, (json.loads(body) if resp.content_type ==
                                     "application/json" else body.decode())

        with caplog.at_level(logging.WARNING, logger="wrtci.services.auth"):
            assert await get("/api/v1/firmware", None) == (401, {"error": "missing bearer token"})
            assert await get("/api/v1/firmware", "guess") == (401, {"error": "invalid token"})
            status, body = await get("/api/v1/firmware", "gone-secret")
            assert status == 401 and "'gone' was revoked" in body["error"]
            status, body = await get("/api/v1/firmware", "old-secret")
            assert status == 401 and "'old' expired" in body["error"]
            status, page = await get("/", None)  # pages too: an HTML error page
            assert status == 401 and "missing bearer token" in page
        # The server says why, with the token's name and never its secret.
        refusals = [r for r in caplog.records if r.getMessage() == "api token refused"]
        assert [(r.token_name, r.status) for r in refusals] == [
            (None, 401), (None, 401), ("gone", 401), ("old", 401), (None, 401)]
        assert not any(secret in str(r.__dict__) for r in refusals
                       for secret in ("gone-secret", "old-secret", "guess"))

        # Any valid token reads; the open paths stay open.
        status, body = await get("/api/v1/firmware", "read-secret")
        assert status == 200 and body["items"] == []
        assert (await get("/api/v1/firmware", "upload-secret"))[0] == 200
        assert (await get("/", "read-secret"))[0] == 200
        assert await get("/healthz", None) == (200, {"status": "ok"})

    used = dict(await pool.fetch("SELECT name, last_used_at IS NOT NULL FROM api_tokens "
                                 "WHERE name <> 'alice'"))
    assert used == {"reader": True, "uploader": True, "gone": False, "old": False}


async def test_reading_is_open_by_default(js, nats_config, database_config, storage_config,
                                          pool) -> None:
    async with serving(nats_config, database_config, storage_config) as api:
        status, body = await api.get("/api/v1/firmware")
        assert status == 200 and body["items"] == []


@pytest.mark.parametrize("header", [
    b"Bearer \xff\xfe\x80", b"Bearer " + b"x" * 8000, b"Basic YWxpY2U6c2VjcmV0",
    b"Bearer", b"bearer  ", "Bearer wrtci_\u00e9t\u00e9".encode(),
])
async def test_odd_authorization_headers_get_401(js, nats_config, database_config,
                                                 storage_config, pool, header) -> None:
    """Raw bytes on the wire, as any client could send them: a 401 with a reason,
    never a 500, and the server goes on serving."""
    async with serving(nats_config, database_config, storage_config) as api:
        port = int(api.base.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /api/v1/jobs/x/retry HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n"
                     b"Connection: close\r\nAuthorization: " + header + b"\r\n\r\n")
        await writer.drain()
        response = await reader.read()
        writer.close()
        status_line, _, rest = response.partition(b"\r\n")
        assert status_line.split()[1] == b"401", response[:300]
        body = json.loads(rest.split(b"\r\n\r\n", 1)[1])
        assert body["error"] in ("missing bearer token", "invalid token")
        status, _ = await api.post("/api/v1/jobs/x/retry")  # alice's token: 404, not 401
        assert status == 404
