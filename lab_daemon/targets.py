"""Read a labgrid target file (openwrt-tests format) for what the lab needs.

The file is used unchanged by labgrid itself when a job runs; here we only
learn the device's ``features`` (top level or under ``targets.main``) and
check that every driver and resource is one labgrid knows, so that a broken
file is reported at start, naming the file, instead of failing every job.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import msgspec
import yaml


class TargetFileError(ValueError):
    """A target file that cannot be used; the message names the file."""


class TargetInfo(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    features: list[str]
    drivers: list[str]
    resources: list[str]
    unverified: list[str] = []
    """Names not known to labgrid that may come from the file's ``imports``."""


class _Loader(yaml.SafeLoader):
    """YAML with labgrid's ``!template`` tag, kept as its raw text."""


_Loader.add_constructor("!template", lambda loader, node: loader.construct_scalar(node))


def _names(section: Any, what: str, path: Path) -> list[str]:
    """Class names in a drivers/resources section (list-of-dicts or dict form)."""
    if section is None:
        return []
    if isinstance(section, dict):
        return list(section)
    if isinstance(section, list):
        names = []
        for item in section:
            if not isinstance(item, dict) or len(item) != 1:
                raise TargetFileError(f"{path}: {what}: each entry must be one 'Name: {{...}}'")
            names.extend(item)
        return names
    raise TargetFileError(f"{path}: {what} must be a list or a mapping")


def _imported_classes(imports: list[str], base: Path) -> tuple[set[str], list[str]]:
    """Classes defined by the file's ``imports``; and the imports that are missing."""
    found: set[str] = set()
    missing: list[str] = []
    for entry in imports:
        module = (base / entry) if not Path(entry).is_absolute() else Path(entry)
        if module.suffix != ".py":
            continue  # a Python package name: cannot be inspected without importing it
        try:
            tree = ast.parse(module.read_text())
        except (OSError, SyntaxError):
            missing.append(str(module))
            continue
        found |= {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    return found, missing


def _known_classes() -> tuple[set[str], set[str]]:
    # Importing the packages registers every built-in driver and resource.
    import labgrid.driver
    import labgrid.resource
    import labgrid.strategy  # noqa: F401
    from labgrid.factory import target_factory

    return set(target_factory.drivers), set(target_factory.resources)


def read_target_yaml(path: Path, error: type[Exception] = TargetFileError) -> Any:
    """A target file's YAML (``!template`` kept as text); ``error`` names the file
    when it cannot be read or is not YAML."""
    try:
        return yaml.load(path.read_text(), Loader=_Loader)  # SafeLoader subclass
    except OSError as exc:
        raise error(f"{path}: cannot read target file: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from exc


def load_target_file(path: str | Path, target: str = "main") -> TargetInfo:
    path = Path(path)
    data = read_target_yaml(path)
    if not isinstance(data, dict):
        raise TargetFileError(f"{path}: not a labgrid target file (top level is not a mapping)")
    targets = data.get("targets")
    if not isinstance(targets, dict) or not isinstance(targets.get(target), dict):
        raise TargetFileError(f"{path}: no 'targets: {target}:' section")
    main = targets[target]

    features = list(data.get("features") or []) + list(main.get("features") or [])
    if not all(isinstance(f, str) for f in features):
        raise TargetFileError(f"{path}: features must be a list of names")

    drivers = _names(main.get("drivers"), "drivers", path)
    resources = _names(main.get("resources"), "resources", path)
    known_drivers, known_resources = _known_classes()
    imported, missing_imports = _imported_classes(list(data.get("imports") or []), path.parent)
    unknown = [d for d in drivers if d not in known_drivers and d not in imported]
    unknown += [r for r in resources if r not in known_resources and r not in imported]
    unverified: list[str] = []
    if unknown:
        if not missing_imports:
            raise TargetFileError(
                f"{path}: unknown labgrid driver or resource: {', '.join(unknown)}")
        # Defined (we must assume) by an import that is not on this host yet;
        # labgrid reports it when the job loads the file.
        unverified = unknown
    return TargetInfo(path=str(path), features=sorted(set(features)), drivers=drivers,
                      resources=resources, unverified=unverified)
