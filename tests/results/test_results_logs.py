"""Console-log analysis: signatures (pure) and incidents from logs in object storage."""

from __future__ import annotations

import pytest

from tests.factories_results import Factory, finished, ingest_all, publish, started
from tests.results.test_results_kcidb import PANIC_LOG, _put, analyser
from wrtci.proto.model import ErrorCode, JobResult
from wrtci.proto.storage import job_log_key
from wrtci.services.results.signatures import Signature, SignatureError, SignatureSet

SIGNATURES = SignatureSet.load()


def _names(log: str) -> list[str]:
    return sorted(m.signature.name for m in SIGNATURES.scan(log))


def test_shipped_signatures_find_the_usual_failures():
    assert _names(PANIC_LOG) == ["kernel-panic"]
    assert _names("[ 12.1] Internal error: Oops: 5 [#1] SMP ARM\n") == ["kernel-oops"]
    assert _names("[ 3.2] BUG: unable to handle page fault for address: 0000\n") == [
        "kernel-bug"]
    assert _names("[ 9.9] ubusd invoked oom-killer: gfp_mask=0x100cca\n") == ["oom-killer"]
    assert _names("[ 5.0] netifd[1234]: segfault at 0 ip 77f0 sp 7ff0 error 4\n") == [
        "segfault"]
    assert _names("[ 4.4] VFS: Unable to mount root fs on unknown-block(31,2)\n") == [
        "rootfs-mount-failure"]
    assert _names("## Booting kernel from Legacy Image\nBad Data CRC\n") == ["uboot-failure"]
    assert _names("ExecutionError: Timeout while waiting for login prompt\n") == [
        "login-timeout"]
    assert _names("[ 1.0] random: crng init done\nroot@OpenWrt:/# \n") == []


def test_last_line_signature_only_when_the_log_ends_there():
    hung = "U-Boot 2023.07\n## Loading kernel\nStarting kernel ...\n\n"
    booted = hung + "[    0.000000] Linux version 6.6.63\n"
    assert _names(hung) == ["boot-failure"]
    assert _names(booted) == []


def test_match_keeps_the_lines_and_context():
    (match,) = SIGNATURES.scan(PANIC_LOG)
    assert [(line.number, line.text) for line in match.lines] == [
        (3, PANIC_LOG.splitlines()[2]), (4, PANIC_LOG.splitlines()[3])]
    assert match.excerpt.splitlines()[0].endswith("exitcode=0x0000000b")


def test_signatures_are_checked_when_loaded(tmp_path):
    with pytest.raises(SignatureError, match="bad pattern"):
        SignatureSet([Signature(name="x", title="x", pattern="(")])
    with pytest.raises(SignatureError, match="culprit"):
        SignatureSet([Signature(name="x", title="x", pattern="x", culprit="moon")])
    bad = tmp_path / "sigs.toml"
    bad.write_text('[[signature]]\nname = "x"\ntitle = "x"\npattern = "x"\ncolour = "red"\n')
    with pytest.raises(SignatureError):
        SignatureSet.load(bad)
    custom = tmp_path / "custom.toml"
    custom.write_text('[[signature]]\nname = "lan-down"\ntitle = "LAN down"\n'
                      "pattern = 'br-lan: link is not ready'\nculprit = \"harness\"\n")
    assert [m.signature.issue_id for m in SignatureSet.load(custom).scan(
        "[ 8.0] br-lan: link is not ready\n")] == ["wrtci:logspec:lan-down"]


async def test_kernel_panic_log_yields_one_incident_with_its_lines(js, subjects, pool,
                                                                   storage_config):
    factory = Factory(pool)
    job = await factory.job(await factory.firmware())
    log_key = job_log_key(job, 1)
    _put(storage_config, log_key, PANIC_LOG)
    await publish(js, subjects, started(job), finished(
        job, {"base.test_shell": "PASS", "base.test_ubus": "FAIL"}, log_key=log_key))
    await ingest_all(js, subjects, pool)
    work = analyser(pool, storage_config)
    await work.run_due(10)
    await work.run_due(10)  # nothing more to do: still one incident

    (incident,) = await pool.fetch("SELECT * FROM incidents")
    assert incident["id"] == f"{job}:1:logspec:kernel-panic"
    assert incident["issue_id"] == "wrtci:logspec:kernel-panic"
    assert incident["test_id"] == f"{job}:1:base.test_ubus"
    assert [line["line"] for line in incident["misc"]["lines"]] == [3, 4]
    assert "Kernel panic - not syncing" in incident["misc"]["lines"][0]["text"]
    issue = await pool.fetchrow("SELECT * FROM issues")
    assert (issue["report_subject"], issue["culprit_code"]) == ("Kernel panic", True)
    assert await pool.fetchval("SELECT count(*) FROM results_work") == 0


async def test_log_stored_after_job_finished_is_analysed_later(js, subjects, pool,
                                                               storage_config):
    factory = Factory(pool)
    job = await factory.job(await factory.firmware())
    log_key = job_log_key(job, 1)
    # A boot failure: no tests ran, the incident goes on the build.
    await publish(js, subjects, started(job), finished(
        job, result=JobResult.ERROR, error_code=ErrorCode.BOOT_FAILED, log_key=log_key))
    await ingest_all(js, subjects, pool)
    work = analyser(pool, storage_config)
    await work.run_due(10)
    row = await pool.fetchrow("SELECT tries, last_error FROM results_work WHERE kind = 'log'")
    assert row["tries"] == 1 and "not in object storage yet" in row["last_error"]
    assert await pool.fetchval("SELECT count(*) FROM incidents") == 0

    _put(storage_config, log_key, "U-Boot 2024.01\nBad Magic Number\n")  # the log writer
    await pool.execute("UPDATE results_work SET not_before = now()")  # its retry is due
    await work.run_due(10)
    (incident,) = await pool.fetch("SELECT * FROM incidents")
    assert incident["issue_id"] == "wrtci:logspec:uboot-failure"
    assert incident["test_id"] is None
    assert incident["build_id"] == await pool.fetchval(
        "SELECT build_id FROM jobs WHERE id = $1", job)


async def test_console_log_with_nul_bytes_is_analysed(js, subjects, pool, storage_config):
    """Serial consoles emit NUL bytes (line noise, a board coming out of reset)."""
    factory = Factory(pool)
    job = await factory.job(await factory.firmware())
    log_key = job_log_key(job, 1)
    noisy = PANIC_LOG.replace("Kernel panic - not syncing: Attempted",
                              "Kernel panic - not syncing:\x00\x00 Attempted", 1)
    _put(storage_config, log_key, "\x00\x00\x00" + noisy)
    await publish(js, subjects, started(job), finished(
        job, result=JobResult.ERROR, error_code=ErrorCode.BOOT_FAILED, log_key=log_key))
    await ingest_all(js, subjects, pool)
    await analyser(pool, storage_config).run_due(10)

    (incident,) = await pool.fetch("SELECT * FROM incidents")
    assert incident["issue_id"] == "wrtci:logspec:kernel-panic"
    assert "not syncing: Attempted to kill init" in incident["misc"]["lines"][0]["text"]
    assert await pool.fetchval("SELECT count(*) FROM results_work") == 0
