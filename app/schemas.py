"""Schema pieces shared by every domain: strict request models, lists, path ids."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

MAX_ID = 2**63 - 1


class RequestModel(BaseModel):
    """Request bodies refuse unknown fields, so a typo is a 422 and not a silent no-op."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


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
