"""Opaque bearer secrets (integration keys, calendar feeds, console sessions, password resets):
made here, stored only as hashes.

A token is at least 192 random bits, so a plain SHA-256 is enough to store it: nobody can guess
their way back from the hash, and looking a token up by its hash takes the same time whatever it
is.
"""

from __future__ import annotations

import hashlib
import secrets


def new_token() -> str:
    """192 random bits, URL-safe (32 characters): usable in a header, a URL or a routing key."""
    return secrets.token_urlsafe(24)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_long_token() -> tuple[str, str]:
    """A URL-safe secret of 256 bits and the hash that is stored instead of it."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)
