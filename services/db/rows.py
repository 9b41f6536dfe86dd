"""Reading rows: asyncpg records as msgspec Structs, filters as SQL, one page of a list.

``columns_of`` is the SELECT list of a row Struct, so that a selected column is
named once, by the field that receives it.

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


def columns_of(struct_type: type[msgspec.Struct], table: str = "",
               beyond: type[msgspec.Struct] | None = None, /, **exprs: str | None) -> str:
    """The SELECT list filling the fields of ``struct_type`` (those it adds to its base
    ``beyond``, if given), in order: ``table.field`` (``field`` with no table), or
    ``expr AS field`` for a field in ``exprs``; a field whose expr is None is left out
    (no column fills it: it keeps its default)."""
    names = struct_type.__struct_fields__
    if beyond is not None:
        names = tuple(n for n in names if n not in beyond.__struct_fields__)
    unknown = set(exprs) - set(names)
    if unknown:
        raise ValueError(f"{struct_type.__name__} has no fields {sorted(unknown)}")
    prefix = f"{table}." if table else ""
    return ", ".join(f"{prefix}{name}" if name not in exprs else f"{exprs[name]} AS {name}"
                     for name in names if name not in exprs or exprs[name] is not None)


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


async def fetch_page(conn: asyncpg.Connection, struct_type: type[S], *,
                     columns: str | None = None, source: str, where: Where, order: str, page: Page,
                     count_source: str | None = None) -> tuple[list[S], int]:
    """``SELECT columns source WHERE where ORDER BY order`` one page at a time, and how
    many rows match in all (counted over ``count_source``, by default ``source``).
    ``order`` must be total (end in a unique key) so that pages never skip or repeat.
    ``columns`` defaults to ``columns_of(struct_type)``."""
    total = await conn.fetchval(f"SELECT count(*) {count_source or source} WHERE {where}",
                                *where.args)
    args = list(where.args)
    rows = await conn.fetch(
        f"SELECT {columns or columns_of(struct_type)} {source} WHERE {where} ORDER BY {order} "
        f"LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}", *args, page.limit, page.offset)
    return as_structs(rows, struct_type), total
