"""Schema pieces shared by every domain: strict request models, lists, path ids."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from types import UnionType
from typing import Annotated, Any, ClassVar, Generic, Self, TypeVar, Union, get_args, get_origin

from fastapi import Path, Query
from fastapi.responses import Response
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, to_json

T = TypeVar("T")

MAX_ID = 2**63 - 1


def _numeric(annotation: Any) -> bool:
    """A number (or an optional one), and not also something else a bool or text could be."""
    if get_origin(annotation) is Annotated:
        return _numeric(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        kinds = [a for a in get_args(annotation) if a is not type(None)]
        return bool(kinds) and all(_numeric(a) for a in kinds)
    return annotation in (int, float)


def _numbers_list(annotation: Any) -> bool:
    if get_origin(annotation) in (Union, UnionType):
        kinds = [a for a in get_args(annotation) if a is not type(None)]
        return len(kinds) == 1 and _numbers_list(kinds[0])
    return get_origin(annotation) is list and _numeric(get_args(annotation)[0])


def _not_a_number(value: Any) -> bool:
    return isinstance(value, bool | str)


def _stripped_length(least: int, most: int | None) -> str:
    """A pattern for text whose length, once stripped, is between `least` and `most`."""
    upto = "" if most is None else str(most - 2)
    if least >= 2:
        return rf"^\s*\S[\s\S]{{{least - 2},{upto}}}\S\s*$"
    core = r"\S" if most == 1 else rf"\S(?:[\s\S]{{0,{upto}}}\S)?"
    return rf"^\s*{core}\s*$" if least == 1 else rf"^\s*(?:{core})?\s*$"


def _document_stripping(schema: dict[str, Any]) -> None:
    """Text is stripped before its length is checked: `"   "` is too short for a field of at
    least one character, and spaces around 200 characters do not make them too long. The
    lengths are documented as a pattern, counted from the first to the last character that is
    not a space (`maxLength` would count the spaces)."""
    for prop in schema.get("properties", {}).values():
        for spec in (prop, *prop.get("anyOf", ())):
            least, most = spec.get("minLength", 0), spec.get("maxLength")
            plain = spec.get("type") == "string" and not {"pattern", "format"} & spec.keys()
            if not plain or (not least and most is None):
                continue
            spec["pattern"] = _stripped_length(least, most)
            spec.pop("maxLength", None)


class RequestModel(BaseModel):
    """Request bodies refuse unknown fields, so a typo is a 422 and not a silent no-op."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler.resolve_ref_schema(handler(core_schema))
        _document_stripping(schema)
        return schema

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_numbers(cls, data: Any) -> Any:
        """Pydantic turns `true` into 1 and `"5"` into 5; the schema says a JSON number, and a
        client sending `"is_active": 0` or `"priority": true` has made a mistake worth a 422."""
        if not isinstance(data, dict):
            return data
        for name, field in cls.model_fields.items():
            value = data.get(field.alias or name)
            if _numeric(field.annotation) and _not_a_number(value):
                raise ValueError(f"{name} must be a number, not {value!r:.40}")
            if (
                _numbers_list(field.annotation)
                and isinstance(value, list)
                and any(_not_a_number(item) for item in value)
            ):
                raise ValueError(f"{name} must be a list of numbers")
        return data


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


def json_response(content: Any, *, status_code: int = 200) -> Response:
    """`content` (plain dicts and lists) as JSON, written as a response model would write it
    (pydantic's rules: UTC datetimes ending in `Z`, NaN and infinities as null, UTF-8 unescaped),
    without validating it against one: for hot read paths that build their answer from rows
    (see docs/performance.md). The route keeps its `response_model` for the OpenAPI document;
    a test compares the two writings."""
    return Response(
        to_json(content, inf_nan_mode="null"), status_code=status_code,
        media_type="application/json",
    )  # fmt: skip


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


NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def iso_text(value: object) -> object:
    """Pydantic reads a number (or a string of digits) as Unix time; the documented format is
    ISO 8601 text, and nobody sending `at=0.5` means half a second after 1970."""
    if isinstance(value, int | float) or (isinstance(value, str) and NUMBER.fullmatch(value)):
        raise ValueError("give an ISO 8601 date and time with an offset, e.g. 2026-03-27T09:00Z")
    return value


UtcDateTime = Annotated[AwareDatetime, BeforeValidator(iso_text), AfterValidator(to_utc)]
"""An ISO 8601 date and time with an offset, normalised to UTC."""
