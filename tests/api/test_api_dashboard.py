"""kci-dev (KernelCI's own client, run as a user runs it) against /dashboard/api/."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.api_support import scenario, serving
from tests.factories_results import Factory, finished, ingest_all, publish, started

KCI_DEV = shutil.which("kci-dev", path=str(Path(sys.executable).parent))
GIT_URL = "https://git.openwrt.org/openwrt/openwrt.git"

pytestmark = pytest.mark.skipif(KCI_DEV is None, reason="kci-dev not installed (pip install "
                                "'wrtci[test]')")


class KciDev:
    def __init__(self, base: str, tmp: Path) -> None:
        self.settings = tmp / "kci-dev.toml"
        self.settings.write_text(f'default_instance = "wrtci"\n\n[wrtci]\n'
                                 f'dashboard_api = "{base}/dashboard/api/"\n')
        self.cwd = tmp  # not a git checkout: kci-dev must not guess a tree from it

    async def __call__(self, *args: str, check: bool = True) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            KCI_DEV, "--settings", str(self.settings), "results", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=self.cwd)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        if check and proc.returncode != 0:
            raise AssertionError(f"kci-dev {' '.join(args)}: {proc.returncode}\n{out.decode()}"
                                 f"\n{err.decode()}")
        return proc.returncode, out.decode(), err.decode()

    async def json(self, *args: str):
        _code, out, _err = await self(*args, "--json")
        return json.loads(out)

    async def compare(self, base: str | None = None, head: str | None = None) -> dict:
        """kci-dev's own comparison (``KernelCIClient.compare_results``, the code behind
        ``kci-dev results compare``), base and head by default the newest two firmware
        of the branch's history as the command picks them.

        Through kci-dev's Python client: the 0.1.12 command builds its client without
        the settings file, so it only ever asks dashboard.kernelci.org.
        """
        script = COMPARE_SCRIPT.format(settings=str(self.settings), base=base, head=head,
                                       giturl=GIT_URL)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=self.cwd)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        return json.loads(out)


COMPARE_SCRIPT = """
import json, tomllib
from kcidev.api import KernelCIClient
with open({settings!r}, "rb") as f:
    client = KernelCIClient(cfg=tomllib.load(f))
args = ("wrtci", {giturl!r}, "snapshot")
base, head = {base!r}, {head!r}
if base is None:  # as `kci-dev results compare` resolves the latest two
    (tree,) = [t for t in client.get_tree_list("wrtci") if t["git_repository_branch"] == "snapshot"]
    history = client.get_commits_history(*args, tree["git_commit_hash"])
    base, head = history[1]["git_commit_hash"], history[0]["git_commit_hash"]
