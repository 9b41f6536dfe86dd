"""kci-dev (KernelCI's own client, run as a user runs it) against /dashboard/api/."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.api_support import scenario, serving

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
