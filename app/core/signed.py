"""Signed, self-contained tokens: claims that anyone may read but nobody may forge or change.

A token is `<base64url(JSON claims)>.<base64url(HMAC-SHA256)>`, under a key derived from
SECRET_KEY with HKDF for one purpose (a token made for one purpose never passes for another).
Keys derived from PREVIOUS_SECRET_KEYS still verify, so changing SECRET_KEY does not kill the
tokens already handed out. What the claims mean, and when they stop counting, is up to the
caller: this only says whether the service made the token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterable
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.core.config import Settings

# Longer than any token this service makes: a longer one is refused before any work.
MAX_LENGTH = 1024


def _key(secret_key: str, purpose: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose)
    return hkdf.derive(secret_key.encode())


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    def __init__(self, secret_key: str, previous: Iterable[str] = (), *, purpose: bytes) -> None:
        self._key = _key(secret_key, purpose)
        self._keys = [self._key, *(_key(key, purpose) for key in previous)]

    @classmethod
    def of(cls, settings: Settings, *, purpose: bytes) -> Signer:
        return cls(settings.secret_key, settings.previous_secret_key_list, purpose=purpose)

    def _mac(self, key: bytes, body: str) -> bytes:
        return hmac.new(key, body.encode("ascii"), hashlib.sha256).digest()

    def sign(self, claims: dict[str, Any]) -> str:
        body = _encode(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        return f"{body}.{_encode(self._mac(self._key, body))}"

    def verify(self, token: str) -> dict[str, Any] | None:
        """The claims of a token this service signed (with SECRET_KEY or a previous key), or
        None for anything else: garbled, changed, signed with another key or for another
        purpose."""
        if len(token) > MAX_LENGTH or token.count(".") != 1:
            return None
        body, _, signature = token.partition(".")
        try:
            given = _decode(signature)
            body.encode("ascii")
        except (binascii.Error, ValueError):
            return None
        if _encode(given) != signature:  # one spelling only: no padding, no stray characters
            return None
        if not any(hmac.compare_digest(given, self._mac(key, body)) for key in self._keys):
            return None
        try:
            claims = json.loads(_decode(body))
        except (binascii.Error, ValueError):
            return None
        return claims if isinstance(claims, dict) else None