print(json.dumps(client.compare_results(base, head, args[1], args[2], args[0])))
"""


async def test_kci_dev_reads_wrtci(js, subjects, pool, storage_config, nats_config,
                                   database_config, tmp_path):
    s = await scenario(js, subjects, pool, storage_config)
    async with serving(nats_config, database_config, storage_config) as api:
        kci = KciDev(api.base, tmp_path)
        origin = ["--origin", "wrtci"]

        trees = await kci.json("trees", *origin)
        by_branch = {t["tree"]: t for t in trees}
        assert set(by_branch) == {"openwrt/snapshot", "openwrt/stable"}
        # The newest snapshot (r101-bbbb) stands for its branch; its commit is the
        # abbreviated hash of the OpenWrt revision.
        assert by_branch["openwrt/snapshot"]["latest_commit_hash"] == "bbbb"
        assert by_branch["openwrt/snapshot"]["latest_commit_name"] == "r101-bbbb"
        assert by_branch["openwrt/snapshot"]["giturl"] == GIT_URL

        tree = ["--giturl", GIT_URL, "--branch", "snapshot", *origin]
        latest = await kci.json("summary", *tree, "--latest")
        # The bad snapshot's last attempt: 1 pass and 2 failures, and it booted.
        assert latest == {"builds": {"pass": 1, "fail": 0, "inconclusive": 0},
                          "boots": {"pass": 1, "fail": 0, "inconclusive": 0},
                          "tests": {"pass": 1, "fail": 2, "inconclusive": 0}}
        good = await kci.json("summary", *tree, "--commit", "aaaa")
        assert good["tests"] == {"pass": 3, "fail": 0, "inconclusive": 0}
        # The revision names the same firmware.
        assert await kci.json("summary", *tree, "--commit", "r100-aaaa") == good

        tests = await kci.json("tests", *tree, "--latest")
        assert sorted((t["test_path"], t["status"]) for t in tests) == [
            ("base.test__script_alert_x_script", "FAIL"), ("base.test_shell", "PASS"),
            ("base.test_wifi", "FAIL")]
        assert {t["hardware"] for t in tests} == {"x86/64/generic"}
        failed = await kci.json("tests", *tree, "--latest", "--status", "fail")
        assert len(failed) == 2
        assert all(t["log"].startswith("http") and t["log"].endswith("/attempts/2/log")
                   for t in tests)
        async with api.session.get(tests[0]["log"]) as resp:  # no credentials needed
            assert resp.status == 200 and await resp.read() == s.log

        boots = await kci.json("boots", *tree, "--latest")
        assert [(b["test_path"], b["status"], b["hardware"]) for b in boots] == [
            ("boot", "PASS", "x86/64/generic")]

        # One result by its id (ids hold "/" and ":"), as `kci-dev results boot` asks.
        _code, text, _err = await kci("boot", "--id", boots[0]["id"])
        assert "boot" in text and "PASS" in text and boots[0]["id"] in text

        _code, text, _err = await kci("tests", *tree, "--latest")
        assert "base.test_wifi" in text and "x86/64/generic" in text

        hardware = await kci.json("hardware", "list", *origin)
        assert hardware == [{"name": "x86/64/generic", "compatibles": "x86/64/generic"}]
        hw_summary = await kci.json("hardware", "summary", "--name", "x86/64/generic",
                                    *origin)
        # Both snapshots and the stable firmware's job on this device type.
        assert hw_summary["tests"] == {"pass": 4, "fail": 2, "inconclusive": 0}
        assert hw_summary["boots"] == {"pass": 2, "fail": 0, "inconclusive": 0}
        hw_boots = await kci.json("hardware", "boots", "--name", "x86/64/generic", *origin)
        assert len(hw_boots) == 2

        # Unknown tree and another origin: kci-dev reports an error, no traceback.
        code, _out, err = await kci("summary", "--giturl", GIT_URL, "--branch", "snapshot",
                                   "--commit", "ffffff0", *origin, check=False)
        assert code != 0 and "Traceback" not in err
        code, _out, err = await kci("trees", "--origin", "maestro", check=False)
        assert code != 0 and "Traceback" not in err


async def test_dashboard_api_bad_input_is_a_json_4xx(js, subjects, pool, storage_config,
                                                     nats_config, database_config):
    await scenario(js, subjects, pool, storage_config)
    async with serving(nats_config, database_config, storage_config) as api:
        status, body = await api.get("/dashboard/api/tree", origin="wrtci", bogus="1")
        assert status == 400 and body == {"error": "unknown query parameter 'bogus'"}
        status, body = await api.get("/dashboard/api/tree", interval_in_days="x")
        assert status == 400 and "interval_in_days" in body["error"]
        status, body = await api.get("/dashboard/api/tree", origin="maestro")
        assert status == 404 and "origin is 'wrtci'" in body["error"]
        status, body = await api.get("/dashboard/api/tree/nosuch/summary")
        assert status == 404 and "No results available" in body["error"]
        status, body = await api.get("/dashboard/api/hardware/",
                                     startTimestampInSeconds="soon")
        assert status == 400 and "Unix time" in body["error"]
        for path in ("/dashboard/api/test/nosuch", "/dashboard/api/build/wrtci:x/issues",
                     "/dashboard/api/issue/nosuch", "/dashboard/api/test/wrtci:j:1:boot"):
            status, body = await api.get(path)
            assert status == 404 and body["error"].startswith("no "), (path, body)
        async with api.session.post(api.base + "/dashboard/api/hardware/x/summary",
                                    data=b"{not json") as resp:
            assert resp.status == 400 and "bad JSON" in (await resp.json())["error"]


async def _snapshots(js, subjects, pool, runs: list[dict[str, str]]) -> list[str]:
    """Snapshots of the last hours (newest last), each with one job's test results."""
    factory = Factory(pool)
    now = dt.datetime.now(dt.UTC)
    ids = []
    for n, tests in enumerate(runs):
        firmware = await factory.firmware(
            revision=f"r{301 + n}-{n + 1}{n + 1}{n + 1}{n + 1}abcd",
            created_at=now - dt.timedelta(hours=len(runs) - n))
        job = await factory.job(firmware)
        await publish(js, subjects, started(job), finished(job, tests))
        ids.append(firmware)
    await ingest_all(js, subjects, pool)
    return ids


