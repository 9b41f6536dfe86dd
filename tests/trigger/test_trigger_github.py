"""GitHub pull requests with the trigger label, against a local GitHub API server."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import random
import time
import zipfile

import msgspec
import pytest

from tests.helpers import read_object
from tests.servers.github import make_zip
from tests.servers.trigger_harness import (
    LABEL,
    REPO,
    SYSUPGRADE,
    TOKEN,
    X86_IMAGE,
    build_count,
    checkouts,
    discovered_events,
    firmware_artifacts,
    trigger_config,
)
from wrtci.proto.model import SourceKind
from wrtci.proto.subjects import PriorityClass
from wrtci.services.github import GithubClient
from wrtci.services.trigger.artifacts import ArtifactRejected, UnpackLimits, unpack
from wrtci.services.trigger.config import GithubConfig
from wrtci.services.trigger.github import PullRequestSource
from wrtci.services.trigger.service import open_context

SHA1 = "a" * 40
SHA2 = "b" * 40


@pytest.fixture
def config(nats_config, database_config, storage_config, github, js):
    return trigger_config(nats_config, database_config, storage_config, github=GithubConfig(
        enabled=True, api_url=github.url, repository=REPO, token=TOKEN, workflow="build.yml",
        max_unpacked_bytes=8 * 1024 * 1024, max_members=50))


async def poll(config, times: int = 1):
    async with open_context(config) as ctx:
        source = PullRequestSource(config.trigger.github, ctx)
        reports = [await source.poll_once() for _ in range(times)]
    return reports[-1]



async def test_labelled_pr_becomes_one_firmware(github, config, js, subjects, pool,
                                                storage_config) -> None:
    github.add_pull(101, SHA1, [LABEL, "target/ath79"])
    github.add_pull(102, SHA2, ["documentation"])  # no trigger label: not looked at
    github.add_run(SHA1, firmware_artifacts())
    github.add_run(SHA2, firmware_artifacts(b"2"))

    report = await poll(config)

    firmware_id = f"wrtci:pr:{REPO}#101:{SHA1}"
    assert (report.labelled, report.announced, report.skipped) == (1, 1, 0)
    row = (await checkouts(pool))[firmware_id]
    assert (row["source_kind"], row["priority_class"], row["git_commit_hash"],
            row["misc"]["pull_request"]["number"]) == ("github_pr", "pr", SHA1, 101)
    events = await discovered_events(js, subjects)
    assert [e.id for e in events] == [f"firmware.discovered:{firmware_id}"]
    data = events[0].data
    assert (data.source_kind, data.priority_class) == (SourceKind.GITHUB_PR, PriorityClass.PR)
    assert data.pull_request.url == f"https://github.com/{REPO}/pull/101"
    images = {i.name: i for i in data.images}
    assert set(images) == {SYSUPGRADE, X86_IMAGE}
    sysupgrade = images[SYSUPGRADE]
    assert (sysupgrade.target, sysupgrade.subtarget, sysupgrade.profile, sysupgrade.type,
            sysupgrade.filesystem) == ("ath79", "generic", "tplink_archer-c7-v2", "sysupgrade",
                                       "squashfs")
    assert sysupgrade.sha256 == hashlib.sha256(b"1" * 5000).hexdigest()
    assert read_object(storage_config, sysupgrade.object_key) == b"1" * 5000
    assert github.blob_auth_headers == [None, None]  # the token never went to blob storage


async def test_polling_again_is_one_firmware_and_downloads_nothing(github, config, js,
                                                                   subjects, pool) -> None:
    github.add_pull(101, SHA1, [LABEL])
    github.add_run(SHA1, firmware_artifacts())

    await poll(config)
    blobs = github.requests["blob"]
    await poll(config, times=2)  # a restarted trigger, polling twice

    assert github.requests["blob"] == blobs == 2
    assert len(await checkouts(pool)) == 1
    assert len(await discovered_events(js, subjects)) == 1


async def test_two_replicas_polling_at_once_give_one_firmware(github, config, js, subjects,
                                                              pool) -> None:
    github.add_pull(101, SHA1, [LABEL])
    github.add_run(SHA1, firmware_artifacts())

    await asyncio.gather(poll(config), poll(config))

    assert len(await checkouts(pool)) == 1
    assert await build_count(pool) == 2
    assert len(await discovered_events(js, subjects)) == 1


async def test_new_push_is_new_firmware_and_removing_the_label_stops(github, config, js,
                                                                     subjects, pool) -> None:
    github.add_pull(101, SHA1, [LABEL])
    github.add_run(SHA1, firmware_artifacts())
    await poll(config)

    github.push(101, SHA2)
    github.add_run(SHA2, firmware_artifacts(b"2"))
    await poll(config)
    assert set(await checkouts(pool)) == {f"wrtci:pr:{REPO}#101:{SHA1}",
                                          f"wrtci:pr:{REPO}#101:{SHA2}"}

    github.set_labels(101, [])
    github.push(101, "c" * 40)
    github.add_run("c" * 40, firmware_artifacts(b"3"))
    report = await poll(config)
    assert report.labelled == 0
    assert len(await checkouts(pool)) == 2
    assert len(await discovered_events(js, subjects)) == 2


async def test_newest_successful_run_is_used_and_waiting_for_a_build(github, config,
                                                                     pool) -> None:
    github.add_pull(101, SHA1, [LABEL])
    github.add_run(SHA1, firmware_artifacts(b"f"), conclusion="failure",
                   created_at="2026-11-25T12:00:00Z")
    assert (await poll(config)).waiting == 1
    assert await checkouts(pool) == {}

    github.add_run(SHA1, firmware_artifacts(b"o"), created_at="2026-11-25T09:00:00Z")
    github.add_run(SHA1, firmware_artifacts(b"n"), created_at="2026-11-25T11:00:00Z")
    await poll(config)

    sha = await pool.fetchval("SELECT sha256 FROM builds WHERE image_name = $1", SYSUPGRADE)
    assert sha == hashlib.sha256(b"n" * 5000).hexdigest()


async def test_profiles_json_in_the_artifact_names_the_profiles(github, config, pool) -> None:
    profiles = {"target": "ath79/generic", "version_number": "SNAPSHOT",
                "version_code": "r1-abc", "profiles": {"tplink_archer-c7-v2": {"images": [
                    {"name": SYSUPGRADE, "type": "sysupgrade", "filesystem": "squashfs",
                     "sha256": "0" * 64}]}}}
    github.add_pull(101, SHA1, [LABEL])
    github.add_run(SHA1, {"openwrt-ath79-generic": make_zip({
        SYSUPGRADE: b"x" * 100, "profiles.json": json.dumps(profiles).encode()})})
    await poll(config)
    row = await pool.fetchrow("SELECT profile, image_type FROM builds")
    assert (row["profile"], row["image_type"]) == ("tplink_archer-c7-v2", "sysupgrade")


@pytest.mark.parametrize(("name", "profile"), [
    ("openwrt-ath79 *-generic", "tplink_archer-c7-v2"),  # the PR's workflow names artifacts
    ("openwrt-ath79-generic", "../x86/64/generic"),  # and writes its profiles.json
])
async def test_hostile_target_or_profile_names_are_refused(github, config, js, subjects, pool,
                                                           name, profile) -> None:
    profiles = {"target": "ath79/generic", "version_number": "SNAPSHOT",
                "version_code": "r1-abc", "profiles": {profile: {"images": [
                    {"name": SYSUPGRADE, "type": "sysupgrade", "sha256": "0" * 64}]}}}
    github.add_pull(101, SHA1, [LABEL])
    github.add_run(SHA1, {name: make_zip({
        SYSUPGRADE: b"x" * 100, "profiles.json": json.dumps(profiles).encode()})})
    report = await poll(config)
    assert (report.announced, report.skipped) == (0, 1)
    assert await checkouts(pool) == {}
    assert await discovered_events(js, subjects) == []


# -- bad input --------------------------------------------------------------------------------


def zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with (zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive,
          archive.open(SYSUPGRADE, "w") as member):
        zeros = bytes(1024 * 1024)
        for _ in range(20):  # 20 MiB of zeros, ~20 KiB packed
            member.write(zeros)
    return buffer.getvalue()


def traversal_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../../../../tmp/evil-squashfs-sysupgrade.bin", b"evil")
    return buffer.getvalue()


def corrupt_member_zip(method: int) -> bytes:
    """A member whose compressed bytes are damaged (each decompressor fails its own way)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        archive.writestr(SYSUPGRADE, b"firmware" * 5000)
    data = bytearray(buffer.getvalue())
    start = 30 + len(SYSUPGRADE) + 8  # past the local header and the codec's own header
    data[start:start + 16] = b"\xff" * 16
    return bytes(data)


