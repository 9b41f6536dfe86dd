"""The api's JSON endpoints against rows stored the way the other services store them."""

from __future__ import annotations

import datetime as dt
import logging
from urllib.parse import quote

import pytest

from tests.api_support import HOSTILE, scenario, serving
from tests.factories_results import Factory
from tests.helpers import eventually, put_object
from wrtci.proto.storage import job_log_key


@pytest.fixture
async def api(js, nats_config, database_config, storage_config):
    async with serving(nats_config, database_config, storage_config,
                       log_chunk_bytes=16 * 1024) as client:
        yield client


def seg(value: str) -> str:
    return quote(value, safe="")


async def test_firmware_list_filters_and_pages_newest_first(api, pool):
    factory = Factory(pool)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    snapshots = [await factory.firmware(created_at=t0 + dt.timedelta(days=n))
                 for n in range(5)]
    stable = await factory.firmware("24.10.1", channel="stable", source_kind="official",
                                    created_at=t0 + dt.timedelta(days=10))
    upload = await factory.firmware("custom", channel="custom", source_kind="upload",
                                    created_at=t0 + dt.timedelta(days=11))
    await pool.execute("UPDATE checkouts SET state = 'done' WHERE id = $1", snapshots[0])

    status, body = await api.get("/api/v1/firmware")
    assert status == 200
    assert [f["id"] for f in body["items"]] == [upload, stable, *reversed(snapshots)]
    assert (body["total"], body["next"]) == (7, None)

    status, first = await api.get("/api/v1/firmware", channel="snapshot", limit=2)
    assert [f["id"] for f in first["items"]] == [snapshots[4], snapshots[3]]
    assert first["total"] == 5
    status, second = await api.get(first["next"])
    assert [f["id"] for f in second["items"]] == [snapshots[2], snapshots[1]]
    status, last = await api.get(second["next"])
    assert [f["id"] for f in last["items"]] == [snapshots[0]] and last["next"] is None

    _, done = await api.get("/api/v1/firmware", state="done")
    assert [f["id"] for f in done["items"]] == [snapshots[0]]
    _, uploads = await api.get("/api/v1/firmware", source="upload")
    assert [(f["id"], f["channel"], f["source_kind"]) for f in uploads["items"]] == [
        (upload, "custom", "upload")]


@pytest.mark.parametrize("params", [
    {"limit": "0"}, {"limit": "100000"}, {"limit": "ten"}, {"offset": "-1"},
    {"state": "exploded"}, {"source": "ftp"}, {"channel": "x" * 500},
])
async def test_bad_query_parameters_are_400(api, params):
    status, body = await api.get("/api/v1/firmware", **params)
    assert status == 400 and body["error"]


async def test_firmware_with_summary_and_jobs(api, js, subjects, pool, storage_config):
    s = await scenario(js, subjects, pool, storage_config)
    status, body = await api.get(f"/api/v1/firmware/{seg(s.bad)}")
    assert status == 200
    firmware = body["firmware"]
    assert (firmware["id"], firmware["version"], firmware["channel"], firmware["state"],
            firmware["jobs"], firmware["done"]) == (s.bad, "SNAPSHOT", "snapshot", "done", 1, 1)
    summary = body["summary"]
    assert summary["tests"] == {"PASS": 1, "FAIL": 2}  # the latest attempt counts
    (dtype,) = summary["device_types"]
    assert sorted(r["path"] for r in dtype["regressions"]) == sorted(["base.test_wifi", HOSTILE])
    assert {r["last_passing_checkout_id"] for r in dtype["regressions"]} == {s.good}
    assert [i["title"] for i in dtype["incidents"]] == ["Kernel panic"]
    (job,) = body["jobs"]
    assert {k: job[k] for k in ("id", "device_type", "state", "result", "error_code",
                                "attempt", "lab", "device", "log_key")} == {
        "id": s.bad_job, "device_type": "x86/64/generic", "state": "done", "result": "fail",
        "error_code": None, "attempt": 2, "lab": "lab-a", "device": "dut-1",
        "log_key": job_log_key(s.bad_job, 2)}

    _, stable = await api.get(f"/api/v1/firmware/{seg(s.stable)}")
    (waiting,) = stable["jobs"]
    assert (waiting["state"], waiting["waiting_for_lab"]) == ("queued", True)
    assert stable["firmware"]["waiting_device_types"] == ["x86/64/generic"]

    status, body = await api.get(f"/api/v1/firmware/{seg('wrtci:official:nope')}")
    assert (status, body) == (404, {"error": "no firmware wrtci:official:nope"})


