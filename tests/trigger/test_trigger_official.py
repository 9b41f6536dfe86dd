"""Official releases and snapshots: scanning a local downloads server."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import msgspec
import pytest

from tests.helpers import PROJECT_ROOT, run_cli
from tests.servers.downloads import DownloadsServer, generate_mirror, profiles_json
from tests.servers.trigger_harness import (
    build_count,
    checkouts,
    discovered_events,
    trigger_config,
)
from wrtci.core.config import dump_config
from wrtci.proto.model import SourceKind
from wrtci.proto.subjects import PriorityClass
from wrtci.services.firmware_store import record_firmware
from wrtci.services.trigger.config import OfficialConfig
from wrtci.services.trigger.official import (
    ProfilesIndex,
    Release,
    VersionsIndex,
    firmware_from_profiles,
    releases_for,
)
from wrtci.services.trigger.service import open_context, run

STABLE_ID = "wrtci:official:stable:23.05.5:r24106-10cc5fcd00"
SNAPSHOT_ID = "wrtci:official:snapshot:SNAPSHOT:r28695-22d1e6cd26"


@pytest.fixture
async def generated() -> AsyncIterator[DownloadsServer]:
    server = await DownloadsServer().start()
    yield server
    await server.stop()


@pytest.fixture
def make_config(nats_config, database_config, storage_config):
    def make(base_url: str, **official):
        official.setdefault("channels", ["snapshot", "stable", "oldstable"])
        return trigger_config(nats_config, database_config, storage_config,
                              official=OfficialConfig(base_url=base_url, **official))
    return make


async def scan(config) -> object:
    async with open_context(config) as ctx:
        return await ctx.official_scanner().scan_once()


# -- the real formats ---------------------------------------------------------------------


async def test_fixture_mirror_gives_release_and_snapshot(downloads, make_config, js, subjects,
                                                         pool) -> None:
    config = make_config(downloads.url, targets=["ath79/generic", "x86/64"])
    report = await scan(config)

    # stable: both targets; snapshot: ath79 only (x86/64 404); oldstable 22.03.7: absent.
    assert (report.targets, report.announced, report.skipped) == (6, 3, 3)
    found = await checkouts(pool)
    assert set(found) == {STABLE_ID, SNAPSHOT_ID}
    stable = found[STABLE_ID]
    assert (stable["channel"], stable["version"], stable["revision"], stable["state"],
            stable["source_kind"], stable["priority_class"], stable["origin"]) == (
        "stable", "23.05.5", "r24106-10cc5fcd00", "running", "official", "stable", "wrtci")
    assert await build_count(pool, STABLE_ID) == 2 + 6
    assert await build_count(pool, SNAPSHOT_ID) == 2

    events = await discovered_events(js, subjects)
    assert sorted(e.id for e in events) == [
        f"firmware.discovered:{SNAPSHOT_ID}:ath79/generic",
        f"firmware.discovered:{STABLE_ID}:ath79/generic",
        f"firmware.discovered:{STABLE_ID}:x86/64",
    ]
    x86 = next(e for e in events if e.id.endswith("x86/64")).data
    assert (x86.firmware_id, x86.source_kind, x86.priority_class) == (
        STABLE_ID, SourceKind.OFFICIAL, PriorityClass.STABLE)
    combined = next(i for i in x86.images
                    if i.name == "openwrt-23.05.5-x86-64-generic-squashfs-combined.img.gz")
    assert combined.url == (f"{downloads.url}/releases/23.05.5/targets/x86/64/"
                            "openwrt-23.05.5-x86-64-generic-squashfs-combined.img.gz")
    assert (combined.target, combined.subtarget, combined.profile, combined.type,
            combined.filesystem) == ("x86", "64", "generic", "combined", "squashfs")
    assert combined.sha256 == "e6286f7cd650c228949491a0eec64c880f3a0fbd6a515c44f2ae543ca3e94a0f"
    assert combined.id == f"{STABLE_ID}:x86/64/generic:{combined.name}"
    snapshot = next(e for e in events if "SNAPSHOT" in e.id).data
    assert snapshot.priority_class == PriorityClass.SNAPSHOT
    assert {i.type for i in snapshot.images} == {"kernel", "sysupgrade"}


async def test_every_listed_target_without_filter(downloads, make_config, js, pool) -> None:
    """No filter: the targets come from .targets.json; the ones not on the server are 404s."""
    report = await scan(make_config(downloads.url, channels=["stable"]))
    assert report.targets == len(downloads.json("releases/23.05.5/.targets.json"))
    assert report.announced == 2
    assert await build_count(pool, STABLE_ID) == 8


async def test_scan_twice_is_one_firmware_and_rescan_downloads_no_profiles(
        downloads, make_config, js, subjects, pool) -> None:
    config = make_config(downloads.url, targets=["ath79/generic", "x86/64"])
    await scan(config)
    bodies_after_first = downloads.profile_body_downloads()
    events_after_first = await discovered_events(js, subjects)

    # A second scan in a new context: what a restarted daemon or another replica does.
    report = await scan(config)

    assert report.unchanged == 3 and report.announced == 0 and report.recorded == 0
    assert downloads.profile_body_downloads() == bodies_after_first == 3
    assert len(await discovered_events(js, subjects)) == len(events_after_first) == 3
    assert set(await checkouts(pool)) == {STABLE_ID, SNAPSHOT_ID}
    assert await build_count(pool) == 10


async def test_new_snapshot_revision_is_a_new_firmware(downloads, make_config, js, subjects,
                                                       pool) -> None:
    config = make_config(downloads.url, channels=["snapshot"], targets=["ath79/generic"])
    await scan(config)
    newer = downloads.json("snapshots/targets/ath79/generic/profiles.json")
    newer["version_code"] = "r28700-0123456789"
    downloads.put("snapshots/targets/ath79/generic/profiles.json", newer)

    report = await scan(config)

    assert report.announced == 1
    assert set(await checkouts(pool)) == {
        SNAPSHOT_ID, "wrtci:official:snapshot:SNAPSHOT:r28700-0123456789"}
    assert [e.data.revision for e in await discovered_events(js, subjects)] == [
        "r28695-22d1e6cd26", "r28700-0123456789"]


async def test_two_replicas_scanning_at_once_give_one_firmware(generated, make_config, js,
                                                               subjects, pool) -> None:
    targets = generate_mirror(generated, targets=8, profiles=5)
    config = make_config(generated.url, channels=["stable"], concurrency=4)

    reports = await asyncio.gather(scan(config), scan(config))

    assert sum(r.skipped for r in reports) == 0
    assert list(await checkouts(pool)) == ["wrtci:official:stable:24.10.0:r28427-6df0e3d02a"]
    assert await build_count(pool) == 8 * 5 * 3
    events = await discovered_events(js, subjects)
    assert sorted(e.id.rsplit(":", 1)[1] for e in events) == sorted(targets)


async def test_restart_mid_scan_loses_nothing_and_doubles_nothing(generated, make_config, js,
                                                                  subjects, pool) -> None:
    targets = generate_mirror(generated, targets=6, profiles=3)
    config = make_config(generated.url, channels=["stable"], concurrency=1)
    held_path = f"releases/24.10.0/targets/{targets[3]}/profiles.json"
    arrived = generated.hold(held_path)

    first = asyncio.create_task(scan(config))
    await arrived.wait()
    first.cancel()  # the daemon is killed while the 4th target is being fetched
    with pytest.raises(asyncio.CancelledError):
        await first
    generated.release(held_path)
    done_before = len(await discovered_events(js, subjects))
    assert done_before == 3

    report = await scan(config)

    assert report.unchanged == 3 and report.announced == 3
    assert await build_count(pool) == 6 * 3 * 3
    assert len(await checkouts(pool)) == 1
    events = await discovered_events(js, subjects)
    assert sorted(e.id.rsplit(":", 1)[1] for e in events) == sorted(targets)
    for target in targets[:3]:  # finished before the restart: not downloaded again
        assert generated.bodies[f"/releases/24.10.0/targets/{target}/profiles.json"] == 1


async def test_crash_between_commit_and_publish_is_announced_by_the_next_scan(
        generated, make_config, js, subjects, pool) -> None:
    generate_mirror(generated, targets=1, profiles=2)
    config = make_config(generated.url, channels=["stable"])
    async with open_context(config) as ctx:
        scanner = ctx.official_scanner()
        index = generated.json(f"releases/24.10.0/targets/{generated_target(generated)}"
                               "/profiles.json")
        data = firmware_from_profiles(msgspec.convert(index, ProfilesIndex),
                                      Release("stable", "releases/24.10.0"), scanner.base)
        async with pool.acquire() as conn:
            await record_firmware(conn, data)  # committed, then the process died: no event yet
    assert await discovered_events(js, subjects) == []

    report = await scan(config)

    assert report.announced == 1 and report.recorded == 0
    assert len(await discovered_events(js, subjects)) == 1


def generated_target(server: DownloadsServer) -> str:
    return next(iter(server.json("releases/24.10.0/.targets.json")))


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("broken", [
    b"{not json",
    b'{"target": "gen00/sub0", "version_code": "r1-abc"}',
    "wrong-target",
    "wrong-version",
])
async def test_broken_profiles_json_is_skipped_and_retried(generated, make_config, js,
                                                           subjects, pool, broken) -> None:
    targets = generate_mirror(generated, targets=2, profiles=2)
    path = f"releases/24.10.0/targets/{targets[0]}/profiles.json"
    good = generated.json(path)
    bad = profiles_json(targets[0], "24.10.0", "r28427-6df0e3d02a", 2)
    if broken == "wrong-target":
        bad["target"] = targets[1]
    elif broken == "wrong-version":  # a 23.05 profiles.json in the 24.10.0 directory
        bad["version_number"] = "23.05.5"
    generated.put(path, broken if isinstance(broken, bytes) else bad)
    config = make_config(generated.url, channels=["stable"])

    report = await scan(config)

    assert (report.skipped, report.announced) == (1, 1)
    assert [f.split(":")[0] for f in report.failed] == [f"target stable {targets[0]}"]
    assert await build_count(pool) == 2 * 3  # only the good target, nothing half-written
    generated.put(path, good)
    report = await scan(config)
    assert (report.skipped, report.announced, report.unchanged) == (0, 1, 1)
    assert await build_count(pool) == 2 * 2 * 3
    assert len(await discovered_events(js, subjects)) == 2


@pytest.mark.parametrize("broken", ["bad-sha256", "path-in-name", "path-in-profile"])
async def test_one_bad_image_refuses_that_image_not_its_target(generated, make_config, js,
                                                               subjects, pool, broken) -> None:
    targets = generate_mirror(generated, targets=1, profiles=2)
    path = f"releases/24.10.0/targets/{targets[0]}/profiles.json"
    bad = generated.json(path)
    image = bad["profiles"]["vendor_device-000"]["images"][0]
    if broken == "bad-sha256":
        image["sha256"] = "00ff"
    elif broken == "path-in-name":
        image["name"] = "../../etc/passwd"
    elif broken == "path-in-profile":  # would be the device type x/y/../../z
        bad["profiles"]["../../z"] = bad["profiles"].pop("vendor_device-000")
    generated.put(path, bad)

    report = await scan(make_config(generated.url, channels=["stable"]))

    assert (report.announced, report.failed) == (1, [])
    refused = 3 if broken == "path-in-profile" else 1
    assert await build_count(pool) == 2 * 3 - refused
    [event] = await discovered_events(js, subjects)
    assert "../" not in msgspec.json.encode(event).decode()


async def test_release_names_from_versions_json_are_checked(generated, make_config, js,
                                                            pool) -> None:
    """upcoming_version "../snapshots" must not re-record the snapshot as a release."""
    generate_mirror(generated, targets=1, profiles=1, snapshot_revision="r28695-22d1e6cd26")
    versions = generated.json(".versions.json")
    generated.put(".versions.json", {**versions, "upcoming_version": "../snapshots"})

    report = await scan(make_config(generated.url, channels=["stable", "upcoming", "snapshot"]))

    assert report.failed == ["upcoming: .versions.json names '../snapshots', not a release"]
    found = await checkouts(pool)
    assert {(c["channel"], c["version"]) for c in found.values()} == {
        ("stable", "24.10.0"), ("snapshot", "SNAPSHOT")}


async def test_a_profile_added_later_is_announced(generated, make_config, js, subjects,
                                                  pool) -> None:
    targets = generate_mirror(generated, targets=1, profiles=1)
    config = make_config(generated.url, channels=["stable"])
    await scan(config)
    path = f"releases/24.10.0/targets/{targets[0]}/profiles.json"
    generated.put(path, profiles_json(targets[0], "24.10.0", "r28427-6df0e3d02a", 2))

    report = await scan(config)
    again = await scan(config)

    assert (report.announced, report.recorded, again.announced) == (1, 1, 0)
    first, second = sorted(await discovered_events(js, subjects), key=lambda e: len(e.id))
    assert {i.profile for i in first.data.images} == {"vendor_device-000"}
    assert {i.profile for i in second.data.images} == {"vendor_device-000", "vendor_device-001"}
    assert second.data.firmware_id == first.data.firmware_id


async def test_sha256_changed_at_the_same_revision_is_refused(generated, make_config, js,
                                                              subjects, pool, caplog) -> None:
    targets = generate_mirror(generated, targets=1, profiles=2)
    config = make_config(generated.url, channels=["stable"])
    await scan(config)
    path = f"releases/24.10.0/targets/{targets[0]}/profiles.json"
    rebuilt = generated.json(path)
    image = rebuilt["profiles"]["vendor_device-001"]["images"][0]
    recorded = image["sha256"]
    image["sha256"] = "ab" * 32
    generated.put(path, rebuilt)

    async with open_context(config) as ctx:  # one scanner: its second scan logs nothing new
        scanner = ctx.official_scanner()
        caplog.clear()
        first = await scanner.scan_once()
        generated.put(path, {**rebuilt, "source_date_epoch": 1727094887})
        second = await scanner.scan_once()

    assert (first.refused_images, second.refused_images, first.failed) == (1, 1, [])
    refusals = [r for r in caplog.records if "sha256 changed" in r.getMessage()]
    assert len(refusals) == 1
    stored = await pool.fetchval("SELECT sha256 FROM builds WHERE image_name = $1",
                                 image["name"])
    assert stored == recorded
    assert len(await discovered_events(js, subjects)) == 1


async def test_server_errors_are_skipped_and_retried(generated, make_config, js, pool) -> None:
    targets = generate_mirror(generated, targets=3, profiles=1)
    generated.fail(f"releases/24.10.0/targets/{targets[1]}/profiles.json", 503)
    config = make_config(generated.url, channels=["stable"])

    first = await scan(config)
    second = await scan(config)

    assert (first.skipped, first.announced) == (1, 2)
    assert (second.skipped, second.announced, second.unchanged) == (0, 1, 2)
    assert await build_count(pool) == 3 * 3


async def test_broken_release_list_still_scans_snapshots(downloads, make_config, js, pool) -> None:
    downloads.put(".versions.json", b"<html>oops</html>")
    report = await scan(make_config(downloads.url, targets=["ath79/generic"]))
    assert report.announced == 1
    assert set(await checkouts(pool)) == {SNAPSHOT_ID}


async def test_unreachable_server_skips_everything(make_config, pool) -> None:
    report = await scan(make_config("http://127.0.0.1:9", targets=["x86/64"],
                                    channels=["snapshot"], timeout_s=2))
    assert (report.targets, report.skipped) == (1, 1)
    assert await checkouts(pool) == {}


# -- pure logic -----------------------------------------------------------------------------


def test_channels_map_to_release_directories() -> None:
    versions = VersionsIndex(stable_version="24.10.0", oldstable_version="23.05.5",
                             upcoming_version="25.12.0-rc1")
    found, problems = releases_for(["snapshot", "stable", "oldstable", "upcoming"], versions)
    assert problems == []
    assert [(r.channel, r.path, r.priority_class) for r in found] == [
        ("snapshot", "snapshots", PriorityClass.SNAPSHOT),
        ("stable", "releases/24.10.0", PriorityClass.STABLE),
        ("oldstable", "releases/23.05.5", PriorityClass.OLDSTABLE),
        ("upcoming", "releases/25.12.0-rc1", PriorityClass.STABLE),
    ]
    found, problems = releases_for(["upcoming", "snapshot"], VersionsIndex())
    assert ([r.channel for r in found], problems) == (["snapshot"], [])
    found, problems = releases_for(["stable", "snapshot"], None)
    assert ([r.channel for r in found], problems) == (["snapshot"], ["stable: no release list"])
    for name in ("../snapshots", "24.10", "24.10.0/../x", "SNAPSHOT", "24.10.0-rc1 "):
        found, problems = releases_for(["stable"], VersionsIndex(stable_version=name))
        assert (found, len(problems)) == ([], 1), name


# -- the command line -----------------------------------------------------------------------


async def test_scan_once_command(generated, make_config, js, pool, tmp_path) -> None:
    generate_mirror(generated, targets=1, profiles=1)
    config_file = tmp_path / "wrtci.toml"
    config_file.write_bytes(dump_config(make_config(generated.url, channels=["stable"])))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wrtci.services.cli.main", "trigger", "scan-once",
        "--config", str(config_file), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=PROJECT_ROOT,
        env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert b'"announced":1' in out
    assert list(await checkouts(pool)) == ["wrtci:official:stable:24.10.0:r28427-6df0e3d02a"]


@pytest.mark.parametrize(("breakage", "code", "said"), [
    ("none", 0, ""),
    ("release-list", 1, "stable: no release list"),   # snapshots still scanned
    ("one-target", 1, "target snapshot gen00/sub1"),
    ("everything", 2, "snapshot: no target list"),
])
async def test_scan_once_exit_code_says_how_much_was_scanned(generated, make_config, js, pool,
                                                            tmp_path, breakage, code, said):
    targets = generate_mirror(generated, targets=2, profiles=1,
                              snapshot_revision="r28695-22d1e6cd26")
    if breakage == "release-list":
        generated.fail(".versions.json", 500)
    elif breakage == "one-target":
        generated.fail(f"snapshots/targets/{targets[1]}/profiles.json", 503)
    elif breakage == "everything":
        generated.fail(".versions.json", 500)
        generated.fail("snapshots/.targets.json", 500)
    config_file = tmp_path / "wrtci.toml"
    config_file.write_bytes(dump_config(make_config(generated.url,
                                                    channels=["stable", "snapshot"])))
    result = await asyncio.to_thread(run_cli, "trigger", "scan-once", "--config",
                                     str(config_file), check=False)
    assert result.returncode == code, result.stderr
    assert said in result.stderr



# -- the daemon -----------------------------------------------------------------------------


async def test_daemon_scans_on_start_and_stops_when_asked(generated, make_config, js, subjects,
                                                          pool) -> None:
    """A one-target release, as in the demo mirror: the daemon finds it without being asked."""
    generate_mirror(generated, targets=1, profiles=1)
    config = make_config(generated.url, channels=["stable"], interval_s=3600)
    stop = asyncio.Event()
    daemon = asyncio.create_task(run(config, stop))
    sub = await js.subscribe(subjects.event("firmware.discovered"), ordered_consumer=True)
    try:
        msg = await sub.next_msg(timeout=30)
    finally:
        await sub.unsubscribe()
        stop.set()
        await asyncio.wait_for(daemon, 30)
    assert b"wrtci:official:stable:24.10.0:r28427-6df0e3d02a" in msg.data
    assert len(await checkouts(pool)) == 1


async def test_daemon_stops_at_once_while_a_scan_waits_on_the_server(generated, make_config):
    """A scan held by a server that does not answer is cut short by stop: the daemon
    does not sit out its fetch timeout (an hour here) or its loops' grace."""
    generate_mirror(generated, targets=1, profiles=1)
    arrived = generated.hold(".versions.json")
    config = make_config(generated.url, channels=["stable"], interval_s=3600, timeout_s=3600)
    stop = asyncio.Event()
    daemon = asyncio.create_task(run(config, stop))
    try:
        await asyncio.wait_for(arrived.wait(), 30)
        stop.set()
        await asyncio.wait_for(daemon, 20)  # the loops' grace is 30 s
    finally:
        generated.release(".versions.json")
        daemon.cancel()


async def test_check_mode_answers_for_the_site_config(site_config_file) -> None:
    result = run_cli("run", "trigger", "--config", str(site_config_file), "--check")
    assert "trigger: ok" in result.stdout
