"""Pure logic of the lab daemon and the log writer: no servers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import msgspec
import pytest

from wrtci.lab_daemon.junit import parse_junit
from wrtci.lab_daemon.state import DeviceStateMachine, HealthCounter, InvalidTransition
from wrtci.lab_daemon.targets import TargetFileError, load_target_file
from wrtci.proto.events import LogChunkData
from wrtci.proto.model import DeviceHealth, DeviceState, TestStatus
from wrtci.services.logs.assembler import Assembler, LogKey

PROJECT = Path(__file__).resolve().parents[2]
VIRTUAL_TARGET = PROJECT / "deploy" / "virtual-lab" / "qemu-x86-64-virtual.yaml"


@pytest.mark.parametrize(("name", "features", "drivers"), [
    ("glinet-mt6000.yaml", ["apk", "online"], ["UBootDriver", "UBootStrategy"]),
    ("qemu-malta-be.yaml", ["hwsim", "online", "opkg"], ["QEMUDriver"]),
    ("qemu-x86-64.yaml", ["online", "opkg", "rootfs"], ["QEMUNetworkStrategy"]),
    ("raspberry-pi-4.yaml", [], ["USBSDMuxDriver", "ShellStrategy"]),
    ("netgear-r7800.yaml", ["online", "wifi"], ["TFTPProviderDriver"]),
])
def test_openwrt_lab_target_files_load_unchanged(fixtures_dir, name, features, drivers):
    info = load_target_file(fixtures_dir / "openwrt-tests-targets" / name)
    assert info.features == features
    assert set(drivers) <= set(info.drivers)


def test_strategy_from_a_missing_import_is_accepted_but_flagged(fixtures_dir):
    info = load_target_file(fixtures_dir / "openwrt-tests-targets" / "qemu-x86-64.yaml")
    assert info.unverified == ["QEMUNetworkStrategy"]


def test_virtual_lab_target_file():
    info = load_target_file(VIRTUAL_TARGET)
    assert info.features == ["rootfs"]
    assert info.drivers == ["QEMUDriver", "ShellDriver", "ShellStrategy"]
    assert info.unverified == []


@pytest.mark.parametrize(("content", "error"), [
    ("targets: [", "not valid YAML"),
    ("- a\n- b\n", "top level is not a mapping"),
    ("features: [x]\n", "no 'targets: main:' section"),
    ("targets:\n  main:\n    drivers:\n      - FluxCapacitorDriver: {}\n",
     "unknown labgrid driver or resource: FluxCapacitorDriver"),
])
def test_broken_target_files_name_the_file(tmp_path, content, error):
    path = tmp_path / "broken.yaml"
    path.write_text(content)
    with pytest.raises(TargetFileError) as raised:
        load_target_file(path)
    assert str(path) in str(raised.value)
    assert error in str(raised.value)


def test_missing_target_file(tmp_path):
    with pytest.raises(TargetFileError, match="cannot read target file"):
        load_target_file(tmp_path / "nope.yaml")


def test_state_machine_allows_the_table_and_nothing_else():
    machine = DeviceStateMachine("dut")
    assert machine.move(DeviceState.BUSY) is DeviceState.IDLE
    machine.move(DeviceState.CHECKING)
    machine.move(DeviceState.UNHEALTHY)
    with pytest.raises(InvalidTransition, match="unhealthy -> busy"):
        machine.move(DeviceState.BUSY)
    machine.move(DeviceState.MAINTENANCE)
    with pytest.raises(InvalidTransition):
        machine.move(DeviceState.IDLE)  # leaving maintenance goes through a check
    machine.move(DeviceState.CHECKING)
    machine.move(DeviceState.IDLE)
    assert machine.state is DeviceState.IDLE


def test_health_thresholds_warn_then_disable_then_recover():
    counter = HealthCounter(warn_after=3, disable_after=5)
    assert counter.health is DeviceHealth.UNKNOWN and not counter.in_pool
    seen = [counter.record(False) for _ in range(5)]
    assert seen == [DeviceHealth.HEALTHY, DeviceHealth.HEALTHY, DeviceHealth.WARNING,
                    DeviceHealth.WARNING, DeviceHealth.UNHEALTHY]
    assert counter.disabled and not counter.in_pool
    assert counter.record(True) is DeviceHealth.HEALTHY
    assert counter.failures == 0 and counter.in_pool


def test_junit_to_kcidb_results(tmp_path):
    junit = tmp_path / "junit.xml"
    junit.write_text(textwrap.dedent("""\
        <?xml version="1.0" encoding="utf-8"?>
        <testsuites><testsuite name="pytest" tests="4">
          <testcase classname="tests.test_base" name="test_shell" time="5.2"/>
          <testcase classname="tests.test_base" name="test_echo" time="0.1">
            <failure message="assert 'a' == 'b'">long traceback</failure></testcase>
          <testcase classname="test_base" name="test_online" time="0">
            <skipped message="feature online missing"/></testcase>
          <testcase classname="tests.test_base" name="test_x[1.5]" time="0">
            <error message="fixture broke">boom</error></testcase>
        </testsuite></testsuites>
        """))
    results = parse_junit(junit, "base")
    assert [(r.path, r.status) for r in results] == [
        ("base.test_base.test_shell", TestStatus.PASS),
        ("base.test_base.test_echo", TestStatus.FAIL),
        ("base.test_base.test_online", TestStatus.SKIP),
        ("base.test_base.test_x[1_5]", TestStatus.ERROR),
    ]
    assert results[0].duration_s == pytest.approx(5.2)
    assert results[1].message == "assert 'a' == 'b'" and results[1].log_excerpt == "long traceback"
    assert parse_junit(tmp_path / "missing.xml", "base") == []


def _chunk(seq, text, final=False, run=1, stream="console"):
    return LogChunkData(job_id="j", attempt=1, lab="lab", device="dut", seq=seq, text=text,
                        final=final, run=run, stream=stream)


def test_assembler_orders_dedupes_and_waits_for_gaps():
    assembler = Assembler()
    key = LogKey("j", 1, "console")
    assert assembler.add(_chunk(2, "c", final=True))
    assert assembler.add(_chunk(0, "a"))
    assert not assembler.add(_chunk(0, "a"))  # duplicate
    run_log = assembler.run_log(key, 1)
    assert not run_log.complete and run_log.text() == "a"
    assembler.add(_chunk(1, "b"))
    assert run_log.complete and run_log.text() == "abc"


def test_assembler_keeps_runs_apart():
    assembler = Assembler()
    key = LogKey("j", 1, "console")
    assembler.add(_chunk(0, "first run, handed back "))
    assembler.add(_chunk(0, "second ", run=2))
    assembler.add(_chunk(1, "run", final=True, run=2))
    run, run_log = assembler.latest(key)
    assert run == 2 and run_log.complete and run_log.text() == "second run"


def test_example_lab_config_loads_and_resolves_paths():
    from wrtci.lab_daemon.cli import load

    config = load(str(PROJECT / "deploy" / "lab.example.toml"))
    virtual = config.lab.devices[1]
    assert virtual.target_file == str(VIRTUAL_TARGET)
    assert virtual.device_type == "x86/64/generic"
    assert config.lab.health.warn_after == 3 and config.lab.health.disable_after == 5


def test_results_are_fitted_to_one_message_or_replaced_by_an_error():
    from wrtci.lab_daemon.job import fit_results
    from wrtci.proto.events import JobFinishedData
    from wrtci.proto.model import ErrorCode, JobResult, TestResult

    tests = [TestResult(path=f"base.test_x.test_{n}", status=TestStatus.FAIL,
                        message="m" * 5000, log_excerpt="e" * 4000) for n in range(10)]
    data = JobFinishedData(job_id="j", attempt=1, lab="lab", device="dut",
                           result=JobResult.FAIL, tests=tests)

    def size(d):
        return len(msgspec.json.encode(d))

    assert fit_results(data, size, 10**6) is data  # fits: unchanged
    fitted = fit_results(data, size, 30_000)
    assert size(fitted) <= 30_000 and fitted.result is JobResult.FAIL
    assert [t.path for t in fitted.tests] == [t.path for t in tests]
    assert fitted.tests[0].message == "m" * 1000 and fitted.tests[0].log_excerpt == "e" * 1000
    hopeless = fit_results(data, size, 500)
    assert (hopeless.result, hopeless.error_code, hopeless.tests) == (
        JobResult.ERROR, ErrorCode.TEST_SUITE_ERROR, [])
    assert "10 test results do not fit" in hopeless.error_message


@pytest.mark.parametrize("name", ["../../../tmp/owned", "/etc", "..", "a/../../b", ""])
def test_a_plan_name_from_a_job_stays_in_the_run_directory(tmp_path, name):
    from wrtci.lab_daemon.runner import PlanFiles

    files = PlanFiles(run_dir=tmp_path / "run")
    plan_dir = files.plan_dir(name).resolve()
    assert plan_dir.parent == (tmp_path / "run" / "plans").resolve()