async def test_job_with_every_attempt_and_its_tests(api, js, subjects, pool, storage_config):
    s = await scenario(js, subjects, pool, storage_config)
    # The id holds "/" and ":": both the encoded and the plain form reach the job.
    for path in (f"/api/v1/jobs/{seg(s.bad_job)}", f"/api/v1/jobs/{s.bad_job}"):
        status, body = await api.get(path)
        assert status == 200, body
        assert body["job"]["id"] == s.bad_job
    first, second = body["attempts"]
    assert (first["attempt"], first["result"], first["error_code"], first["tests"]) == (
        1, "error", "boot_failed", [])
    assert (second["attempt"], second["result"], second["lab"], second["device"]) == (
        2, "fail", "lab-a", "dut-1")
    assert [(t["path"], t["status"]) for t in second["tests"]] == [  # in path order
        (HOSTILE, "FAIL"), ("base.test_shell", "PASS"), ("base.test_wifi", "FAIL")]
    assert second["tests"][2]["id"] == f"{s.bad_job}:2:base.test_wifi"
    (incident,) = body["incidents"]
    assert (incident["issue_id"], incident["attempt"]) == ("wrtci:logspec:kernel-panic", 2)

    status, body = await api.get(f"/api/v1/jobs/{seg(s.bad_job + 'x')}")
    assert status == 404 and "no job" in body["error"]


async def test_console_log_is_streamed_from_object_storage(api, js, subjects, pool,
                                                           storage_config):
    s = await scenario(js, subjects, pool, storage_config)
    url = f"{api.base}/api/v1/jobs/{seg(s.bad_job)}/attempts/2/log"
    async with api.session.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert int(resp.headers["Content-Length"]) == len(s.log)
        body = await resp.read()
    assert body == s.log

    # An artifact of the attempt, by its stream name.
    put_object(storage_config, job_log_key(s.bad_job, 2, "junit.xml"), b"<testsuite/>")
    async with api.session.get(url, params={"stream": "junit.xml"}) as resp:
        assert (resp.status, await resp.read()) == (200, b"<testsuite/>")
        assert resp.headers["Content-Type"] == "application/xml"

    # Attempt 1 exists but no log was ever stored; attempt 3 does not exist.
    status, body = await api.get(f"/api/v1/jobs/{seg(s.bad_job)}/attempts/1/log")
    assert status == 404 and "no console log stored" in body["error"]
    status, body = await api.get(f"/api/v1/jobs/{seg(s.bad_job)}/attempts/3/log")
    assert status == 404 and "no attempt 3" in body["error"]
    status, body = await api.get(f"/api/v1/jobs/{seg(s.bad_job)}/attempts/2/log",
                                 stream="../../etc/passwd")
    assert status == 400


async def test_client_leaving_mid_log_is_logged_and_the_api_keeps_serving(
        api, js, subjects, pool, storage_config, caplog):
    s = await scenario(js, subjects, pool, storage_config)
    big = b"U-Boot 2024.01 console line\n" * 400_000  # ~11 MB, many chunks
    put_object(storage_config, job_log_key(s.bad_job, 2, "console"), big)
    url = f"{api.base}/api/v1/jobs/{seg(s.bad_job)}/attempts/2/log"
    with caplog.at_level(logging.WARNING, logger="wrtci.services.api.logs"):
        async with api.session.get(url) as resp:
            assert resp.status == 200
            first = await resp.content.read(65536)
            assert first.startswith(b"U-Boot")
            resp.close()  # the client goes away after the first piece

        async def cut_off_logged() -> bool:
            return any("cut off" in r.getMessage() for r in caplog.records)

        await eventually(cut_off_logged, "the cut-off stream logged")
    status, body = await api.get("/api/v1/firmware")
    assert status == 200 and body["total"] >= 1


