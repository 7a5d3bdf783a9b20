"""Schema pieces shared by every domain: strict request models, lists, path ids."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, ClassVar, Generic, Self, TypeVar

from fastapi import Path, Query
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

T = TypeVar("T")

MAX_ID = 2**63 - 1


class RequestModel(BaseModel):
    """Request bodies refuse unknown fields, so a typo is a 422 and not a silent no-op."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PartialUpdate(RequestModel):
    """A partial update: omitted fields stay as they are; null only where a field may be empty."""

    nullable_fields: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _no_null_for_required(self) -> Self:
        for name in self.model_fields_set - self.nullable_fields:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null; omit it to leave it unchanged")
        return self


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


class Message(BaseModel):
    message: str


IdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="Numeric id")]
LimitQuery = Annotated[int, Query(ge=1, le=500, description="Page size (1–500)")]
CursorQuery = Annotated[
    str | None, Query(max_length=512, description="Opaque cursor from `next_cursor`")
]


def to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("date and time out of range") from None


UtcDateTime = Annotated[AwareDatetime, AfterValidator(to_utc)]
"""An ISO 8601 date and time with an offset, normalised to UTC."""
