"""Signing in with a password, under the login limits: shared by the API's token endpoint and
the console's sign-in form."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from datetime import datetime

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import ratelimit
from app.core.config import Settings
from app.users import passwords
from app.users import service as user_service
from app.users.models import User


def client_bucket(request: Request) -> str:
    """The client's address as a bucket name (behind a proxy, uvicorn's FORWARDED_ALLOW_IPS makes
    it the real one): an IPv6 client by its /64, as one host gets a whole /64; an IPv4 address
    mapped into IPv6 as itself; anything else (an unparsable forwarded value) by a short digest,
    so names stay short whatever the header said."""
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "other:" + hashlib.sha256(host.encode(errors="replace")).hexdigest()[:24]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def account_bucket(settings: Settings, email: str) -> str:
    """A bucket name for an email, known account or not: a keyed digest, so a copy of the
    database does not tell which addresses were tried (changing SECRET_KEY resets the counts)."""
    normalized = email.strip().lower().encode()
    key = hashlib.sha256(f"rate-limit:{settings.secret_key}".encode()).digest()
    return hmac.new(key, normalized, hashlib.sha256).hexdigest()[:40]


def _login_buckets(
    request: Request, settings: Settings, email: str
) -> dict[str, ratelimit.Limit | None]:
    lockout = settings.login_lockout_minutes * 60
    return {
        f"login:ip:{client_bucket(request)}": ratelimit.Limit.per(
            settings.rate_limit_login_per_ip_per_minute, 60
        ),
        f"login:account:{account_bucket(settings, email)}": ratelimit.Limit.per(
            settings.login_lockout_failures, lockout * settings.login_lockout_failures
        ),
    }


async def authenticate_limited(
    request: Request,
    session: AsyncSession,
    settings: Settings,
    *,
    email: str,
    password: str,
    now: datetime,
    detail: str,
) -> User | None:
    """A sign-in attempt (the API's token or the console's session), under the login limits:
    raises TooManyRequests when they refuse; a success clears the account's count."""
    buckets = _login_buckets(request, settings, email)
    await ratelimit.check(request.app.state.sessionmaker, buckets, now=now, detail=detail)
    user = await user_service.authenticate(session, email=email, password=password)
    if user is not None:
        await ratelimit.refill(session, f"login:account:{account_bucket(settings, email)}", now=now)
    return user


async def password_confirmed(
    request: Request,
    session: AsyncSession,
    settings: Settings,
    *,
    user: User,
    password: str,
    now: datetime,
) -> bool:
    """Is `password` the signed-in user's own (to change their password or email)? Counted in
    the same limits as signing in, so that a stolen token cannot guess the password past the
    account's lock-out, nor confirm one while the account is locked. Call it before writing
    anything in `session`: it commits."""
    # The attempt is counted in a transaction of its own, which must stay when the request fails;
    # the request's has only read the user so far: end it, as SQLite has one writer at a time.
    await session.commit()
    buckets = _login_buckets(request, settings, user.email)
    await ratelimit.check(
        request.app.state.sessionmaker, buckets, now=now, detail="Too many password attempts"
    )
    if not passwords.verify_password(password, user.hashed_password):
        return False
    account = f"login:account:{account_bucket(settings, user.email)}"
    await ratelimit.refill(session, account, now=now)
    return True
