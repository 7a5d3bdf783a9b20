"""Refuse JSON bodies that are valid to Python's parser but not to JSON or to a database.

Python's `json` accepts NaN and Infinity, lone UTF-16 surrogates (`"\\ud800"`) and nesting deep
enough to exhaust the recursion limit; none of those can be stored or echoed back, so they are
answered here with a 422 before any endpoint sees them.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_DEPTH = 64


class BadJSON(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise BadJSON(f"{name} is not valid JSON")


def check_json(body: bytes) -> str | None:
    """Why the body is unacceptable, or None (malformed JSON is left to the normal 422)."""
    try:
        value = json.loads(body, parse_constant=_refuse_constant)
    except BadJSON as exc:
        return str(exc)
    except RecursionError:
        return f"JSON nested more than {MAX_DEPTH} levels deep"
    except ValueError:
        return None
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"JSON nested more than {MAX_DEPTH} levels deep"
        if isinstance(item, str):
            if not _encodable(item):
                return "JSON string contains an unpaired surrogate (\\ud800-\\udfff)"
        elif isinstance(item, dict):
            for key, child in item.items():
                if not _encodable(key):
                    return "JSON key contains an unpaired surrogate (\\ud800-\\udfff)"
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class JSONBodyGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        content_type = dict(scope["headers"]).get(b"content-type", b"").split(b";")[0].strip()
        if not (content_type == b"application/json" or content_type.endswith(b"+json")):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        problem = check_json(body) if body else None
        if problem is not None:
            payload = json.dumps({"detail": problem}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 422,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(payload)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": payload})
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
