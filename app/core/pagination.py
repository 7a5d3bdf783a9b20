"""Opaque keyset cursors: the sort key of the last row of a page, base64-encoded JSON."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import Unprocessable


class InvalidCursor(Unprocessable):
    def __init__(self) -> None:
        super().__init__("Invalid cursor: pass back the next_cursor of a previous page unchanged")


def encode_cursor(values: dict[str, Any]) -> str:
    raw = json.dumps(values, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, *, keys: dict[str, type]) -> dict[str, Any]:
    """Decode and check a cursor: every key present with the expected type."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor() from exc
    if not isinstance(values, dict) or set(values) != set(keys):
        raise InvalidCursor()
    for key, expected in keys.items():
        value = values[key]
        if not isinstance(value, expected) or isinstance(value, bool):
            raise InvalidCursor()
        if isinstance(value, int) and not 0 <= value < 2**63:
            raise InvalidCursor()
        if isinstance(value, str) and len(value) > 64:
            raise InvalidCursor()
    return values


async def page_by_id(
    session: AsyncSession, query: Select[Any], id_column: Any, *, limit: int, cursor: str | None
) -> tuple[list[Any], str | None]:
    """One page of `query` in id order, after the cursor's id."""
    query = query.order_by(id_column).limit(limit + 1)
    if cursor:
        query = query.where(id_column > decode_cursor(cursor, keys={"id": int})["id"])
    rows = list((await session.scalars(query)).all())
    next_cursor = encode_cursor({"id": rows[limit - 1].id}) if len(rows) > limit else None
    return rows[:limit], next_cursor
