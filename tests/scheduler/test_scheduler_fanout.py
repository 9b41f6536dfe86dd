"""Fan-out and test plans: pure logic."""

from __future__ import annotations

import pytest

from tests import factories
from wrtci.proto.model import PriorityClass, SourceKind
from wrtci.services.scheduler.devices import agreed_wish
from wrtci.services.scheduler.fanout import MAX_JOB_ID, ImageWish, job_id, plan_jobs
from wrtci.services.scheduler.plans import PlanError, PlanSet

PLANS = PlanSet.load()


def _jobs(data, device_types):
    plans = PLANS.for_firmware(data.source_kind, data.plans)
    return plan_jobs(data, device_types, plans, overhead_s=100)


def test_default_plans_mirror_the_openwrt_suite():
    assert PLANS.names() == ["base", "system", "network", "wifi", "wifi_hwsim",
                             "package_opkg", "package_apk"]
    required = {p.name: sorted(p.required_features) for p in PLANS.plans}
    assert required == {"base": [], "system": [], "network": ["online", "wan_port"],
                        "wifi": ["wifi"], "wifi_hwsim": ["hwsim"],
                        "package_opkg": ["online", "opkg"], "package_apk": ["apk", "online"]}


def test_plans_follow_features_and_source_kind():
    data = factories.firmware(["a/b/c"])
    [job] = _jobs(data, {"a/b/c": frozenset({"online", "apk", "wan_port"})})
    assert [p.name for p in job.plans] == ["base", "system", "network", "package_apk"]
    assert job.timeout_s == 100 + 600 + 900 + 900 + 900
    pr = factories.firmware(["a/b/c"], priority_class=PriorityClass.PR,
                            source_kind=SourceKind.GITHUB_PR)
    [job] = _jobs(pr, {"a/b/c": frozenset({"online", "apk", "wan_port"})})
    assert [p.name for p in job.plans] == ["base", "system", "network"]
    assert job.priority == 9


def test_requested_plans_replace_the_defaults_and_unknown_names_are_reported():
    data = factories.firmware(["a/b/c"], plans=["wifi", "base", "nope"])
    [job] = _jobs(data, {"a/b/c": frozenset({"wifi"})})
    assert [p.name for p in job.plans] == ["wifi", "base"]
    assert PLANS.unknown(data.plans) == ["nope"]


def test_device_type_without_a_qualifying_plan_gets_no_job():
    data = factories.firmware(["a/b/c"], plans=["wifi"])
    assert _jobs(data, {"a/b/c": frozenset()}) == []


def test_one_job_per_device_type_with_the_preferred_image():
    fid = "wrtci:official:stable:r1"
    images = [factories.image(fid, "x86/64/generic", t, fs)
              for t, fs in [("combined-efi", "ext4"), ("rootfs", "squashfs"),
                            ("combined", "squashfs"), ("combined", "ext4")]]
    data = factories.firmware([], images=images, tag="r1",
                              priority_class=PriorityClass.STABLE)
    [job] = _jobs(data, {"x86/64/generic": frozenset()})
    assert (job.image.type, job.image.filesystem) == ("combined", "squashfs")
    assert job.job_id == f"{fid}:{job.image.name}:x86/64/generic"


X86 = "x86/64/generic"
ARCHER = "ath79/generic/tplink_archer-c7-v2"


def _x86_and_archer(fid: str) -> list:
    return ([factories.image(fid, X86, t, fs) for t, fs in [
        ("combined", "squashfs"), ("combined", "ext4"), ("sysupgrade", "squashfs"),
        ("sysupgrade", "ext4"), ("kernel", None)]]
            + [factories.image(fid, ARCHER, t, fs) for t, fs in [
                ("sysupgrade", "squashfs"), ("kernel", "initramfs"), ("factory", "squashfs")]])


def _chosen(wishes: dict[str, ImageWish]) -> dict[str, tuple[str, str | None]]:
    data = factories.firmware([], images=_x86_and_archer("wrtci:official:snapshot:r9"))
    jobs = plan_jobs(data, {X86: frozenset(), ARCHER: frozenset()},
                     PLANS.for_firmware(data.source_kind, data.plans), overhead_s=100,
                     image_wishes=wishes)
    return {j.device_type: (j.image.type, j.image.filesystem) for j in jobs}


def test_the_image_type_the_devices_boot_beats_the_preference_order():
    assert _chosen({}) == {X86: ("combined", "squashfs"), ARCHER: ("sysupgrade", "squashfs")}
    assert _chosen({X86: ImageWish("sysupgrade"), ARCHER: ImageWish("kernel")}) == {
        X86: ("sysupgrade", "squashfs"), ARCHER: ("kernel", "initramfs")}
    # the wished filesystem first; without one of it, the type's preferred image
    assert _chosen({X86: ImageWish("sysupgrade", "ext4")})[X86] == ("sysupgrade", "ext4")
    assert _chosen({X86: ImageWish("combined", "btrfs")})[X86] == ("combined", "squashfs")


def test_a_type_the_firmware_lacks_falls_back_to_the_preference_order():
    assert _chosen({X86: ImageWish("combined-efi"), ARCHER: ImageWish("combined")}) == {
        X86: ("combined", "squashfs"), ARCHER: ("sysupgrade", "squashfs")}
    assert not ImageWish("combined-efi").met_by(
        factories.image("f", X86, "combined", "squashfs"))


def test_devices_of_one_type_that_disagree_leave_it_to_the_preference_order():
    assert agreed_wish({ImageWish("sysupgrade"), ImageWish("kernel")}) is None
    assert agreed_wish({ImageWish("sysupgrade"), ImageWish("sysupgrade", "ext4")}) == \
        ImageWish("sysupgrade", "ext4")
    assert agreed_wish({ImageWish("combined", "ext4"), ImageWish("combined", "squashfs")}) \
        == ImageWish("combined")


def test_profile_image_beats_subtarget_image_and_other_targets_get_nothing():
    fid = "wrtci:upload:custom:u1"
    specific = factories.image(fid, "ath79/generic/archer", "sysupgrade")
    generic = factories.image(fid, "ath79/generic/*", "sysupgrade")
    data = factories.firmware([], images=[generic, specific], tag="u1",
                              priority_class=PriorityClass.CUSTOM, source_kind=SourceKind.UPLOAD)
    jobs = _jobs(data, {"ath79/generic/archer": frozenset(), "ath79/generic/other": frozenset(),
                        "ath79/nand/archer": frozenset()})
    assert {j.device_type: j.image.id for j in jobs} == {
        "ath79/generic/archer": specific.id, "ath79/generic/other": generic.id}


def test_long_job_ids_are_shortened_deterministically():
    fid = "wrtci:github_pr:pr:" + "x" * 150
    image = factories.image(fid, "a/b/" + "p" * 80)
    first = job_id(fid, image, "a/b/" + "p" * 80)
    assert len(first) <= MAX_JOB_ID and first.startswith("wrtci:")
    assert first == job_id(fid, image, "a/b/" + "p" * 80)


def test_bad_plan_files_are_reported(tmp_path):
    path = tmp_path / "plans.toml"
    path.write_text('[[plans]]\nname = "a"\n[[plans]]\nname = "a"\n')
    with pytest.raises(PlanError, match="duplicate"):
        PlanSet.load(path)
    path.write_text('[[plans]]\nname = "a"\ncolour = "red"\n')
    with pytest.raises(PlanError, match="colour"):
        PlanSet.load(path)
