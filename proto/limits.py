"""Field types that carry what PostgreSQL would refuse, so decoding refuses it first.

A message that decodes but then fails in the database is redelivered until
``max_deliver`` with a traceback each time; checked here, the consumer
terminates it once with one clear log line (``DecodeError``). msgspec checks
these constraints when decoding only, not when a Struct is built in code.

- No NUL in names and ids: PostgreSQL ``text`` cannot hold U+0000, and no name
  has one. Free text (console excerpts, error messages) may carry NUL bytes
  from a noisy serial line: refusing it would lose a whole result, so it
  decodes, and whatever stores it passes it through :func:`storable_text`.
- Names and ids are short: they are indexed, and a btree entry over ~2.7 kB fails.
- Integers fit their columns (``integer`` is 32-bit, ``bigint`` 64-bit).
- Seconds are finite and not absurd (``double precision`` takes inf, intervals do not).
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

NO_NUL = "^[^\x00]*$"
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
NAME_MAX = 512
"""Characters; at most 4 bytes each, so an index entry stays under PostgreSQL's limit."""

Text = str
"""Free text (messages, log text, URLs): any length; NUL removed on storing."""
Name = Annotated[str, Meta(pattern=NO_NUL, max_length=NAME_MAX)]
"""Ids and names (job id, lab, device, device type, ...)."""
Int32 = Annotated[int, Meta(ge=-INT32_MAX - 1, le=INT32_MAX)]
Count = Annotated[int, Meta(ge=0, le=INT32_MAX)]
"""A non-negative ``integer`` column (consecutive failures, sequence numbers, runs)."""
Attempt = Annotated[int, Meta(ge=1, le=INT32_MAX)]
Size = Annotated[int, Meta(ge=0, le=INT64_MAX)]
"""A ``bigint`` byte count."""
Seconds = Annotated[float, Meta(ge=0, le=1e9)]


def storable_text(value: str | None) -> str | None:
    """Free text as PostgreSQL ``text`` takes it: without NUL characters."""
    return value.replace("\x00", "") if value else value
