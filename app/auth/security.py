"""Access tokens (PyJWT): made at sign-in, checked on every API request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt

from app.core.config import Settings
from app.core.schemas import MAX_ID


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
        user_id, version = int(claims["sub"]), int(claims["ver"])
    except (TypeError, ValueError):
        return None
    if not (1 <= user_id <= MAX_ID and 0 <= version <= MAX_ID):  # a database integer
        return None
    return TokenClaims(user_id=user_id, token_version=version)
