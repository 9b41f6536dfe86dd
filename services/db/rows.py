"""Reading rows: asyncpg records as msgspec Structs, filters as SQL, one page of a list.

``Where`` builds a WHERE clause from a filter Struct and a table of conditions
(field name -> SQL), so that a filter's SQL is written once per field and only
the filters that are set reach the database. ``fetch_page`` is every list's
"the total that match, then one page of them in a stable order".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

import asyncpg
import msgspec

S = TypeVar("S", bound=msgspec.Struct)


def as_structs(rows: Iterable[asyncpg.Record], struct_type: type[S]) -> list[S]:
    return [msgspec.convert(dict(row), struct_type) for row in rows]


def as_struct(row: asyncpg.Record | None, struct_type: type[S]) -> S | None:
    return None if row is None else msgspec.convert(dict(row), struct_type)


async def fetch_rows(conn: asyncpg.Connection, struct_type: type[S], sql: str,
                     *args: object) -> list[S]:
    """The rows of ``sql`` as ``struct_type``, whose fields name the selected columns."""
    return as_structs(await conn.fetch(sql, *args), struct_type)


async def fetch_row(conn: asyncpg.Connection, struct_type: type[S], sql: str,
                    *args: object) -> S | None:
    """The first row of ``sql`` as ``struct_type``; None: no row."""
    return as_struct(await conn.fetchrow(sql, *args), struct_type)


class Page(msgspec.Struct, kw_only=True):
    limit: int
    offset: int


class Where:
    """The AND of conditions (trusted SQL text); ``{}`` in one stands for its value,
    which is passed as a query argument (``args``)."""

    def __init__(self, args: list[object] | None = None) -> None:
        self.args: list[object] = [] if args is None else args
        """Shared with another Where for a second clause of the same query."""
        self.parts: list[str] = []

    def param(self, value: object) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def add(self, condition: str, value: object) -> Where:
        """With ``{}``: when ``value`` is not None, compare it. Without: when ``value``
        is true (a flag)."""
        if "{}" in condition:
            if value is not None:
                self.parts.append(f"({condition.replace('{}', self.param(value))})")
        elif value:
            self.parts.append(f"({condition})")
        return self

    def match(self, conditions: Mapping[str, str], flt: msgspec.Struct) -> Where:
        """One condition per field of the filter ``flt`` (its name -> SQL)."""
        for name, condition in conditions.items():
            self.add(condition, getattr(flt, name))
        return self

    def __str__(self) -> str:
        return " AND ".join(self.parts) or "TRUE"


async def fetch_page(conn: asyncpg.Connection, struct_type: type[S], *, columns: str,
                     source: str, where: Where, order: str, page: Page,
                     count_source: str | None = None) -> tuple[list[S], int]:
    """``SELECT columns source WHERE where ORDER BY order`` one page at a time, and how
    many rows match in all (counted over ``count_source``, by default ``source``).
    ``order`` must be total (end in a unique key) so that pages never skip or repeat."""
    total = await conn.fetchval(f"SELECT count(*) {count_source or source} WHERE {where}",
                                *where.args)
    args = list(where.args)
    rows = await conn.fetch(
        f"SELECT {columns} {source} WHERE {where} ORDER BY {order} "
        f"LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}", *args, page.limit, page.offset)
    return as_structs(rows, struct_type), total
