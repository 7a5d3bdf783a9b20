"""Refuse input that parsers accept but that cannot be stored or echoed back.

Python's `json` accepts NaN, Infinity and 1e400, lone UTF-16 surrogates (`"\\ud800"`) and nesting
deep enough to exhaust the recursion limit; PostgreSQL refuses NUL characters in text. Such
requests are answered here with a 422 before any endpoint sees them, on both databases alike.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_DEPTH = 64


class BadJSON(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise BadJSON(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJSON(f"number {text[:40]} is out of range")
    return value


def check_json(body: bytes) -> str | None:
    """Why the body is unacceptable, or None (malformed JSON is left to the normal 422)."""
    try:
        value = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
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
                return "JSON string contains a NUL character or an unpaired surrogate"
        elif isinstance(item, dict):
            for key, child in item.items():
                if not _encodable(key):
                    return "JSON key contains a NUL character or an unpaired surrogate"
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return None


def _encodable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


NUL_IN_URL = "The path or query string contains a NUL character (%00)"
# Bodies larger than these are refused with 413 before anything reads them as JSON.
BODY_LIMIT = 1024 * 1024
ALERT_BODY_LIMIT = 64 * 1024


class InputGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope["query_string"]:
            await _refuse(send, NUL_IN_URL)
            return
        path = scope["path"]
        pagerduty = path.rstrip("/") == "/v2/enqueue"
        limit = ALERT_BODY_LIMIT if pagerduty or path.startswith("/v1/alerts/") else BODY_LIMIT
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"").strip()
        if declared.isdigit() and int(declared) > limit:
            await _refuse(send, too_large(limit), status=413, pagerduty=pagerduty)
            return
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        is_json = content_type == b"application/json" or content_type.endswith(b"+json")
        is_form = content_type in (b"application/x-www-form-urlencoded", b"multipart/form-data")
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _refuse(send, too_large(limit), status=413, pagerduty=pagerduty)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        problem = None
        if is_json:
            problem = check_json(body) if body else None
        elif is_form:
            # No endpoint takes file uploads, so a NUL anywhere in a form is refused.
            nul = b"%00" in body or b"\x00" in body
            problem = "The form contains a NUL character" if nul else None
        if problem is not None:
            # PagerDuty's clients expect its answer to a bad event: 400 with a list of errors.
            await _refuse(send, problem, status=400 if pagerduty else 422, pagerduty=pagerduty)
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def too_large(limit: int) -> str:
    return f"The body is larger than {limit // 1024} KiB"


async def _refuse(send: Send, detail: str, *, status: int = 422, pagerduty: bool = False) -> None:
    answer = (
        {"status": "invalid event", "message": "Event object is invalid", "errors": [detail]}
        if pagerduty
        else {"detail": detail}
    )
    payload = json.dumps(answer).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
