"""Secrets the service must read back (webhook signing secrets) are stored encrypted.

Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`) under a key derived from SECRET_KEY
with HKDF, so a copy of the database alone does not reveal them. Keys derived from
PREVIOUS_SECRET_KEYS still decrypt, so SECRET_KEY can be changed without losing the secrets;
a value is re-encrypted under the current key whenever it is written again (a rotation).
Values written before encryption existed (no `fernet:` prefix) are read as they are and
encrypted by `incident-management migrate`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.config import Settings

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
        self._keys = MultiFernet([_fernet(key) for key in (secret_key, *previous)])

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


def is_sealed(stored: str) -> bool:
    return stored.startswith(PREFIX)
