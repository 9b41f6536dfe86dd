"""Bearer tokens configured as sha256 digests, for every HTTP service.

A site configures ``name -> sha256 hex digest of the token``, so a leaked
config file does not leak a token; the name says who called (the submitter of
an upload, the operator who retried a job).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping


class Unauthorized(Exception):
    """No usable bearer token; the message says which way (for a 401 body)."""


def token_digest(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()


def bearer_token_name(authorization: str, digests: Mapping[str, str]) -> str:
    """The name of the token an ``Authorization`` header carries; ``Unauthorized`` otherwise."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token")
    digest = token_digest(token)
    found = None
    # Compare with every digest (constant time each) so timing says nothing of which matched.
    for name, expected in digests.items():
        if hmac.compare_digest(digest, expected.strip().lower()):
            found = found or name
    if found is None:
        raise Unauthorized("invalid token")
    return found