@pytest.mark.parametrize(("artifact", "reason"), [
    (zip_bomb(), "zip bomb"),
    (traversal_zip(), "path traversal"),
    (b"PK\x03\x04 this is not a zip", "corrupt"),
    (corrupt_member_zip(zipfile.ZIP_LZMA), "corrupt lzma member"),
    (corrupt_member_zip(zipfile.ZIP_BZIP2), "corrupt bzip2 member"),
    (make_zip({"README.md": b"no images"}), "no images"),
])
async def test_bad_artifacts_are_refused_and_nothing_is_recorded(github, config, js, subjects,
                                                                 pool, artifact,
                                                                 reason) -> None:
    github.add_pull(101, SHA1, [LABEL])
    artifacts = {"openwrt-ath79-generic": artifact}
    if reason != "no images":  # one bad artifact spoils the whole firmware
        artifacts["openwrt-x86-64"] = firmware_artifacts()["openwrt-x86-64"]
    github.add_run(SHA1, artifacts)

    report = await poll(config, times=2)

    assert report.skipped == 0 and report.announced == 0  # refused once, not fetched again
    assert github.requests["blob"] <= 2
    assert await checkouts(pool) == {}
    assert await discovered_events(js, subjects) == []


async def test_rate_limit_pauses_and_resumes(github, config, pool) -> None:
    github.add_pull(101, SHA1, [LABEL])
    github.add_run(SHA1, firmware_artifacts())
    github.exhaust_rate_limit(reset_in=-1)  # the reset time is already past on the next poll

    async with open_context(config) as ctx:
        source = PullRequestSource(config.trigger.github, ctx)
        limited = await source.poll_once()
        assert limited.rate_limited and await checkouts(pool) == {}
        github.restore_rate_limit()
        resumed = await source.poll_once()

    assert resumed.announced == 1
    assert len(await checkouts(pool)) == 1


