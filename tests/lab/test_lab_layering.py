"""The lab daemon's shape: it imports only proto/ and core/ of wrtci, and no
module of it grows past 400 lines."""

from __future__ import annotations

import ast

from tests.helpers import PROJECT_ROOT

LAB = PROJECT_ROOT / "lab_daemon"
FIRST_PARTY = {"core", "proto", "services", "lab_daemon", "tests", "bench"}


def _top(module: str) -> str:
    """The first-party package of ``module`` (``wrtci.core.x`` -> ``core``)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "wrtci" and len(parts) > 1 else parts[0]


def _imports(path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {_top(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(_top(node.module))
    return names


def test_lab_daemon_imports_only_proto_and_core():
    wrong = {path.name: sorted(_imports(path) & (FIRST_PARTY - {"core", "proto", "lab_daemon"}))
             for path in LAB.glob("*.py")}
    assert {name: found for name, found in wrong.items() if found} == {}
    assert {"core", "proto"} <= set().union(*(_imports(path) for path in LAB.glob("*.py")))


def test_no_lab_daemon_module_over_400_lines():
    sizes = {path.name: len(path.read_text().splitlines()) for path in LAB.glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 400} == {}
    assert len(sizes) >= 10  # presence, jobs, health, control, loop ... are their own modules