async def test_labs_devices_and_health(api, js, subjects, pool, storage_config):
    await scenario(js, subjects, pool, storage_config)
    status, body = await api.get("/api/v1/labs")
    assert status == 200
    (lab,) = body["items"]
    assert (lab["name"], lab["online"], lab["version"]) == ("lab-a", True, "0.3")
    (device,) = lab["devices"]
    assert (device["name"], device["device_type"], device["health"], device["state"],
            device["consecutive_failures"]) == ("dut-1", "x86/64/generic", "warning", "idle", 1)
    assert lab["heartbeat_at"] is not None  # the scenario's lab heartbeats

    from tests.factories import announce_lab
    record = await announce_lab(js, subjects, "lab-a", [("dut-1", "x86/64/generic", [])])
    _, body = await api.get("/api/v1/labs/lab-a")
    assert body["lab"]["heartbeat_at"].startswith(record.heartbeat_at.strftime("%Y-%m-%dT%H:%M"))
    assert body["lab"]["online"] is True
    (report,) = body["health"]
    assert (report["device"], report["health"], report["message"]) == (
        "dut-1", "warning", "slow boot")
    status, _ = await api.get("/api/v1/labs/lab-zzz")
    assert status == 404


async def test_regressions_and_flaky_tests(api, js, subjects, pool, storage_config):
    s = await scenario(js, subjects, pool, storage_config)
    status, body = await api.get("/api/v1/regressions", firmware=s.bad)
    assert status == 200
    assert sorted(r["path"] for r in body["items"]) == sorted(["base.test_wifi", HOSTILE])
    assert {(r["first_failing_checkout_id"], r["fixed_checkout_id"], r["flaky"])
            for r in body["items"]} == {(s.bad, None, False)}
    _, page = await api.get("/api/v1/regressions", device_type="x86/64/generic", open="true",
                            limit=1)
    assert (len(page["items"]), page["total"]) == (1, 2) and page["next"]
    _, none = await api.get("/api/v1/regressions", device_type="ath79/generic/x")
    assert none["items"] == []
    status, _ = await api.get("/api/v1/regressions", open="maybe")
    assert status == 400

    _, flaky = await api.get("/api/v1/flaky")
    assert flaky["items"] == []  # nothing flips within one firmware here
    _, every = await api.get("/api/v1/flaky", all="1", device_type="x86/64/generic")
    assert {f["path"] for f in every["items"]} >= {"base.test_wifi", "base.test_shell"}
    assert all(not f["flaky"] for f in every["items"])


async def test_unknown_path_and_method(api):
    status, body = await api.get("/api/v1/nothing")
    assert (status, body) == (404, {"error": "not found"})
    async with api.session.delete(f"{api.base}/api/v1/firmware") as resp:
        assert resp.status == 405


@pytest.mark.parametrize("path", [
    "/api/v1/firmware?channel=%00",
    "/api/v1/firmware/wrtci%00x",
    "/api/v1/jobs/x%00/attempts/1/log",
    "/api/v1/regressions?firmware=%00",
    "/firmware/wrtci%00x",
])
async def test_nul_in_path_or_query_is_400_with_the_error_headers(api, path):
    # PostgreSQL refuses NUL in text: it used to surface as aiohttp's bare 500.
    async with api.session.get(api.base + path) as resp:
        assert resp.status == 400
        if path.startswith("/api/"):
            assert "NUL" in (await resp.json())["error"]
        else:
            assert resp.content_type == "text/html"
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
