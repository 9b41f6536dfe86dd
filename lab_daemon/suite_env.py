"""The test suite's own Python environment, built from the checkout's declaration.

The suite (openwrt-tests) brings its own dependencies — pytest plugins such as
pytest-harvest, a labgrid fork — that wrtci's environment does not have and
must not get. The lab builds a separate virtualenv from what the checkout
declares and runs pytest with that interpreter; no wrtci code runs in it.

What is declared, first match wins:

- ``pyproject.toml`` with ``[project] dependencies`` or
  ``[tool.poetry.dependencies]``; the direct dependencies are pinned to the
  versions in ``uv.lock`` / ``poetry.lock`` when a lock file is there;
- ``requirements.txt`` (else every ``requirements*.txt``).

Environments are keyed by a digest of what is installed, so a new revision
that does not change the dependencies reuses the environment at once, and
labs (or tests) sharing an ``envs_dir`` build each environment once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import msgspec

MARKER = "wrtci-suite-env.json"
REQUIRED_MODULES = ("pytest", "labgrid")
"""What the lab's runner needs from the suite's environment."""


class SuiteEnvError(Exception):
    """The suite's environment cannot be built; the message names the file and cause."""


class Declaration(msgspec.Struct, frozen=True, kw_only=True):
    source: str
    """The file(s) the requirements come from (named in errors)."""
    requirements: list[str]


class SuiteEnv(msgspec.Struct, frozen=True, kw_only=True):
    python: str
    revision: str | None
    digest: str
    source: str


# -- reading the declaration -------------------------------------------------------

_POETRY_SKIP = {"python"}
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _caret(version: str) -> str:
    parts = [int(p) if p.isdigit() else 0 for p in version.split(".")]
    for index, part in enumerate(parts):
        if part != 0 or index == len(parts) - 1:
            upper = [*parts[:index], part + 1]
            break
    return f">={version},<{'.'.join(map(str, upper))}"


def _tilde(version: str) -> str:
    parts = version.split(".")
    if len(parts) == 1:
        return f">={version},<{int(parts[0]) + 1}"
    return f">={version},<{parts[0]}.{int(parts[1]) + 1}"


def poetry_constraint(spec: str) -> str:
    """A poetry version constraint as a PEP 440 specifier."""
    spec = spec.strip()
    if spec in ("", "*"):
        return ""
    out = []
    for part in (p.strip() for p in spec.split(",")):
        if part.startswith("^"):
            out.append(_caret(part[1:].strip()))
        elif part.startswith("~") and not part.startswith("~="):
            out.append(_tilde(part[1:].strip()))
        elif part[0].isdigit():
            out.append(f"=={part}")
        else:
            out.append(part)
    return ",".join(out)


def _poetry_requirement(name: str, spec: Any, where: str) -> str:
    if isinstance(spec, str):
        return name + poetry_constraint(spec)
    if not isinstance(spec, dict):
        raise SuiteEnvError(f"{where}: dependency {name!r}: unsupported declaration {spec!r}")
    extras = f"[{','.join(spec['extras'])}]" if spec.get("extras") else ""
    if "git" in spec:
        ref = spec.get("rev") or spec.get("tag") or spec.get("branch")
        return f"{name}{extras} @ git+{spec['git']}" + (f"@{ref}" if ref else "")
    if "path" in spec or "url" in spec:
        raise SuiteEnvError(f"{where}: dependency {name!r}: path/url sources are not supported")
    return name + extras + poetry_constraint(str(spec.get("version", "*")))


