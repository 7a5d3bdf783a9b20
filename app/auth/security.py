"""Password hashing (argon2 through pwdlib) and access tokens (PyJWT)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from app.core.config import Settings

password_hash = PasswordHash((Argon2Hasher(),))

# Verified against when the account does not exist: a wrong email costs as much as a wrong password.
_DUMMY_HASH = password_hash.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return password_hash.hash(password)


def verify_password(password: str, hashed: str | None) -> bool:
    if hashed is None:
        password_hash.verify(password, _DUMMY_HASH)
        return False
    return password_hash.verify(password, hashed)


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_in: int


def create_access_token(
    settings: Settings, *, user_id: int, token_version: int, now: datetime
) -> AccessToken:
    lifetime = timedelta(minutes=settings.access_token_expire_minutes)
    claims = {
        "sub": str(user_id),
        "ver": token_version,
        "type": "access",
        "iat": int(now.timestamp()),
        "exp": int((now + lifetime).timestamp()),
    }
    token = jwt.encode(claims, settings.secret_key, algorithm=settings.algorithm)
    return AccessToken(token=token, expires_in=int(lifetime.total_seconds()))


@dataclass(frozen=True)
class TokenClaims:
    user_id: int
    token_version: int


def decode_access_token(settings: Settings, token: str, *, now: datetime) -> TokenClaims | None:
    """The claims of a valid access token, or None. Only the configured algorithm is accepted."""
    try:
        claims = jwt.decode(
            token,
            settings.secret_key,
            algorithms=[settings.algorithm],
            options={"require": ["sub", "exp", "iat", "ver"], "verify_exp": False},
        )
    except jwt.PyJWTError:
        return None
    # Expiry is checked against the injected clock rather than the wall clock.
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or exp <= now.timestamp():
        return None
    if claims.get("type") != "access":
        return None
    try:
        return TokenClaims(user_id=int(claims["sub"]), token_version=int(claims["ver"]))
    except (TypeError, ValueError):
        return None


def new_opaque_token() -> tuple[str, str]:
    """A URL-safe secret (256 bits) and the SHA-256 hex digest that is stored instead of it."""
    token = secrets.token_urlsafe(32)
    return token, hash_opaque_token(token)


def hash_opaque_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
