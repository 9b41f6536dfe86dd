"""KCIDB v5 export (through the CLI) and forwarding to a local kcidb-ng endpoint."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import aiohttp
import msgspec
import pytest

from tests.factories_results import Factory, finished, ingest_all, publish, started
from tests.helpers import assert_kcidb_valid, put_object, run_cli
from tests.servers.kcidb import KcidbServer, make_token
from wrtci.proto.model import ErrorCode, JobResult
from wrtci.proto.storage import job_log_key
from wrtci.services.kcidb.config import KcidbSection
from wrtci.services.results.config import ResultsSection
from wrtci.services.results.forwarder import Forwarder, KcidbClient
from wrtci.services.results.logs import LogTailReader
from wrtci.services.results.signatures import SignatureSet
from wrtci.services.results.work import Analyser
from wrtci.services.storage import minio_client

PANIC_LOG = """\
[    0.000000] Linux version 6.6.63 (builder@buildhost)
[    2.104000] VFS: Mounted root (squashfs filesystem) readonly on device 31:2.
[    5.300000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b
[    5.301000] ---[ end Kernel panic - not syncing: Attempted to kill init! ]---
"""


def _put(storage_config, key: str, text: str) -> None:
    put_object(storage_config, key, text.encode())


def analyser(pool, storage_config) -> Analyser:
    return Analyser(pool, LogTailReader(minio_client(storage_config), storage_config.bucket),
                    SignatureSet.load(), ResultsSection(log_retry_delay_s=0.01))


async def _firmware_with_results(js, subjects, pool, storage_config) -> tuple[str, str]:
    factory = Factory(pool)
    firmware = await factory.firmware(revision="r28000-0123456789")
    job = await factory.job(firmware)
    log_key = job_log_key(job, 1)
    _put(storage_config, log_key, PANIC_LOG)
    await publish(js, subjects, started(job), finished(
        job, {"base.test_shell": "PASS", "base.test_ubus[lan-1]": "FAIL"}, log_key=log_key))
    await ingest_all(js, subjects, pool)
    await analyser(pool, storage_config).run_due(10)
    return firmware, job


async def test_firmware_export_is_valid_kcidb_v5(js, subjects, pool, storage_config,
                                                 site_config_file, tmp_path):
    firmware, job = await _firmware_with_results(js, subjects, pool, storage_config)
    out = tmp_path / "kcidb.json"
    result = run_cli("kcidb", "export", "--firmware", firmware, "-c", str(site_config_file),
                     "-o", str(out))
    # Two pytest tests and the attempt's boot test.
    assert "1 checkouts, 1 builds, 3 tests, 1 issues, 1 incidents" in result.stdout
    document = json.loads(out.read_text())
    assert_kcidb_valid(document)
    assert document["version"] == {"major": 5, "minor": 3}
    assert [c["id"] for c in document["checkouts"]] == [firmware]
    tests = {t["path"]: t for t in document["tests"]}
    assert set(tests) == {"base.test_shell", "base.test_ubus_lan-1", "boot"}
    assert tests["base.test_ubus_lan-1"]["misc"]["pytest_id"] == "base.test_ubus[lan-1]"
    assert tests["base.test_ubus_lan-1"]["status"] == "FAIL"
    assert tests["boot"]["status"] == "PASS" and tests["boot"]["id"] == f"{job}:1:boot"
    for test in tests.values():
        assert test["environment"]["misc"]["platform"] == "x86/64/generic"
        # The default public URL is the API's own address ([api] host and port).
        assert test["log_url"] == (f"http://127.0.0.1:8072/api/v1/jobs/"
                                   f"{quote(job, safe='')}/attempts/1/log")
    assert document["incidents"][0]["test_id"] == f"{job}:1:base.test_ubus[lan-1]"
    assert document["issues"][0]["id"] == "wrtci:logspec:kernel-panic"
    # An abbreviated commit hash is not a KCIDB hash: kept under misc instead.
    assert "git_commit_hash" not in document["checkouts"][0]

    # The same through a time range, to stdout.
    ranged = json.loads(run_cli("kcidb", "export", "--since", "1h", "-c",
                                str(site_config_file)).stdout)
    assert_kcidb_valid(ranged)
    assert sorted(t["id"] for t in ranged["tests"]) == sorted(t["id"] for t in
                                                               document["tests"])
    for minor in range(4):  # every minor the CLI offers is one kcidb-io knows
        older = json.loads(run_cli("kcidb", "export", "--firmware", firmware, "--minor",
                                   str(minor), "-c", str(site_config_file)).stdout)
        assert older["version"]["minor"] == minor
        assert_kcidb_valid(older)


async def test_boot_failure_origin_and_log_url_from_config(js, subjects, pool,
                                                           storage_config, site_config_file):
    """A boot failure is a failed boot test carrying the log analysis' incident; the
    origin and the public URL come from [kcidb]; --since exports such incidents."""
    factory = Factory(pool)
    firmware = await factory.firmware(revision="r28427-6df0e3d02a")
    await pool.execute(
        "UPDATE checkouts SET git_repository_url = 'git://git.openwrt.org/openwrt.git', "
        "git_commit_hash = $2 WHERE id = $1", firmware, "ab" * 32)  # 64 hex: not KCIDB's
    job = await factory.job(firmware)
    log_key = job_log_key(job, 1)
    _put(storage_config, log_key, PANIC_LOG)
    await publish(js, subjects, started(job), finished(
        job, result=JobResult.ERROR, error_code=ErrorCode.BOOT_FAILED, log_key=log_key))
    await ingest_all(js, subjects, pool)
    await analyser(pool, storage_config).run_due(10)
    with site_config_file.open("a") as f:
        f.write('\n[kcidb]\norigin = "openwrt"\npublic_url = "https://ci.example.org/"\n')

    # The attempt finished at T0 (the factory's time): a range from before then holds it.
    for args in (["--firmware", firmware], ["--since", "2026-11-25T09:00"]):
        document = json.loads(run_cli("kcidb", "export", *args, "-c",
                                      str(site_config_file)).stdout)
        assert_kcidb_valid(document)
        (boot,) = document["tests"]
        assert boot["path"] == "boot" and boot["status"] == "FAIL"
        assert boot["id"] == "openwrt:" + f"{job}:1:boot".removeprefix("wrtci:")
        assert boot["log_url"] == ("https://ci.example.org/api/v1/jobs/"
                                   f"{quote(job, safe='')}/attempts/1/log")
        (incident,) = document["incidents"]
        assert incident["test_id"] == boot["id"] and "build_id" not in incident
        assert incident["issue_id"] == "openwrt:logspec:kernel-panic"
        ids = [o["id"] for kind in ("checkouts", "builds", "tests", "issues", "incidents")
               for o in document[kind]]
        assert all(i.startswith("openwrt:") for i in ids), ids
        assert {o["origin"] for kind in ("checkouts", "builds", "tests", "issues",
                                         "incidents") for o in document[kind]} == {"openwrt"}
        checkout = document["checkouts"][0]
        assert "git_repository_url" not in checkout and "git_commit_hash" not in checkout
        assert checkout["git_commit_name"] == "r28427-6df0e3d02a"
        assert checkout["misc"]["wrtci_id"] == firmware


def test_forwarding_is_off_unless_an_endpoint_is_configured(site_config_file, tmp_path):
    result = run_cli("kcidb", "forward", "-c", str(site_config_file), check=False)
    assert result.returncode == 1 and "no kcidb-ng endpoint configured" in result.stderr
    assert KcidbSection().url is None and not KcidbSection(enabled=True).forwarding
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"minor_version": 4}, KcidbSection)


@pytest.fixture
async def kcidb_server():
    server = await KcidbServer(hold_s=0.8).start()
    yield server
    await server.stop()


async def _forward_until_settled(pool, server, steps: int = 100) -> list[str]:
    section = KcidbSection(enabled=True, url=server.url, backoff_s=0.01,
                           token=make_token(server.secret, "wrtci"))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as session:
        forwarder = Forwarder(pool, KcidbClient(session, section.url, section.token), section)
        for _ in range(steps):
            await forwarder.step()
            states = [r["state"] for r in await pool.fetch(
                "SELECT DISTINCT state FROM kcidb_submissions")]
            if states == ["processed"]:
                break
            await asyncio.sleep(0.02)  # let the (tiny) retry backoff pass
    return states


async def test_forwarder_survives_5xx_and_timeout_without_losing_or_doubling(
        js, subjects, pool, storage_config, kcidb_server):
    firmware, _job = await _firmware_with_results(js, subjects, pool, storage_config)
    kcidb_server.faults = ["500", "timeout"]

    assert await _forward_until_settled(pool, kcidb_server) == ["processed"]
    assert kcidb_server.requests.count("submit") == 3  # 500, timeout, accepted
    assert len(kcidb_server.spool) == 1
    # Two pytest results and the attempt's boot test.
    for kind, expected in [("checkouts", 1), ("builds", 1), ("tests", 3), ("issues", 1),
                           ("incidents", 1)]:
        ids = kcidb_server.objects(kind)
        assert len(ids) == len(set(ids)) == expected, kind
    (document,) = kcidb_server.spool.values()
    assert_kcidb_valid(document)
    tries = await pool.fetchval("SELECT max(tries) FROM kcidb_submissions")
    assert tries == 2

    # New results later: only they go out, in a second submission.
    factory = Factory(pool)
    second = await factory.job(firmware)
    await publish(js, subjects, finished(second, {"base.test_shell": "PASS"}))
    await ingest_all(js, subjects, pool)
    assert await _forward_until_settled(pool, kcidb_server) == ["processed"]
    assert len(kcidb_server.spool) == 2
    all_tests = kcidb_server.objects("tests")
    assert len(all_tests) == len(set(all_tests)) == 5  # and the second job's boot test
    assert kcidb_server.objects("checkouts") == [firmware]  # not sent twice


async def test_forwarder_without_valid_token_fails_the_batch_once(pool, js, subjects,
                                                                  kcidb_server):
    factory = Factory(pool)
    job = await factory.job(await factory.firmware())
    await publish(js, subjects, finished(job, {"base.test_shell": "PASS"}))
    await ingest_all(js, subjects, pool)
    section = KcidbSection(enabled=True, url=kcidb_server.url, token="not-a-jwt")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        forwarder = Forwarder(pool, KcidbClient(session, section.url, section.token), section)
        await forwarder.step()
        await forwarder.step()
    assert kcidb_server.requests.count("submit") == 1
    row = await pool.fetchrow("SELECT state, last_error FROM kcidb_submissions "
                              "WHERE kind = 'tests'")
    assert row["state"] == "failed" and "401" in row["last_error"]
