"""Reversible escaping of arbitrary names into NATS subject tokens and KV keys.

Device types (``ath79/generic/tplink_archer-c7-v2``), lab names and OpenWrt
profile ids contain characters a subject token must not (``.``, ``*``, ``>``,
whitespace) and characters that are legal but awkward. Names stay readable:
the common characters pass through unchanged; everything else, including the
escape character itself, becomes ``<escape>XX`` per UTF-8 byte. The empty name,
which would be an empty (invalid) token, is the lone escape character.

KV keys allow fewer characters than subject tokens (``[-/_=.A-Za-z0-9]``), so
they get their own alphabet with ``=`` as the escape.
"""

from __future__ import annotations

import re
import string

_HEX = "0123456789ABCDEF"


class TokenError(ValueError):
    """A string that this escaping did not produce."""


class Escaping:
    def __init__(self, safe: str, escape: str) -> None:
        if escape in safe:
            raise ValueError(f"escape character {escape!r} is one of the safe characters")
        self.safe = frozenset(safe)
        self.escape = escape
        chars = re.escape(safe).replace("/", "\\/")
        esc = re.escape(escape)
        self._pattern = re.compile(rf"^(?:{esc}|(?:[{chars}]|{esc}[0-9A-F]{{2}})+)$")

    def encode(self, name: str) -> str:
        if name == "":
            return self.escape
        out: list[str] = []
        for char in name:
            if char in self.safe:
                out.append(char)
            else:
                for byte in char.encode("utf-8", "surrogatepass"):
                    out.append(self.escape + _HEX[byte >> 4] + _HEX[byte & 0xF])
        return "".join(out)

    def decode(self, token: str) -> str:
        if not self._pattern.match(token):
            raise TokenError(f"not an escaped name: {token!r}")
        if token == self.escape:
            return ""
        raw = bytearray()
        i = 0
        while i < len(token):
            if token[i] == self.escape:
                raw.append(int(token[i + 1 : i + 3], 16))
                i += 3
            else:
                raw.extend(token[i].encode("ascii"))
                i += 1
        if 0 in raw:  # no name has a NUL, and PostgreSQL text cannot hold one
            raise TokenError(f"{token!r} decodes to a name with a NUL character")
        try:
            return raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as exc:
            raise TokenError(f"{token!r} does not decode to UTF-8") from exc


SUBJECT_TOKEN = Escaping(string.ascii_letters + string.digits + "_-,/+=@:", "~")
KV_KEY_PART = Escaping(string.ascii_letters + string.digits + "_-/", "=")

encode_token = SUBJECT_TOKEN.encode
decode_token = SUBJECT_TOKEN.decode
encode_key_part = KV_KEY_PART.encode
decode_key_part = KV_KEY_PART.decode

_KV_KEY_RE = re.compile(r"^[-/_=.a-zA-Z0-9]+$")


def is_valid_token(token: str) -> bool:
    """True if ``token`` is usable as one NATS subject token."""
    return (
        bool(token)
        and token.isascii()
        and token.isprintable()
        and not any(c in token for c in ".*> \t\r\n")
    )


def is_valid_kv_key_part(part: str) -> bool:
    return bool(_KV_KEY_RE.match(part)) and "." not in part