def _locked(suite: Path) -> tuple[str | None, dict[str, str]]:
    """Pinned requirement per package name from uv.lock or poetry.lock."""
    for lock_name in ("uv.lock", "poetry.lock"):
        lock = suite / lock_name
        if not lock.is_file():
            continue
        try:
            data = tomllib.loads(lock.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SuiteEnvError(f"{lock}: cannot read the lock file: {exc}") from exc
        pins: dict[str, str] = {}
        for package in data.get("package", []):
            name, version = package.get("name"), package.get("version")
            if not name or not version:
                continue
            source = package.get("source") or {}
            git = _git_pin(source, lock_name)
            pins[_normal(name)] = f"{name} @ {git}" if git else f"{name}=={version}"
        return str(lock), pins
    return None, {}


def _git_pin(source: dict, lock_name: str) -> str | None:
    if lock_name == "poetry.lock" and source.get("type") == "git":
        ref = source.get("resolved_reference") or source.get("reference")
        return f"git+{source['url']}" + (f"@{ref}" if ref else "")
    if lock_name == "uv.lock" and "git" in source:
        url, _, commit = source["git"].partition("#")
        url = url.split("?", 1)[0]
        return f"git+{url}" + (f"@{commit}" if commit else "")
    return None


def _pyproject_requirements(path: Path) -> list[str] | None:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SuiteEnvError(f"{path}: cannot read: {exc}") from exc
    project = data.get("project") or {}
    if "dependencies" in project:
        deps = project["dependencies"]
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            raise SuiteEnvError(f"{path}: [project] dependencies must be a list of strings")
        return deps
    poetry = ((data.get("tool") or {}).get("poetry") or {}).get("dependencies")
    if isinstance(poetry, dict):
        return [_poetry_requirement(name, spec, str(path))
                for name, spec in poetry.items() if name.lower() not in _POETRY_SKIP]
    return None


def read_declaration(suite: Path) -> Declaration:
    """What the checkout declares it needs; SuiteEnvError if nothing usable."""
    if not suite.is_dir():
        raise SuiteEnvError(f"{suite}: suite checkout not found")
    pyproject = suite / "pyproject.toml"
    if pyproject.is_file():
        declared = _pyproject_requirements(pyproject)
        if declared is not None:
            lock, pins = _locked(suite)
            requirements = []
            for requirement in declared:
                match = _NAME.match(requirement)
                pinned = pins.get(_normal(match.group(1))) if match else None
                # a pin keeps the declared extras and markers out: good enough for pytest
                # plugins; an unpinned requirement is installed as declared
                requirements.append(pinned if pinned and ";" not in requirement
                                    and "[" not in requirement else requirement)
            source = f"{pyproject}" + (f" + {lock}" if lock else "")
            return Declaration(source=source, requirements=requirements)
    files = [suite / "requirements.txt"] if (suite / "requirements.txt").is_file() \
        else sorted(suite.glob("requirements*.txt"))
    if files:
        requirements = []
        for file in files:
            requirements += ["-r", str(file)]
        return Declaration(source=", ".join(map(str, files)), requirements=requirements)
    raise SuiteEnvError(
        f"{suite}: no dependency declaration (pyproject.toml with [project] dependencies "
        "or [tool.poetry.dependencies], or requirements.txt)")


def digest(declaration: Declaration, suite: Path, base_python: str) -> str:
    h = hashlib.sha256(base_python.encode() + b"\0")
    for requirement in declaration.requirements:
        h.update(requirement.encode() + b"\0")
        if requirement.endswith(".txt") and Path(requirement).is_file():
            h.update(Path(requirement).read_bytes())  # a requirements file's content
    return h.hexdigest()[:20]


# -- the checkout's revision ----------------------------------------------------------

def suite_revision(suite: Path) -> str | None:
    """``git rev-parse HEAD`` of the checkout; None if it is not a git checkout."""
    try:
        done = subprocess.run(["git", "-C", str(suite), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


# -- building ------------------------------------------------------------------------

def _run(argv: list[str], log: Path, timeout_s: float) -> subprocess.CompletedProcess:
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        try:
            return subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, returncode=-1)


def _last_lines(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def build_env(suite: Path, envs_dir: Path, *, base_python: str | None = None,
              timeout_s: float = 900.0) -> SuiteEnv:
    """The suite's environment, built (or reused) for what the checkout declares now.

    Blocking (pip): call through ``asyncio.to_thread``. Raises SuiteEnvError.
    """
    base_python = base_python or sys.executable
    revision = suite_revision(suite)
    declaration = read_declaration(suite)
    key = digest(declaration, suite, base_python)
    envs_dir.mkdir(parents=True, exist_ok=True)
    target = envs_dir / key
    python = target / "bin" / "python"
    with open(envs_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per environment (labs, tests)
        if not (target / MARKER).is_file():
            _build(target, declaration, base_python, timeout_s)
    return SuiteEnv(python=str(python), revision=revision, digest=key,
                    source=declaration.source)


def _build(target: Path, declaration: Declaration, base_python: str, timeout_s: float) -> None:
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    log = target.parent / f"{target.name}.log"
    log.write_bytes(b"")
    python = str(target / "bin" / "python")
    steps = [
        ([base_python, "-m", "venv", str(target)], "cannot create the virtualenv"),
        ([python, "-m", "pip", "install", "--disable-pip-version-check", "-q",
          *declaration.requirements], "dependencies failed to install"),
        ([python, "-c", "; ".join(f"import {m}" for m in REQUIRED_MODULES)],
         "the declared dependencies lack " + " or ".join(REQUIRED_MODULES)),
    ]
    for argv, problem in steps:
        done = _run(argv, log, timeout_s)
        if done.returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            why = "timed out" if done.returncode == -1 else f"exit {done.returncode}"
            raise SuiteEnvError(f"{declaration.source}: {problem} ({why}; log {log}):\n"
                                f"{_last_lines(log)}")
    (target / MARKER).write_text(json.dumps({"source": declaration.source,
                                             "requirements": declaration.requirements}))