async def test_rate_limit_reset_in_the_future_skips_polls(github, config) -> None:
    github.add_pull(101, SHA1, [LABEL])
    github.exhaust_rate_limit(reset_in=3600)
    async with open_context(config) as ctx:
        source = PullRequestSource(config.trigger.github, ctx)
        await source.poll_once()
        calls = sum(github.requests.values())
        github.restore_rate_limit()
        report = await source.poll_once()
    assert report.rate_limited
    assert sum(github.requests.values()) == calls  # no request until the reset time
    assert source.paused_until > time.time()


@pytest.mark.parametrize("kind", ["pulls", "workflow_runs", "artifacts", "zip"])
async def test_server_errors_skip_and_retry(github, config, js, subjects, pool, kind) -> None:
    github.add_pull(101, SHA1, [LABEL])
    github.add_run(SHA1, firmware_artifacts())
    github.fail(kind, 502)

    first = await poll(config)
    second = await poll(config)

    assert (first.skipped, first.announced) == (1, 0)
    assert (second.skipped, second.announced) == (0, 1)
    assert len(await discovered_events(js, subjects)) == 1


async def test_bad_token_is_a_logged_skip(github, config, pool) -> None:
    bad = msgspec.structs.replace(
        config, trigger=msgspec.structs.replace(config.trigger, github=msgspec.structs.replace(
            config.trigger.github, token="wrong")))
    github.add_pull(101, SHA1, [LABEL])
    report = await poll(bad)
    assert report.skipped == 1
    assert await checkouts(pool) == {}


def test_unpack_counts_inflated_bytes_against_the_budget(tmp_path) -> None:
    """Incompressible members pass the ratio check; the total budget still stops them."""
    archive = tmp_path / "a.zip"
    archive.write_bytes(make_zip({f"{n}-squashfs-sysupgrade.bin": random_bytes(600_000)
                                  for n in range(3)}))
    limits = UnpackLimits(max_total=1_000_000, max_members=10, max_ratio=200)
    with pytest.raises(ArtifactRejected, match="more than 1000000 bytes"):
        unpack(archive, tmp_path / "out", limits, lambda name: True)
    files, _ = unpack(archive, tmp_path / "ok", UnpackLimits(2_000_000, 10, 200),
                      lambda name: True)
    assert sorted(f.size for f in files) == [600_000] * 3


def random_bytes(size: int) -> bytes:
    return random.Random(size).randbytes(size)


@pytest.mark.parametrize(("retry_after", "pause_s"), [
    ("120", 120),
    ("Wed, 21 Oct 2065 07:28:00 GMT", 3600),  # an HTTP date, and far off: capped
    ("soon", 60),  # unreadable: as if absent
])
async def test_secondary_rate_limit_retry_after_pauses(github, config, retry_after,
                                                       pause_s) -> None:
    github.add_pull(101, SHA1, [LABEL])
    github.retry_after = retry_after
    async with open_context(config) as ctx:
        source = PullRequestSource(config.trigger.github, ctx)
        before = time.time()
        report = await source.poll_once()
    assert report.rate_limited
    assert before + pause_s - 5 <= source.paused_until <= time.time() + pause_s


@pytest.mark.parametrize("url, gets_token", [
    ("https://api.github.com/repos/openwrt/openwrt/pulls?page=2", True),
    ("https://api.github.com/repos/openwrt/openwrt/actions/artifacts/1/zip", True),
    ("https://evil.example/repos/openwrt/openwrt/pulls?page=2", False),
    ("http://api.github.com/repos/openwrt/openwrt/pulls", False),
    ("https://api.github.com:8443/repos/openwrt/openwrt/pulls", False),
    ("https://productionresultssa0.blob.core.windows.net/artifact.zip", False),
])
def test_the_token_goes_to_the_api_origin_only(url: str, gets_token: bool) -> None:
    # `Link: next` and archive_download_url come from answers: another host named
    # there must not receive the token.
    client = GithubClient(None, api_url="https://api.github.com", token="t0k")
    headers = client.headers_for(url)
    assert ("Authorization" in headers) is gets_token
    assert headers["Accept"] == "application/vnd.github+json"
