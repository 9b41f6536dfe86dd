"""What one pytest run of the suite means: pure, from its exit, junit and logs.

A boot failure is recognised without trusting one exit code alone:

- the suite's own ``pytest.exit(..., returncode=3)`` (openwrt-tests and the
  virtual suite do that when the device does not reach its shell) — but not
  pytest's INTERNALERROR, which also exits 3 and is a crash of the suite;
- no test reached the shell: nothing passed, and the failures are login/shell
  timeouts (labgrid's ShellDriver ``TIMEOUT``, a broken strategy) in the junit
  file or in pytest's output, or a kernel panic on the console.

A crash (no junit, a signal, an internal error) is TEST_SUITE_ERROR. A usage
or collection error is INFRASTRUCTURE — the lab's target file, options or
checkout are wrong, not the firmware — with pytest's output attached. Nothing
that did not run becomes a pass or a skip: a run with no results is an error.
"""

from __future__ import annotations

import re

import msgspec

from wrtci.proto.model import ErrorCode, TestResult, TestStatus

# pytest's exit codes
EXIT_OK, EXIT_TESTS_FAILED, EXIT_INTERRUPTED, EXIT_INTERNAL, EXIT_USAGE, EXIT_NO_TESTS = range(6)

OUTPUT_CHARS = 3000
"""How much of pytest's output an error message carries."""

BOOT_SIGNS = re.compile(
    r"exceeded during waiting for login"  # labgrid ShellDriver
    r"|waiting for login"
    r"|Timeout .{0,80}(login|prompt|shell)"
    r"|failed to transition to state shell"
    r"|can not transition to (state )?shell"
    r"|Strategy\w* is in broken state"
    r"|did not reach (its|the) shell",
    re.IGNORECASE)
CONSOLE_BOOT_SIGNS = re.compile(r"Kernel panic - not syncing|end Kernel panic")
INTERNAL_ERROR = re.compile(r"^INTERNALERROR>", re.MULTILINE)
SUITE_EXIT = re.compile(r"^!+ _pytest\.outcomes\.Exit: (.*?) !+$", re.MULTILINE)


class JunitReport(msgspec.Struct, frozen=True, kw_only=True):
    tests: list[TestResult] = []
    collection_errors: list[str] = []
    """Modules pytest could not import (each with its reason)."""


class PytestRun(msgspec.Struct, frozen=True, kw_only=True):
    plan: str
    returncode: int | None
    timed_out: bool = False
    timeout_s: float = 0.0
    junit: JunitReport | None = None
    """None: pytest wrote no (readable) junit file."""
    output: str = ""
    """The end of pytest's own output."""
    console: str = ""
    """The end of the device's console log."""


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    tests: list[TestResult] = []
    error_code: ErrorCode | None = None
    error_message: str | None = None


def _tail(text: str, chars: int = OUTPUT_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= chars else "…" + text[-chars:]


def _with_output(message: str, output: str) -> str:
    tail = _tail(output)
    return f"{message}\n--- pytest output ---\n{tail}" if tail else message


def _failure_texts(tests: list[TestResult]) -> list[str]:
    return [f"{t.message or ''}\n{t.log_excerpt or ''}" for t in tests
            if t.status in (TestStatus.FAIL, TestStatus.ERROR)]


def no_test_reached_the_shell(run: PytestRun) -> str | None:
    """Why the device looks as if it never booted to its shell; None if it did."""
    tests = run.junit.tests if run.junit else []
    if any(t.status is TestStatus.PASS for t in tests):
        return None
    failures = _failure_texts(tests)
    for text in [*failures, run.output]:
        match = BOOT_SIGNS.search(text)
        if match:
            return f"login/shell timeout: {match.group(0)}"
    match = CONSOLE_BOOT_SIGNS.search(run.console)
    if match and (failures or run.returncode != EXIT_OK):
        return f"console: {match.group(0)}"
    return None


def read_outcome(run: PytestRun) -> Verdict:
    plan = run.plan
    tests = run.junit.tests if run.junit else []
    if run.timed_out:
        return Verdict(tests=tests, error_code=ErrorCode.TIMEOUT,
                       error_message=f"plan {plan} did not finish within "
                                     f"{run.timeout_s:.0f} s; killed")
    code = run.returncode
    if code == EXIT_USAGE:
        return Verdict(error_code=ErrorCode.INFRASTRUCTURE, error_message=_with_output(
            f"plan {plan}: pytest usage error (exit 4)", run.output))
    if run.junit is not None and run.junit.collection_errors:
        errors = "; ".join(run.junit.collection_errors)
        return Verdict(error_code=ErrorCode.INFRASTRUCTURE, error_message=_with_output(
            f"plan {plan}: collection error: {errors}", run.output))
    if code == EXIT_INTERNAL and INTERNAL_ERROR.search(run.output):
        return Verdict(tests=tests, error_code=ErrorCode.TEST_SUITE_ERROR,
                       error_message=_with_output(f"plan {plan}: pytest internal error",
                                                  run.output))
    if code == EXIT_INTERNAL:
        said = SUITE_EXIT.search(run.output)
        reason = said.group(1) if said else "the device did not reach its shell"
        return Verdict(tests=tests, error_code=ErrorCode.BOOT_FAILED,
                       error_message=f"plan {plan}: {reason}")
    if code == EXIT_INTERRUPTED:
        # Collection errors without junit detail, or an interrupted session.
        return Verdict(tests=tests, error_code=ErrorCode.INFRASTRUCTURE,
                       error_message=_with_output(
                           f"plan {plan}: pytest was interrupted (exit 2; collection "
                           "error?)", run.output))
    if code not in (EXIT_OK, EXIT_TESTS_FAILED, EXIT_NO_TESTS):
        what = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
        return Verdict(tests=tests, error_code=ErrorCode.TEST_SUITE_ERROR,
                       error_message=_with_output(f"plan {plan}: pytest crashed ({what})",
                                                  run.output))
    if run.junit is None:
        return Verdict(error_code=ErrorCode.TEST_SUITE_ERROR, error_message=_with_output(
            f"plan {plan}: pytest exited with {code} and wrote no junit file (crash?)",
            run.output))
    boot = no_test_reached_the_shell(run) if code != EXIT_OK else None
    if boot is not None:
        return Verdict(tests=tests, error_code=ErrorCode.BOOT_FAILED,
                       error_message=f"plan {plan}: the device did not reach its shell ({boot})")
    if not tests:
        return Verdict(error_code=ErrorCode.TEST_SUITE_ERROR, error_message=_with_output(
            f"plan {plan}: no test ran (exit {code})", run.output))
    return Verdict(tests=tests)
