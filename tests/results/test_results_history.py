"""Regressions and flaky tests: pure rules, then through events, analysis and the CLI."""

from __future__ import annotations

import json

from tests.factories_results import Factory, finished, ingest_all, publish
from tests.helpers import run_cli
from tests.results.test_results_kcidb import analyser
from wrtci.services.results.history import FirmwareRuns, episodes, flakiness, verdict


def _history(*statuses: str | tuple[str, ...]) -> list[FirmwareRuns]:
    return [FirmwareRuns(checkout_id=f"fw{i}", statuses=list(s if isinstance(s, tuple) else (s,)),
                         last_test_id=f"t{i}") for i, s in enumerate(statuses)]


def test_episodes_from_a_lineage_history():
    (episode,) = episodes(_history("PASS", "FAIL", "FAIL", "PASS"))
    assert (episode.last_passing, episode.first_failing, episode.fixed) == ("fw0", "fw1", "fw3")
    assert episodes(_history("FAIL", "FAIL")) == []  # never passed: not a regression
    (open_episode,) = episodes(_history("PASS", "SKIP", "FAIL"))
    assert (open_episode.last_passing, open_episode.fixed) == ("fw0", None)
    # A firmware whose runs disagree says nothing either way.
    assert episodes(_history("PASS", ("PASS", "FAIL"), "PASS")) == []
    assert len(episodes(_history("PASS", "FAIL", "PASS", "FAIL"))) == 2


def test_flakiness_counts_flips_within_a_firmware_only():
    assert verdict(["PASS", "FAIL"]) == "flaky"
    alternating = flakiness([("a", "PASS"), ("a", "FAIL"), ("a", "PASS"), ("a", "FAIL")])
    assert (alternating.flips, alternating.pairs, alternating.score) == (3, 3, 1.0)
    # pass on one firmware, fail on the next: a regression, not flakiness
    steady = flakiness([("a", "PASS"), ("a", "PASS"), ("b", "FAIL"), ("b", "FAIL")])
    assert (steady.flips, steady.is_flaky(0.2)) == (0, False)
    assert flakiness([("a", "ERROR"), ("a", "PASS")]).pairs == 0


async def _run(factory, js, subjects, pool, firmware, statuses, attempts=1):
    """One job of ``firmware`` whose attempts give ``statuses`` for test ``base.test_wifi``."""
    job = await factory.job(firmware, attempts=attempts)
    events = [finished(job, {"base.test_wifi": status, "base.test_shell": "PASS"},
                       attempt=n) for n, status in enumerate(statuses, start=1)]
    await publish(js, subjects, *events)
    await ingest_all(js, subjects, pool)
    return job


async def test_pass_fail_pass_yields_one_regression_and_its_fix(
        js, subjects, pool, storage_config, site_config_file):
    factory = Factory(pool)
    work = analyser(pool, storage_config)
    good = await factory.firmware(revision="r100-aaaa")
    bad = await factory.firmware(revision="r101-bbbb")
    fixed = await factory.firmware(revision="r102-cccc")
    for firmware, status in [(good, "PASS"), (bad, "FAIL"), (fixed, "PASS")]:
        await _run(factory, js, subjects, pool, firmware, [status])
        await work.run_due(50)

    (regression,) = await pool.fetch("SELECT * FROM regressions")
    assert (regression["path"], regression["device_type"]) == ("base.test_wifi",
                                                               "x86/64/generic")
    assert (regression["last_passing_checkout_id"], regression["first_failing_checkout_id"],
            regression["fixed_checkout_id"]) == (good, bad, fixed)
    assert regression["flaky"] is False and regression["fixed_at"] is not None

    summary = json.loads(run_cli("summary", bad, "--json", "-c", str(site_config_file)).stdout)
    (dtype,) = summary["device_types"]
    assert dtype["tests"] == {"PASS": 1, "FAIL": 1}
    assert [r["path"] for r in dtype["regressions"]] == ["base.test_wifi"]
    text = run_cli("summary", fixed, "-c", str(site_config_file)).stdout
    assert "fixed base.test_wifi" in text


async def test_regression_found_even_when_results_arrive_out_of_order(
        js, subjects, pool, storage_config):
    factory = Factory(pool)
    work = analyser(pool, storage_config)
    old, new = await factory.firmware(), await factory.firmware()
    await _run(factory, js, subjects, pool, new, ["FAIL"])  # the newer firmware reports first
    await work.run_due(50)
    assert await pool.fetchval("SELECT count(*) FROM regressions") == 0
    await _run(factory, js, subjects, pool, old, ["PASS"])
    await work.run_due(50)
    row = await pool.fetchrow("SELECT * FROM regressions")
    assert (row["last_passing_checkout_id"], row["first_failing_checkout_id"]) == (old, new)


async def test_alternating_test_is_flagged_flaky_and_not_counted_as_regression(
        js, subjects, pool, storage_config, site_config_file):
    factory = Factory(pool)
    work = analyser(pool, storage_config)
    first, second = await factory.firmware(), await factory.firmware()
    await _run(factory, js, subjects, pool, first, ["PASS", "FAIL", "PASS", "FAIL"], attempts=4)
    await work.run_due(50)
    flaky = await pool.fetchrow(
        "SELECT * FROM flaky_tests WHERE path = 'base.test_wifi'")
    assert (flaky["flaky"], flaky["flips"], flaky["pairs"], flaky["score"]) == (True, 3, 3, 1.0)
    steady = await pool.fetchrow("SELECT * FROM flaky_tests WHERE path = 'base.test_shell'")
    assert (steady["flaky"], steady["score"]) == (False, 0.0)

    # It passes on the next firmware, fails on the one after: a flaky failure, not a regression.
    await _run(factory, js, subjects, pool, second, ["PASS"])
    third = await factory.firmware()
    await _run(factory, js, subjects, pool, third, ["FAIL"])
    await work.run_due(50)
    (regression,) = await pool.fetch("SELECT * FROM regressions")
    assert (regression["first_failing_checkout_id"], regression["flaky"]) == (third, True)
    summary = json.loads(run_cli("summary", third, "--json", "-c",
                                 str(site_config_file)).stdout)
    (dtype,) = summary["device_types"]
    assert dtype["regressions"] == []
    assert [r["path"] for r in dtype["flaky_failures"]] == ["base.test_wifi"]
