from __future__ import annotations

from datetime import datetime, time
from functools import cache
from typing import Annotated, Literal, Self
from zoneinfo import available_timezones

from pydantic import AfterValidator, Field, StringConstraints, WithJsonSchema, model_validator

from app.core.schemas import MAX_ID, PartialUpdate, RequestModel, ResponseModel, UtcDateTime
from app.core.text import single_line
from app.teams.schemas import TEAM_ID, OptionalTeamId
from app.users.models import Role

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
Day = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(single_line),
]
Description = Annotated[str, StringConstraints(max_length=20_000)]
UserId = Annotated[int, Field(ge=1, le=MAX_ID)]


@cache
def _zones() -> frozenset[str]:
    """IANA zone names (the system's tz database lists a few files that are not zones)."""
    return frozenset(
        name for name in available_timezones()
        if name not in {"localtime", "posixrules", "Factory"}
        and not name.startswith(("posix/", "right/"))
    )  # fmt: skip


def _zone(name: str) -> str:
    if name not in _zones():
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. Europe/Berlin)")
    return name


EARLIEST, LATEST = datetime(1970, 1, 1), datetime(2200, 1, 1)  # noqa: DTZ001 (wall-clock bounds)


def in_range(value: datetime) -> datetime:
    """Dates the calendar arithmetic can handle comfortably: 1970 to 2199."""
    if not EARLIEST <= value.replace(tzinfo=None) < LATEST:
        raise ValueError("dates must be between 1970 and 2199")
    return value


TimeZone = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_zone)]


def _naive(value: datetime) -> datetime:
    if value.tzinfo is not None:
        raise ValueError(
            "a layer's start is a wall-clock time in the schedule's zone: give it without an "
            "offset (e.g. 2026-03-27T09:00:00)"
        )
    return in_range(value)


class Restriction(RequestModel):
    days: list[Day] = Field(
        min_length=1, max_length=7, description="Days on which the window starts"
    )
    start_time: time = Field(description="Local time the window opens, e.g. 09:00")
    end_time: time = Field(
        description="Local time it closes; at or before start_time: the next day (equal: 24 h)"
    )

    @model_validator(mode="after")
    def _plain_times(self) -> Self:
        if self.start_time.tzinfo is not None or self.end_time.tzinfo is not None:
            raise ValueError("restriction times are local: give them without an offset")
        return self


# A wall-clock time has no offset, so it is not an RFC 3339 `date-time`: documented as text of
# that shape (years 1970–2199) instead, in requests and answers alike.
LOCAL_TIME_SCHEMA = {
    "type": "string",
    "pattern": r"^(19[7-9]\d|2[01]\d\d)-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
    r"T([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?$",
    "examples": ["2026-03-27T09:00:00"],
}
LocalDateTime = Annotated[
    datetime, AfterValidator(_naive), WithJsonSchema(LOCAL_TIME_SCHEMA, mode="validation")
]
LocalDateTimeRead = Annotated[datetime, WithJsonSchema(LOCAL_TIME_SCHEMA, mode="serialization")]


class Layer(RequestModel):
    name: Name = "Layer"
    user_ids: list[UserId] = Field(
        max_length=100, description="Participants in rotation order (a user may appear twice)"
    )
    rotation_length: int = Field(ge=1, le=1000, description="How many units each turn lasts")
    rotation_unit: Literal["hours", "days", "weeks"]
    start: LocalDateTime = Field(
        description="Local wall-clock time of the first handoff, in the schedule's zone"
    )
    restrictions: list[Restriction] = Field(
        default_factory=list, max_length=14, description="When the layer is on duty; empty: always"
    )


class ScheduleCreate(RequestModel):
    name: Name
    description: Description = ""
    time_zone: TimeZone
    layers: list[Layer] = Field(
        default_factory=list, max_length=10, description="Later layers win where they have someone"
    )
    team_id: OptionalTeamId = Field(default=None, description=TEAM_ID)

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"name": "Primary on-call", "time_zone": "Europe/Berlin",
                 "layers": [{"name": "weekdays", "user_ids": [2, 3], "rotation_length": 1,
                             "rotation_unit": "days", "start": "2026-03-27T09:00:00",
                             "restrictions": []}]}
            ]
        }
    }  # fmt: skip


class ScheduleUpdate(PartialUpdate):
    name: Name | None = None
    description: Description | None = None
    time_zone: TimeZone | None = None
    layers: list[Layer] | None = Field(default=None, max_length=10)
    team_id: OptionalTeamId = Field(default=None, description=TEAM_ID)

    nullable_fields = frozenset({"team_id"})


class LayerRead(ResponseModel):
    name: str
    user_ids: list[int]
    rotation_length: int
    rotation_unit: str
    start: LocalDateTimeRead
    restrictions: list[dict[str, object]]


class ScheduleRead(ResponseModel):
    id: int
    name: str
    description: str
    time_zone: str
    layers: list[LayerRead]
    team_id: int | None = Field(default=None, description=TEAM_ID)
    created_at: datetime
    updated_at: datetime


class OverrideCreate(RequestModel):
    user_id: UserId
    start: Annotated[UtcDateTime, AfterValidator(in_range)]
    end: Annotated[UtcDateTime, AfterValidator(in_range)]

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class PersonRead(ResponseModel):
    """Someone on a schedule. Their contact details (email, phone) are shown to admins and to
    the person themself; to other users they are null."""

    id: int
    full_name: str
    role: Role
    is_active: bool
    timezone: str
    email: str | None
    phone: str | None


class OverrideRead(ResponseModel):
    id: int
    schedule_id: int
    user: PersonRead
    start: datetime
    end: datetime
    created_at: datetime


class OnCall(ResponseModel):
    at: datetime
    users: list[PersonRead]


class Shift(ResponseModel):
    user: PersonRead
    start: datetime
    end: datetime


class Shifts(ResponseModel):
    items: list[Shift]


class ScheduleRef(ResponseModel):
    id: int
    name: str


class ScheduleOnCall(ResponseModel):
    schedule: ScheduleRef
    users: list[PersonRead]
    error: str | None = Field(
        default=None, description="Why nobody can be named for this schedule, or null"
    )


class EveryOnCall(ResponseModel):
    at: datetime
    items: list[ScheduleOnCall]


class MyShift(ResponseModel):
    schedule: ScheduleRef
    start: datetime
    end: datetime


class MyShifts(ResponseModel):
    items: list[MyShift]


class ScheduleChangeRead(ResponseModel):
    id: int
    type: str
    actor_id: int | None
    actor_name: str
    data: dict[str, object]
    created_at: datetime


class CalendarLink(ResponseModel):
    url: str = Field(description="Subscribe to it in a calendar app; shown once, keep it secret")
