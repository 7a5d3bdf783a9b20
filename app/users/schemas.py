from __future__ import annotations

import re
import zoneinfo
from datetime import datetime
from functools import cache
from typing import Annotated

from pydantic import AfterValidator, BaseModel, EmailStr, Field, StrictBool, StringConstraints

from app.core.schemas import PartialUpdate, RequestModel, ResponseModel
from app.core.text import single_line
from app.users.models import Role

E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def _lower_email(value: str) -> str:
    return value.lower()


def _e164(value: str | None) -> str | None:
    if value is not None and not E164.fullmatch(value):
        raise ValueError("phone must be an E.164 number such as +4915112345678")
    return value


@cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _timezone(value: str) -> str:
    if value not in _timezones():
        raise ValueError(f"{value!r} is not an IANA time zone (for example Europe/Berlin)")
    return value


Email = Annotated[EmailStr, Field(max_length=320), AfterValidator(_lower_email)]
Password = Annotated[str, Field(min_length=8, max_length=128)]
FullName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=255),
    AfterValidator(single_line),
]
Phone = Annotated[str | None, Field(default=None, max_length=32), AfterValidator(_e164)]
TimeZone = Annotated[str, Field(max_length=64), AfterValidator(_timezone)]


class UserRead(ResponseModel):
    id: int
    email: str
    full_name: str
    role: Role
    is_active: bool
    phone: str | None
    timezone: str
    created_at: datetime


class UserSignup(RequestModel):
    email: Email
    password: Password
    full_name: FullName

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"email": "ada@example.com", "password": "a long passphrase", "full_name": "Ada"}
            ]
        }
    }


class UserCreate(RequestModel):
    email: Email
    password: Password
    full_name: FullName
    role: Role = Role.user
    is_active: StrictBool = True
    phone: Phone = None
    timezone: TimeZone | None = None

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "email": "grace@example.com",
                    "password": "another long passphrase",
                    "full_name": "Grace Hopper",
                    "role": "user",
                    "phone": "+15555550123",
                    "timezone": "America/New_York",
                }
            ]
        }
    }


class ProfileUpdate(PartialUpdate):
    nullable_fields = frozenset({"phone"})

    email: Email | None = None
    full_name: FullName | None = None
    phone: Phone = None
    timezone: TimeZone | None = None


class UserUpdateMe(ProfileUpdate):
    """Fields a user may change on their own account. Omitted fields stay as they are.

    Changing the email needs `current_password`: a stolen token alone must not be enough to
    redirect password recovery to someone else's mailbox.
    """

    current_password: Annotated[str, Field(min_length=1, max_length=128)] | None = None

    model_config = {"json_schema_extra": {"examples": [{"full_name": "Ada L.", "phone": None}]}}


class UserUpdate(ProfileUpdate):
    """Fields an admin may change on any account. Omitted fields stay as they are."""

    password: Password | None = None
    role: Role | None = None
    is_active: StrictBool | None = None

    model_config = {"json_schema_extra": {"examples": [{"role": "admin", "is_active": True}]}}


class PasswordChange(RequestModel):
    current_password: Annotated[str, Field(min_length=1, max_length=128)]
    new_password: Password

    model_config = {
        "json_schema_extra": {
            "examples": [{"current_password": "old passphrase", "new_password": "a new passphrase"}]
        }
    }


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105
    expires_in: int = Field(description="Seconds until the token expires")


class PasswordReset(RequestModel):
    token: Annotated[str, Field(min_length=1, max_length=256)]
    new_password: Password

    model_config = {
        "json_schema_extra": {
            "examples": [{"token": "token-from-the-email", "new_password": "a new passphrase"}]
        }
    }