async def test_kci_dev_compares_and_reports_a_branch(js, subjects, pool, storage_config,
                                                     nats_config, database_config,
                                                     tmp_path):
    await _snapshots(js, subjects, pool, [
        {"base.test_wifi": "PASS", "base.test_shell": "PASS", "base.test_ubus": "FAIL",
         "base.test_led": "PASS"},
        {"base.test_wifi": "PASS", "base.test_shell": "PASS", "base.test_ubus": "FAIL",
         "base.test_led": "FAIL"},
        {"base.test_wifi": "FAIL", "base.test_shell": "PASS", "base.test_ubus": "PASS",
         "base.test_led": "PASS"}])
    async with serving(nats_config, database_config, storage_config) as api:
        kci = KciDev(api.base, tmp_path)
        tree = ["--giturl", GIT_URL, "--branch", "snapshot", "--origin", "wrtci"]

        # The newest two snapshots: wifi regressed, ubus was fixed; led flips
        # PASS-FAIL-PASS over the branch's history, so it is unstable, not fixed.
        report = await kci.compare()
        assert (report["base"], report["head"], report["incomplete"]) == (
            "2222abcd", "3333abcd", False)
        assert report["counts"] == {"regression": 1, "fixed": 1, "unstable": 1,
                                    "persistent_fail": 0, "new": 0, "missing": 0}
        by_category = {i["category"]: i for i in report["items"]}
        assert by_category["regression"]["identity"]["path"] == "base.test_wifi"
        assert by_category["regression"]["identity"]["platform"] == "x86/64/generic"
        assert (by_category["regression"]["base_status"],
                by_category["regression"]["head_status"]) == ("PASS", "FAIL")
        assert by_category["fixed"]["identity"]["path"] == "base.test_ubus"
        assert by_category["unstable"]["identity"]["path"] == "base.test_led"

        # Two given firmware: ubus failed in both; led's PASS -> FAIL is unstable by
        # the branch's history, so nothing would gate.
        report = await kci.compare("1111abcd", "2222abcd")
        assert report["counts"] == {"regression": 0, "fixed": 0, "unstable": 1,
                                    "persistent_fail": 1, "new": 0, "missing": 0}
        assert not report["incomplete"]

        # The tree report itself, as `kci-dev results tree-report` shows it.
        report = await kci.json("tree-report", *tree, "--history-size", "3")
        assert report["commit_hash"] == "3333abcd"
        assert report["test_status_summary"]["pass_count"] == 3
        assert report["test_status_summary"]["fail_count"] == 1
        assert report["boot_status_summary"]["pass_count"] == 1
        (config,) = report["possible_regressions"]["x86/64/generic"].values()
        ((arch_compiler, paths),) = config.items()
        assert [(t["status"]) for t in paths["base.test_wifi"]] == ["FAIL", "PASS", "PASS"]
        assert list(paths) == ["base.test_wifi"]
        fixed = report["fixed_regressions"]["x86/64/generic"]
        assert list(next(iter(fixed.values()))[arch_compiler]) == ["base.test_ubus"]
        unstable = report["unstable_tests"]["x86/64/generic"]
        assert list(next(iter(unstable.values()))[arch_compiler]) == ["base.test_led"]
        async with api.session.get(report["dashboard_url"]) as resp:
            assert resp.status == 200 and "r303-3333abcd" in await resp.text()
        _code, text, _err = await kci("tree-report", *tree, "--no-emoji")
        assert "Commit: 3333abcd" in text and "history:PASS > PASS > FAIL" in text
        narrowed = await kci.json("tree-report", *tree, "--path", "base.test_u%")
        assert narrowed["possible_regressions"] == {} and narrowed["unstable_tests"] == {}
        assert narrowed["fixed_regressions"] == report["fixed_regressions"]  # ubus only

        # The tree list carries each branch's status counts, as the dashboard's does.
        _status, trees = await api.get("/dashboard/api/tree", origin="wrtci")
        (snapshot,) = trees
        assert snapshot["test_status"]["pass"] == 3 and snapshot["test_status"]["fail"] == 1
        assert snapshot["boot_status"]["pass"] == 1 and snapshot["build_status"]["PASS"] == 1

        # Bad input: a JSON 4xx, and kci-dev says so without a traceback.
        for params, needle in (({"git_url": GIT_URL}, "required"),
                               ({"git_url": GIT_URL, "git_branch": "snapshot",
                                 "group_size": "1"}, "group_size"),
                               ({"git_url": GIT_URL, "git_branch": "snapshot",
                                 "min_age_in_hours": "5", "max_age_in_hours": "5"}, "less"),
                               ({"git_url": GIT_URL, "git_branch": "snapshot", "x": "1"},
                                "unknown query parameter")):
            status, body = await api.get("/dashboard/api/tree-report", **params)
            assert status == 400 and needle in body["error"], (params, body)
        status, body = await api.get("/dashboard/api/tree-report", git_url=GIT_URL,
                                     git_branch="snapshot", min_age_in_hours="5")
        assert status == 404 and "No firmware" in body["error"]
        code, _out, err = await kci("tree-report", "--giturl", GIT_URL, "--branch", "nosuch",
                                    "--origin", "wrtci", check=False)
        assert code != 0 and "Traceback" not in err
