"""An extra conformance run against the workplace's own copies of OpenWrt files.

The suite's real-format data lives in tests/data; these tests read the copies in
../shared/fixtures when a checkout has them beside it, and are skipped elsewhere.
Nothing here hard-codes their contents: it checks that wrtci reads every file.
"""

from __future__ import annotations

import msgspec
import pytest

from wrtci.lab_daemon.targets import load_target_file
from wrtci.services.trigger.official import (
    ProfilesIndex,
    Release,
    VersionsIndex,
    firmware_from_profiles,
)


def test_every_shared_target_file_loads(shared_fixtures_dir) -> None:
    files = sorted((shared_fixtures_dir / "openwrt-tests-targets").glob("*.yaml"))
    assert files, "the shared fixtures have no target files"
    for path in files:
        info = load_target_file(path)
        assert info.drivers, path.name
        assert all(isinstance(feature, str) for feature in info.features), path.name


def test_every_shared_profiles_json_gives_firmware(shared_fixtures_dir) -> None:
    root = shared_fixtures_dir / "openwrt-downloads"
    versions = msgspec.json.decode((root / ".versions.json").read_bytes(), type=VersionsIndex)
    assert versions.stable_version
    files = sorted(root.rglob("profiles.json"))
    assert files, "the shared fixtures have no profiles.json"
    for path in files:
        index = msgspec.json.decode(path.read_bytes(), type=ProfilesIndex)
        snapshot = "snapshots" in path.relative_to(root).parts
        release = (Release("snapshot", "snapshots") if snapshot else
                   Release("stable", f"releases/{index.version_number}"))
        firmware = firmware_from_profiles(index, release, "http://downloads.invalid")
        images = sum(len(p.images) for p in index.profiles.values())
        assert len(firmware.images) == images > 0, path


@pytest.mark.parametrize("name", ["qemu-x86-64.yaml"])
def test_repo_data_matches_shared_format(fixtures_dir, shared_fixtures_dir, name) -> None:
    """Our own target file and the shared one load to the same features and drivers."""
    ours = load_target_file(fixtures_dir / "openwrt-tests-targets" / name)
    theirs = load_target_file(shared_fixtures_dir / "openwrt-tests-targets" / name)
    assert (ours.features, ours.drivers) == (theirs.features, theirs.drivers)

