"""Console text as HTML: terminal colours rendered, every other escape dropped, line anchors.

A serial console carries SGR colour codes (``ESC[1;31m``), cursor movement,
OSC titles and stray control bytes. Colours become ``<span class="a-31">``;
everything else that is not text is removed; the text itself is escaped.
"""

from __future__ import annotations

import html
import re

from wrtci.services.api.html import Markup

# CSI (ESC [ ... final byte), OSC (ESC ] ... BEL or ESC \), other two-byte escapes.
_ESCAPE = re.compile(r"\x1b\[([0-9;?]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def strip(text: str) -> str:
    return _CONTROL.sub("", _ESCAPE.sub("", text.replace("\r\n", "\n")))


class _Style:
    def __init__(self) -> None:
        self.classes: list[str] = []

    def apply(self, params: str) -> None:
        codes = [int(p) for p in params.split(";") if p.isdigit()] or [0]
        for code in codes:
            if code == 0:
                self.classes = []
            elif code == 1:
                self.classes.append("a-bold")
            elif code == 2:
                self.classes.append("a-dim")
            elif code == 4:
                self.classes.append("a-ul")
            elif 30 <= code <= 37 or 90 <= code <= 97:
                self.classes = [c for c in self.classes if not c[2:].isdigit()]
                self.classes.append(f"a-{30 + (code % 10)}")
            elif code == 39:
                self.classes = [c for c in self.classes if not c[2:].isdigit()]


def _line_html(line: str, style: _Style) -> str:
    out, pos = [], 0
    open_span = bool(style.classes)
    if open_span:
        out.append(f'<span class="{" ".join(style.classes)}">')
    for match in _ESCAPE.finditer(line):
        out.append(html.escape(_CONTROL.sub("", line[pos:match.start()]), quote=False))
        pos = match.end()
        if match.group(2) == "m":
            if open_span:
                out.append("</span>")
            style.apply(match.group(1))
            open_span = bool(style.classes)
            if open_span:
                out.append(f'<span class="{" ".join(style.classes)}">')
    out.append(html.escape(_CONTROL.sub("", line[pos:]), quote=False))
    if open_span:
        out.append("</span>")
    return "".join(out)


def log_lines(text: str, first_line: int = 1, anchor: str = "L") -> Markup:
    """One ``<div id="L12">`` per line, with a link to itself, colours as spans."""
    style, out = _Style(), []
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, first_line):
        # A carriage return redraws the line: the last redraw is what a terminal shows.
        line = line.rsplit("\r", 1)[-1] if "\r" in line.rstrip("\r") else line.rstrip("\r")
        ident = f"{anchor}{number}"
        out.append(f'<div id="{ident}"><a class="n" href="#{ident}">{number}</a>'
                   f"{_line_html(line, style)}</div>")
    return Markup("".join(out))
