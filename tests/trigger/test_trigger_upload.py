"""Developer uploads and the buildbot webhook, through the trigger's HTTP endpoints."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.helpers import read_object, run_cli
from tests.servers.trigger_harness import (
    build_count,
    checkouts,
    discovered_events,
    trigger_config,
)
from tests.token_support import add_token
from wrtci.proto.model import SourceKind
from wrtci.proto.subjects import PriorityClass
from wrtci.services.auth import revoke_token
from wrtci.services.stack.servers import free_port
from wrtci.services.trigger.config import OfficialConfig, WebConfig
from wrtci.services.trigger.images import classify, guess_profile
from wrtci.services.trigger.service import Config, run

TOKEN = "upload-token-for-tests"
BUILDBOT_TOKEN = "buildbot-token-for-tests"
VIRTUAL_FIRMWARE = "openwrt-24.10.0-x86-64-generic-initramfs-rootfs.cpio.gz"


@pytest.fixture
async def service(nats_config, database_config, storage_config, js, downloads,
                  traversable_tmp, pool) -> AsyncIterator[tuple[str, Config]]:
    """The trigger daemon itself, running with only its HTTP endpoints; tokens of scope
    upload named alice and buildbot in its database."""
    await add_token(pool, "alice", TOKEN, ["upload"])
    await add_token(pool, "buildbot", BUILDBOT_TOKEN, ["upload"])
    port = free_port()
    config = trigger_config(
        nats_config, database_config, storage_config,
        official=OfficialConfig(enabled=False, base_url=downloads.url),
        web=WebConfig(port=port, max_upload_bytes=2 * 1024 * 1024, spool_dir=str(traversable_tmp)),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run(config, stop))
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                async with session.get(f"{url}/healthz") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    yield url, config
    stop.set()
    await asyncio.wait_for(task, 30)


async def post_upload(url: str, files: dict[str, bytes], token: str = TOKEN,
                      **fields: str) -> tuple[int, dict]:
    form = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields.items():
        form.add_field(name, value)
    for name, content in files.items():
        form.add_field("file", content, filename=name,
                       content_type="application/octet-stream")
    async with aiohttp.ClientSession() as session, session.post(
            f"{url}/api/v1/firmware", data=form,
            headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, await resp.json()



# -- uploads ---------------------------------------------------------------------------------


async def test_upload_is_stored_recorded_and_announced_once(service, js, subjects, pool,
                                                            storage_config) -> None:
    url, _ = service
    content = os.urandom(300_000)
    digest = hashlib.sha256(content).hexdigest()

    status, body = await post_upload(url, {VIRTUAL_FIRMWARE: content},
                                     device_type="x86/64/generic", sha256=digest,
                                     version="24.10.0", revision="r28427-6df0e3d02a")
    again, body_again = await post_upload(url, {VIRTUAL_FIRMWARE: content},
                                          device_type="x86/64/generic")

    firmware_id = f"wrtci:upload:{digest}"
    assert (status, again) == (201, 200)
    assert body["firmware_id"] == body_again["firmware_id"] == firmware_id
    image = body["images"][0]
    assert (image["type"], image["filesystem"], image["sha256"], image["size"]) == (
        "rootfs", "initramfs", digest, len(content))
    assert read_object(storage_config, image["object_key"]) == content
    row = (await checkouts(pool))[firmware_id]
    assert (row["source_kind"], row["priority_class"], row["channel"], row["version"],
            row["misc"]["submitter"]) == ("upload", "custom", "custom", "24.10.0", "alice")
    events = await discovered_events(js, subjects)
    assert [e.id for e in events] == [f"firmware.discovered:{firmware_id}"]
    data = events[0].data
    assert (data.source_kind, data.priority_class, data.submitter) == (
        SourceKind.UPLOAD, PriorityClass.CUSTOM, "alice")
    assert data.images[0].device_types == "x86/64/generic"


async def test_upload_of_several_files_with_separate_fields(service, pool) -> None:
    url, _ = service
    files = {"openwrt-ath79-generic-tplink_c7-squashfs-sysupgrade.bin": b"s" * 1000,
             "openwrt-ath79-generic-tplink_c7-initramfs-kernel.bin": b"k" * 1000}
    status, body = await post_upload(url, files, target="ath79", subtarget="generic",
                                     profile="tplink_c7")
    assert status == 201
    assert sorted((i["type"], i["filesystem"]) for i in body["images"]) == [
        ("kernel", "initramfs"), ("sysupgrade", "squashfs")]
    assert await build_count(pool, body["firmware_id"]) == 2


@pytest.mark.parametrize(("files", "fields", "token", "status", "message"), [
    ({VIRTUAL_FIRMWARE: b"x"}, {"device_type": "x86/64"}, "wrong", 401, "invalid token"),
    ({VIRTUAL_FIRMWARE: b"x"}, {}, TOKEN, 400, "missing field"),
    ({VIRTUAL_FIRMWARE: b"x"}, {"device_type": "x86"}, TOKEN, 400, "target/subtarget"),
    ({VIRTUAL_FIRMWARE: b"x"}, {"device_type": "../../x"}, TOKEN, 400, "bad device"),
    ({"notes.txt": b"x"}, {"device_type": "x86/64"}, TOKEN, 415, "not a firmware file"),
    ({"../../etc/x.bin": b"x"}, {"device_type": "x86/64"}, TOKEN, 400, "bad file name"),
    ({"mystery.bin": b"x"}, {"device_type": "x86/64"}, TOKEN, 422, "image type"),
    ({VIRTUAL_FIRMWARE: b"x"}, {"device_type": "x86/64", "sha256": "0" * 64}, TOKEN, 422,
     "sha256 mismatch"),
    ({VIRTUAL_FIRMWARE: b"x" * (3 * 1024 * 1024)}, {"device_type": "x86/64"}, TOKEN, 413,
     "over"),
    ({}, {"device_type": "x86/64"}, TOKEN, 400, "no firmware file"),
])
async def test_bad_uploads_are_refused_and_record_nothing(service, js, subjects, pool, files,
                                                          fields, token, status,
                                                          message) -> None:
    url, _ = service
    got, body = await post_upload(url, files, token=token, **fields)
    assert got == status and message in body["error"]
    assert await checkouts(pool) == {}
    assert await discovered_events(js, subjects) == []


async def test_upload_tokens_expired_revoked_or_of_another_scope_are_refused(
        service, js, subjects, pool) -> None:
    url, _ = service
    await add_token(pool, "old", "old-secret", ["upload"],
                    expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    await add_token(pool, "gone", "gone-secret", ["upload"])
    await add_token(pool, "ops", "ops-secret", ["control", "read"])
    async with pool.acquire() as conn:
        await revoke_token(conn, "gone")
    files = {VIRTUAL_FIRMWARE: b"x" * 1000}

    expired = await post_upload(url, files, token="old-secret", device_type="x86/64")
    revoked = await post_upload(url, files, token="gone-secret", device_type="x86/64")
    other = await post_upload(url, files, token="ops-secret", device_type="x86/64")
    webhook = await post_build(url, build_notification(branch="main"), token="ops-secret")

    assert expired[0] == 401 and "token 'old' expired at" in expired[1]["error"]
    assert revoked[0] == 401 and "token 'gone' was revoked at" in revoked[1]["error"]
    forbidden = {"error": "token 'ops' has scope control, read; this needs scope upload"}
    assert other == (403, forbidden) and webhook == (403, forbidden)
    assert await checkouts(pool) == {}
    assert await discovered_events(js, subjects) == []
    assert await pool.fetchval(
        "SELECT count(*) FROM api_tokens WHERE last_used_at IS NOT NULL") == 0
    # Nothing else disturbed: alice's token uploads, and its use is recorded.
    status, body = await post_upload(url, files, device_type="x86/64")
    assert status == 201, body
    assert (await checkouts(pool))[body["firmware_id"]]["misc"]["submitter"] == "alice"
    assert await pool.fetchval(
        "SELECT array_agg(name) FROM api_tokens WHERE last_used_at IS NOT NULL") == ["alice"]


async def wrtci(*args: str, env: dict[str, str] | None = None):
    return await asyncio.to_thread(run_cli, *args, env=env, check=False)


async def test_wrtci_upload_records_a_firmware_end_to_end(service, js, subjects, pool,
                                                          storage_config, site_config_file,
                                                          tmp_path) -> None:
    """A token from `wrtci token create`, a firmware sent by `wrtci upload`."""
    url, config = service
    created = await wrtci("token", "create", "dev-bob", "--scope", "upload",
                          "--config", str(site_config_file))
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    content = os.urandom(200_000)
    image = tmp_path / VIRTUAL_FIRMWARE
    image.write_bytes(content)
    firmware_id = f"wrtci:upload:{hashlib.sha256(content).hexdigest()}"

    result = await wrtci("upload", str(image), "--device-type", "x86/64/generic",
                         "--version", "24.10.0", "--url", url,
                         "--web-url", "https://ci.example.org/", env={"WRTCI_TOKEN": token})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"firmware {firmware_id}: recorded, jobs follow"
    assert lines[-1] == f"https://ci.example.org/firmware/{firmware_id}"
    row = (await checkouts(pool))[firmware_id]
    assert (row["source_kind"], row["version"], row["misc"]["submitter"]) == (
        "upload", "24.10.0", "dev-bob")
    (event,) = await discovered_events(js, subjects)
    assert event.data.images[0].device_types == "x86/64/generic"
    assert read_object(storage_config, event.data.images[0].object_key) == content
    assert await pool.fetchval(
        "SELECT last_used_at FROM api_tokens WHERE name = 'dev-bob'") is not None

    # Where to and with what, from the site file and a token file (as `wrtci up` leaves them).
    site = tmp_path / "site.toml"
    site.write_text(f"[trigger.web]\nport = {config.trigger.web.port}\n"
                    "[notifier]\nweb_url = \"http://results.test\"\n")
    token_file = tmp_path / "api-token"
    token_file.write_text(token + "\n")
    again = await wrtci("upload", str(image), "--device-type", "x86/64/generic",
                        env={"WRTCI_CONFIG": str(site), "WRTCI_TOKEN_FILE": str(token_file)})
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0] == f"firmware {firmware_id}: already known (same files)"
    assert again.stdout.splitlines()[-1] == f"http://results.test/firmware/{firmware_id}"
    assert len(await discovered_events(js, subjects)) == 1


async def test_wrtci_upload_refusals_exit_1_with_the_reason(service, js, subjects, pool,
                                                            tmp_path) -> None:
    url, _ = service
    await add_token(pool, "ops", "ops-secret", ["control"])
    await add_token(pool, "gone", "gone-secret", ["upload"])
    async with pool.acquire() as conn:
        await revoke_token(conn, "gone")
    image = tmp_path / VIRTUAL_FIRMWARE
    image.write_bytes(b"x" * 1000)
    upload = ("upload", str(image), "--url", url)
    cases = [
        ((*upload, "--device-type", "x86/64"), "wrong", "refused (401): invalid token"),
        ((*upload, "--device-type", "x86/64"), "gone-secret",
         "refused (401): token 'gone' was revoked"),
        ((*upload, "--device-type", "x86/64"), "ops-secret",
         "refused (403): token 'ops' has scope control; this needs scope upload"),
        ((*upload, "--device-type", "x86"), TOKEN, "refused (400): device_type must be"),
        (("upload", str(tmp_path / "none.bin"), "--device-type", "x86/64", "--url", url),
         TOKEN, "none.bin: no such file"),
        ((*upload, "--device-type", "x86/64"), "", "no API token"),
        (("upload", str(image), "--device-type", "x86/64", "--url",
          f"http://127.0.0.1:{free_port()}"), TOKEN, "failed"),
    ]
    for args, token, message in cases:
        result = await wrtci(*args, env={"WRTCI_TOKEN": token})
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
        assert result.stdout == ""
    assert await checkouts(pool) == {}
    assert await discovered_events(js, subjects) == []


async def _endless_file():
    yield (b"--B\r\nContent-Disposition: form-data; name=\"device_type\"\r\n\r\nx86/64\r\n"
           b"--B\r\nContent-Disposition: form-data; name=\"file\"; "
           b"filename=\"" + VIRTUAL_FIRMWARE.encode() + b"\"\r\n\r\n")
    for _ in range(64):
        yield b"z" * 65536


async def _endlessly_repeated_field():
    for _ in range(100_000):
        yield b"--B\r\nContent-Disposition: form-data; name=\"target\"\r\n\r\nx86\r\n"


@pytest.mark.parametrize(("body", "status", "error"), [
    pytest.param(_endless_file, 413, "over", id="oversized-file-stops-at-the-limit"),
    pytest.param(_endlessly_repeated_field, 400, "sent twice",
                 id="repeated-field-refused-at-its-second-copy"),
])
async def test_streamed_upload_is_refused_while_it_streams(
        service, pool, body, status, error) -> None:
    """No Content-Length (chunked): the limits are enforced while streaming."""
    url, _ = service
    async with aiohttp.ClientSession() as session, session.post(
            f"{url}/api/v1/firmware", data=body(),
            headers={"Authorization": f"Bearer {TOKEN}",
                     "Content-Type": "multipart/form-data; boundary=B"}) as resp:
        assert resp.status == status
        assert error in (await resp.json())["error"]
    assert await checkouts(pool) == {}


# -- buildbot ---------------------------------------------------------------------------------


def build_notification(**properties: str) -> dict:
    return {
        "buildid": 4711, "number": 12, "complete": True, "results": 0,
        "url": "https://buildbot.example/#/builders/7/builds/12",
        "builder": {"name": "ath79/generic"},
        "properties": {name: [value, "Build"] for name, value in properties.items()},
    }


async def post_build(url: str, payload: dict | bytes, token: str = BUILDBOT_TOKEN):
    async with aiohttp.ClientSession() as session:
        kwargs = {"data": payload} if isinstance(payload, bytes) else {"json": payload}
        async with session.post(f"{url}/api/v1/buildbot",
                                headers={"Authorization": f"Bearer {token}"},
                                **kwargs) as resp:
            return resp.status, await resp.json()


async def test_buildbot_snapshot_build_becomes_the_snapshot_firmware(service, js, subjects,
                                                                     pool) -> None:
    url, _ = service
    payload = build_notification(branch="main", got_revision="22d1e6cd26aabbccdd")

    first = await post_build(url, payload)
    second = await post_build(url, payload)

    firmware_id = "wrtci:official:snapshot:SNAPSHOT:r28695-22d1e6cd26"
    assert first == (201, {"firmware_id": firmware_id, "created": True})
    assert second == (200, {"firmware_id": firmware_id, "created": False})
    assert (await checkouts(pool))[firmware_id]["source_kind"] == "buildbot"
    events = await discovered_events(js, subjects)
    assert len(events) == 1
    assert (events[0].data.source_kind, events[0].data.priority_class) == (
        SourceKind.BUILDBOT, PriorityClass.SNAPSHOT)


async def test_buildbot_release_tag_is_the_stable_channel(service, pool) -> None:
    url, _ = service
    status, body = await post_build(url, build_notification(tag="v23.05.5"))
    assert status == 201
    assert body["firmware_id"] == "wrtci:official:stable:23.05.5:r24106-10cc5fcd00"


@pytest.mark.parametrize(("payload", "token", "status", "message"), [
    (build_notification(branch="main"), "nope", 401, "invalid token"),
    (b"{broken", BUILDBOT_TOKEN, 422, "not a buildbot build"),
    ({"number": 1}, BUILDBOT_TOKEN, 422, "buildid"),
    (build_notification(branch="feature-x"), BUILDBOT_TOKEN, 422, "unknown branch"),
    (build_notification(branch="main", got_revision="ffffffff"), BUILDBOT_TOKEN, 409,
     "does not describe"),
    (build_notification(branch="main", target="x86/64"), BUILDBOT_TOKEN, 409, "not on the"),
    (build_notification(branch="main", target="../etc"), BUILDBOT_TOKEN, 422, "target"),
])
async def test_bad_buildbot_notifications_are_refused(service, pool, payload, token, status,
                                                      message) -> None:
    url, _ = service
    got, body = await post_build(url, payload, token)
    assert got == status and message in body["error"]
    assert await checkouts(pool) == {}


async def test_failed_build_is_ignored(service, pool) -> None:
    url, _ = service
    payload = build_notification(branch="main") | {"results": 2}
    assert await post_build(url, payload) == (202, {"ignored": "build did not succeed"})
    assert await checkouts(pool) == {}


# -- pure logic ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), [
    ("openwrt-23.05.5-x86-64-generic-squashfs-combined-efi.img.gz", ("combined-efi", "squashfs")),
    ("openwrt-ath79-generic-8dev_carambola2-initramfs-kernel.bin", ("kernel", "initramfs")),
    ("openwrt-ramips-mt7621-xiaomi_mi-router-4a-squashfs-sysupgrade.bin",
     ("sysupgrade", "squashfs")),
    ("openwrt-mediatek-filogic-bananapi_bpi-r3-squashfs-factory.bin", ("factory", "squashfs")),
    (VIRTUAL_FIRMWARE, ("rootfs", "initramfs")),
    ("firmware.bin", (None, None)),
])
def test_image_type_from_name(name, expected) -> None:
    assert classify(name) == expected


def test_profile_from_name() -> None:
    assert guess_profile("openwrt-ramips-mt7621-xiaomi_mi-router-4a-squashfs-sysupgrade.bin",
                         "ramips", "mt7621") == "xiaomi_mi-router-4a"
    assert guess_profile(VIRTUAL_FIRMWARE, "x86", "64") == "generic"
    assert guess_profile("other.bin", "x86", "64") is None
