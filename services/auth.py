"""API tokens: issued by ``wrtci token create``, stored hashed in PostgreSQL.

A token is shown once, when it is created; the ``api_tokens`` table keeps
only its sha256 digest, so a leaked database dump or backup leaks no token.
(A digest without a salt is enough here: a token is 256 random bits, not a
password, so there is nothing to guess from a digest.)

Scopes say what a token may do:

- ``upload``: the trigger's ``POST /api/v1/firmware`` and its buildbot webhook;
- ``control``: the API's retry / cancel requests;
- ``read``: the API's pages and REST reads, when ``[api] require_read_token``
  is set (reading is open by default). Every valid token may read: whoever
  may upload or retry may also see the results.

A refused token gets 401 (missing, unknown, expired, revoked) or 403 (valid,
but not of the scope the endpoint needs), each with its reason; the server
logs the refusal with the token's name, never the token. A wrong token
changes nothing: only a token that is let through records its last use.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import secrets

import asyncpg
import msgspec

from wrtci.services.db.rows import columns_of, fetch_row, fetch_rows

log = logging.getLogger(__name__)

SCOPES = ("upload", "control", "read")
TOKEN_PREFIX = "wrtci_"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")
LAST_USE_PRECISION_S = 60
"""Last use is written at most once a minute per token: a busy reader does not
turn every page view into a write."""
ACQUIRE_TIMEOUT_S = 10.0


class TokenRefused(Exception):
    """The request's token does not allow it; ``status`` and the message go to the client."""

    status = 401

    def __init__(self, reason: str, name: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.name = name


class Unauthorized(TokenRefused):
    """No usable token: missing, unknown, expired or revoked (401)."""


class Forbidden(TokenRefused):
    """A valid token of another scope (403)."""

    status = 403


class TokenError(ValueError):
    """A bad name or scope, or a name already taken (for the CLI)."""


class TokenInfo(msgspec.Struct, kw_only=True, frozen=True):
    """A token as ``wrtci token list`` shows it: never the secret, never the digest."""

    name: str
    scopes: list[str]
    created_at: dt.datetime
    expires_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    last_used_at: dt.datetime | None = None

    def state(self, now: dt.datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    # surrogatepass: header bytes that are not UTF-8 still hash (to no token), never raise
    return hashlib.sha256(token.strip().encode("utf-8", "surrogatepass")).hexdigest()


def bearer_token(authorization: str) -> str:
    """The token of an ``Authorization: Bearer ...`` header; ``Unauthorized`` otherwise."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token")
    return token.strip()


def check_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise TokenError(f"scope must be one of {', '.join(SCOPES)} (got {', '.join(unknown)})")
    return [s for s in SCOPES if s in scopes]


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise TokenError(f"bad token name {name!r}: letters, digits and _.@- (up to 100), "
                         "starting with a letter or digit")
    return name


# -- issuing ---------------------------------------------------------------------------


async def insert_token(conn: asyncpg.Connection, name: str, scopes: list[str], digest: str,
                       expires_at: dt.datetime | None = None) -> None:
    """Store a token's digest; ``TokenError`` when the name is taken (even by a revoked
    token: its row stays, so that its late uses are refused with the reason)."""
    try:
        await conn.execute(
            "INSERT INTO api_tokens (name, scopes, digest, expires_at) VALUES ($1, $2, $3, $4)",
            check_name(name), check_scopes(scopes), digest, expires_at)
    except asyncpg.UniqueViolationError:
        raise TokenError(f"a token named {name!r} exists already "
                         "(names are never reused; choose another)") from None


async def create_token(conn: asyncpg.Connection, name: str, scopes: list[str],
                       expires_at: dt.datetime | None = None) -> str:
    """A new token; the returned secret is stored nowhere."""
    token = generate_token()
    await insert_token(conn, name, scopes, token_digest(token), expires_at)
    return token


_COLUMNS = columns_of(TokenInfo)


async def list_tokens(conn: asyncpg.Connection) -> list[TokenInfo]:
    return await fetch_rows(conn, TokenInfo,
                            f"SELECT {_COLUMNS} FROM api_tokens ORDER BY created_at, name")


async def find_token(conn: asyncpg.Connection, token: str) -> TokenInfo | None:
    """The token a secret belongs to (None: unknown), e.g. to reuse a stored one."""
    return await fetch_row(conn, TokenInfo,
                           f"SELECT {_COLUMNS} FROM api_tokens WHERE digest = $1",
                           token_digest(token))


async def revoke_token(conn: asyncpg.Connection, name: str) -> TokenInfo | None:
    """Refuse the token from now on (again: unchanged); None when there is no such token."""
    return await fetch_row(conn, TokenInfo,
                           f"""UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now())
                                WHERE name = $1 RETURNING {_COLUMNS}""", name)


# -- checking --------------------------------------------------------------------------


async def authorize(pool: asyncpg.Pool, authorization: str, scope: str, *,
                    path: str = "") -> str:
    """The name of the token in ``authorization`` if it may act in ``scope``.

    Raises ``Unauthorized`` (401) or ``Forbidden`` (403) with the reason, after
    logging it (token name, never the token). A database failure propagates:
    the caller answers 503, not 401.
    """
    try:
        digest = token_digest(bearer_token(authorization))
        async with pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            row = await conn.fetchrow(
                """SELECT name, scopes, revoked_at, expires_at,
                          expires_at IS NOT NULL AND expires_at <= now() AS expired
                     FROM api_tokens WHERE digest = $1""", digest)
            if row is None:
                raise Unauthorized("invalid token")
            name = row["name"]
            if row["revoked_at"] is not None:
                raise Unauthorized(f"token {name!r} was revoked at "
                                   f"{row['revoked_at']:%Y-%m-%d %H:%M:%S %Z}", name)
            if row["expired"]:
                raise Unauthorized(f"token {name!r} expired at "
                                   f"{row['expires_at']:%Y-%m-%d %H:%M:%S %Z}", name)
            if scope != "read" and scope not in row["scopes"]:
                raise Forbidden(f"token {name!r} has scope {', '.join(row['scopes'])}; "
                                f"this needs scope {scope}", name)
            await conn.execute(
                f"""UPDATE api_tokens SET last_used_at = now()
                     WHERE name = $1 AND (last_used_at IS NULL OR
                           last_used_at < now() - interval '{LAST_USE_PRECISION_S} seconds')""",
                name)
    except TokenRefused as exc:
        log.warning("api token refused", extra={"token_name": exc.name, "reason": exc.reason,
                                                "scope": scope, "status": exc.status,
                                                "path": path})
        raise
    return name
