"""Failure signatures (data, from a TOML file) and the console-log scanner."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import msgspec

from wrtci.services.results.config import DEFAULT_SIGNATURES

MAX_LINES_PER_MATCH = 20
MAX_LINE_LENGTH = 1000


class SignatureError(ValueError):
    pass


class Signature(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    title: str
    pattern: str
    culprit: str = "code"
    version: int = 1
    before: int = 0
    after: int = 0
    last_line: bool = False

    @property
    def issue_id(self) -> str:
        return f"wrtci:logspec:{self.name}"


class _File(msgspec.Struct, forbid_unknown_fields=True):
    signature: list[Signature] = []


class LogLine(msgspec.Struct, frozen=True):
    number: int
    """1-based line number in the console log."""
    text: str


class SignatureMatch(msgspec.Struct, frozen=True, kw_only=True):
    signature: Signature
    lines: list[LogLine]
    """Every matching line (up to a bound), in log order."""
    excerpt: str
    """The first match with its context lines."""


class SignatureSet:
    def __init__(self, signatures: list[Signature]) -> None:
        names = [s.name for s in signatures]
        if len(set(names)) != len(names):
            raise SignatureError(f"duplicate signature names in {names}")
        self.signatures = signatures
        self._compiled = []
        for sig in signatures:
            if sig.culprit not in ("code", "tool", "harness"):
                raise SignatureError(f"{sig.name}: culprit must be code, tool or harness")
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", sig.name):
                raise SignatureError(f"{sig.name!r}: name must be [a-z0-9_-]")
            try:
                self._compiled.append((sig, re.compile(sig.pattern)))
            except re.error as exc:
                raise SignatureError(f"{sig.name}: bad pattern: {exc}") from exc

    @classmethod
    def load(cls, path: str | Path | None = None) -> SignatureSet:
        path = Path(path) if path else DEFAULT_SIGNATURES
        try:
            raw = tomllib.loads(path.read_text())
            return cls(msgspec.convert(raw, _File).signature)
        except (OSError, tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
            raise SignatureError(f"{path}: {exc}") from exc

    def scan(self, log: str) -> list[SignatureMatch]:
        """Every signature found in ``log``, one match per signature."""
        lines = log.splitlines()
        last_content = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
        found: dict[str, tuple[Signature, list[int]]] = {}
        for index, line in enumerate(lines):
            for sig, regex in self._compiled:
                if regex.search(line):
                    if sig.last_line and index != last_content:
                        continue
                    hits = found.setdefault(sig.name, (sig, []))[1]
                    if len(hits) < MAX_LINES_PER_MATCH:
                        hits.append(index)
        matches = []
        for sig, hits in found.values():
            first = hits[0]
            context = lines[max(0, first - sig.before): first + sig.after + 1]
            matches.append(SignatureMatch(
                signature=sig,
                lines=[LogLine(i + 1, lines[i][:MAX_LINE_LENGTH]) for i in hits],
                excerpt="\n".join(line[:MAX_LINE_LENGTH] for line in context),
            ))
        return matches
