"""Test plans from a TOML file, and which of them a device and a firmware get."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import msgspec

from wrtci.proto.model import SourceKind, TestPlan

DEFAULT_PLANS = "plans.toml"


class PlanConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    description: str = ""
    tests: list[str] = []
    keyword: str | None = None
    markers: str | None = None
    required_features: list[str] = []
    timeout_s: float = 1800.0
    sources: list[SourceKind] = msgspec.field(default_factory=lambda: list(SourceKind))
    """Source kinds that get this plan by default."""

    def plan(self) -> TestPlan:
        return TestPlan(name=self.name, tests=self.tests, keyword=self.keyword,
                        markers=self.markers, required_features=sorted(self.required_features),
                        timeout_s=self.timeout_s)


class PlanFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    plans: list[PlanConfig]


class PlanError(ValueError):
    pass


class PlanSet:
    """The configured plans, in file order."""

    def __init__(self, plans: Iterable[PlanConfig]) -> None:
        self.plans = list(plans)
        names = [p.name for p in self.plans]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise PlanError(f"duplicate plan names: {duplicates}")
        self._by_name = {p.name: p for p in self.plans}

    @classmethod
    def load(cls, path: str | Path | None = None) -> PlanSet:
        """``path`` or the default plans shipped with the scheduler."""
        try:
            if path is None:
                text = resources.files(__package__).joinpath(DEFAULT_PLANS).read_text()
                where = f"{__package__}/{DEFAULT_PLANS}"
            else:
                text = Path(path).read_text()
                where = str(path)
            raw = tomllib.loads(text)
            return cls(msgspec.convert(raw, PlanFile).plans)
        except (OSError, tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
            raise PlanError(f"test plans {path or DEFAULT_PLANS}: {exc}") from exc
        except PlanError as exc:
            raise PlanError(f"test plans {where}: {exc}") from exc

    def names(self) -> list[str]:
        return list(self._by_name)

    def for_firmware(
        self, source_kind: SourceKind, requested: list[str] | None
    ) -> list[PlanConfig]:
        """The plans a firmware asks for by name, else its source kind's defaults.

        Unknown names are ignored here (the caller logs them): a typo in one
        plan name must not stop the others from running.
        """
        if requested is not None:
            return [self._by_name[name] for name in requested if name in self._by_name]
        return [p for p in self.plans if source_kind in p.sources]

    def unknown(self, requested: list[str] | None) -> list[str]:
        return [name for name in requested or [] if name not in self._by_name]


def plans_for_device(plans: Iterable[PlanConfig], features: frozenset[str]) -> list[TestPlan]:
    """The plans whose required features the device type has."""
    return [p.plan() for p in plans if features.issuperset(p.required_features)]
