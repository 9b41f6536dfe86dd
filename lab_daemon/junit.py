"""pytest's JUnit XML -> KCIDB-style per-test results."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from wrtci.lab_daemon.outcome import JunitReport
from wrtci.proto.model import TestResult, TestStatus

_EXCERPT = 4000


def _module(classname: str) -> str:
    """``tests.test_base`` (or ``test_base`` with xunit1 names) -> ``test_base``."""
    return classname.rsplit(".", 1)[-1] if classname else "unknown"


def _path_part(value: str) -> str:
    # KCIDB paths are dot-separated: keep parametrised ids readable but flat.
    return value.replace(".", "_")


def parse_junit(path: Path, plan: str) -> list[TestResult]:
    """Results of one JUnit file; a missing or broken file gives no results."""
    report = read_junit(path, plan)
    return report.tests if report else []


def read_junit(path: Path, plan: str) -> JunitReport | None:
    """One JUnit file; None when it is missing or not XML (pytest did not finish)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    results: list[TestResult] = []
    collection_errors: list[str] = []
    for case in root.iter("testcase"):
        name = case.get("name", "unknown")
        error = case.find("error")
        if error is not None and error.get("message") == "collection failure":
            # pytest's record of a module it could not import: not a test
            reason = (error.text or "").strip().splitlines()
            collection_errors.append(f"{name}: {reason[-1] if reason else 'collection failure'}")
            continue
        if error is not None and error.get("message") == "internal error":
            continue  # pytest's own crash (INTERNALERROR), read from its output
        path_ = ".".join([plan, _module(case.get("classname", "")), _path_part(name)])
        status, detail = TestStatus.PASS, None
        for tag, mapped in (("failure", TestStatus.FAIL), ("error", TestStatus.ERROR),
                            ("skipped", TestStatus.SKIP)):
            element = case.find(tag)
            if element is not None:
                status = mapped
                detail = element
                break
        message = excerpt = None
        if detail is not None:
            message = detail.get("message") or None
            excerpt = (detail.text or "").strip()[-_EXCERPT:] or None
        try:
            duration = float(case.get("time", ""))
        except ValueError:
            duration = None
        results.append(TestResult(path=path_, status=status, duration_s=duration,
                                  message=message, log_excerpt=excerpt))
    return JunitReport(tests=results, collection_errors=collection_errors)
