"""Secrets the service must read back (webhook signing secrets) are stored encrypted.

Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`) under a key derived from SECRET_KEY
with HKDF, so a copy of the database alone does not reveal them. Keys derived from
PREVIOUS_SECRET_KEYS still decrypt, so SECRET_KEY can be changed without losing the secrets;
`incident-management migrate` re-encrypts every value under the current key (after which the
old key may be dropped), and encrypts the values written before encryption existed (no
`fernet:` prefix), which are read as they are until then.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.core.config import Settings

PREFIX = "fernet:"
PURPOSE = b"incident-management: secrets at rest, v1"


class Unreadable(Exception):
    """Encrypted under a key that is neither SECRET_KEY nor one of PREVIOUS_SECRET_KEYS."""


def _fernet(secret_key: str) -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=PURPOSE).derive(
        secret_key.encode()
    )
    return Fernet(base64.urlsafe_b64encode(derived))


class Sealer:
    def __init__(self, secret_key: str, previous: Iterable[str] = ()) -> None:
        self._current = _fernet(secret_key)
        self._keys = MultiFernet([self._current, *(_fernet(key) for key in previous)])

    @classmethod
    def of(cls, settings: Settings) -> Sealer:
        return cls(settings.secret_key, settings.previous_secret_key_list)

    def seal(self, plain: str) -> str:
        return PREFIX + self._keys.encrypt(plain.encode()).decode()

    def open(self, stored: str) -> str:
        if not is_sealed(stored):
            return stored  # written before encryption at rest; `migrate` seals it
        try:
            return self._keys.decrypt(stored.removeprefix(PREFIX).encode()).decode()
        except InvalidToken as exc:
            raise Unreadable(
                "encrypted under another SECRET_KEY: add the old one to PREVIOUS_SECRET_KEYS"
            ) from exc

    def reseal(self, stored: str) -> str | None:
        """`stored` encrypted under the current key, or None when it already is (plain text
        from before encryption, or encrypted under a previous key, is brought up to date)."""
        if not is_sealed(stored):
            return self.seal(stored)
        token = stored.removeprefix(PREFIX).encode()
        try:
            self._current.decrypt(token)
        except InvalidToken:
            try:
                return PREFIX + self._keys.rotate(token).decode()
            except InvalidToken as exc:
                raise Unreadable(
                    "encrypted under none of SECRET_KEY, PREVIOUS_SECRET_KEYS"
                ) from exc
        return None


def is_sealed(stored: str) -> bool:
    return stored.startswith(PREFIX)
