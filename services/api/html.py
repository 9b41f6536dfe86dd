"""A very small HTML builder whose default is escaping.

Every value put into markup goes through ``escape`` unless it is already
``Markup`` (built here from escaped parts). So a test path such as
``<script>`` can only ever be text; there is no way to forget to escape.
"""

from __future__ import annotations

import datetime as dt
import html
import string
from collections.abc import Iterable
from urllib.parse import urlencode


class Markup(str):
    """HTML that is safe to insert as is."""

    __slots__ = ()


def escape(value: object) -> Markup:
    if isinstance(value, Markup):
        return value
    if value is None:
        return Markup("")
    if isinstance(value, dt.datetime):
        value = value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup(html.escape(str(value), quote=True))


def render(template: str, **values: object) -> Markup:
    """``$name`` placeholders in ``template`` (trusted markup) filled with escaped values."""
    return Markup(string.Template(template).substitute(
        {key: escape(value) for key, value in values.items()}))


def join(parts: Iterable[object], sep: str = "") -> Markup:
    return Markup(sep.join(escape(part) for part in parts))


def element(tag: str, content: object = "", **attrs: object) -> Markup:
    """``<tag attr="...">content</tag>``; ``class_`` stands for ``class``."""
    rendered = "".join(f' {name.rstrip("_")}="{escape(value)}"'
                       for name, value in attrs.items() if value is not None)
    return Markup(f"<{tag}{rendered}>{escape(content)}</{tag}>")


def link(href: str, text: object) -> Markup:
    return element("a", text, href=href)


def query(**params: object) -> str:
    return urlencode({k: v for k, v in params.items() if v is not None and v != ""})


def table(headers: Iterable[str], rows: Iterable[Iterable[object]]) -> Markup:
    head = join(element("th", h) for h in headers)
    body = join(element("tr", join(element("td", cell) for cell in row)) for row in rows)
    return render("<table><thead><tr>$head</tr></thead><tbody>$body</tbody></table>",
                  head=head, body=body)


def counts(values: dict[str, int]) -> Markup:
    """``PASS 3 · FAIL 1``, each with a class for its colour."""
    return join((element("span", f"{key} {values[key]}", class_=f"s-{key.lower()}")
                 for key in sorted(values)), " ")
