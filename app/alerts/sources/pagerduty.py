"""PagerDuty Events API v2 (`POST /v2/enqueue`), as PagerDuty documents it.

| PagerDuty `payload.severity` | incident severity |
|---|---|
| critical | critical |
| error | high |
| warning | medium |
| info | info |
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import status
from fastapi.responses import JSONResponse

from app.alerts.alert import Alert, Result
from app.alerts.source import Responses, Source
from app.core.errors import BadRequest, DomainError, Forbidden, Unauthorized
from app.core.ratelimit import TooManyRequests
from app.incidents.models import Severity

SEVERITY = {
    "critical": Severity.critical,
    "error": Severity.high,
    "warning": Severity.medium,
    "info": Severity.info,
}
ACTIONS = ("trigger", "acknowledge", "resolve")
MAX_SUMMARY = 1024
MAX_DEDUP_KEY = 255


class InvalidEvent(ValueError):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def _text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def routing_key(event: Any) -> str:
    """The event's routing key (the integration's key), once `parse` has accepted the event."""
    key: str = event["routing_key"]
    return key


def parse(event: Any) -> list[Alert]:
    """The event's alert; raises InvalidEvent listing every problem found."""
    if not isinstance(event, dict):
        raise InvalidEvent(["Event object is not a JSON object"])
    errors: list[str] = []
    routing_key: Any = event.get("routing_key")
    if not _text(routing_key):
        errors.append("'routing_key' is missing or blank")
    action: Any = event.get("event_action")
    if action not in ACTIONS:
        errors.append("'event_action' must be one of trigger, acknowledge, resolve")
    dedup_key: Any = event.get("dedup_key")
    if dedup_key is not None and (not isinstance(dedup_key, str) or len(dedup_key) > MAX_DEDUP_KEY):
        errors.append(f"'dedup_key' must be a string of at most {MAX_DEDUP_KEY} characters")
    if action in ("acknowledge", "resolve") and not _text(dedup_key):
        errors.append(f"'dedup_key' is required to {action}")
    payload: Any = event.get("payload")
    for name in ("links", "images"):
        if name in event and not isinstance(event[name], list):
            errors.append(f"'{name}' must be an array")
    if action == "trigger":
        errors += _check_payload(payload)
    if errors:
        raise InvalidEvent(errors)
    key: str = dedup_key if _text(dedup_key) else uuid.uuid4().hex
    # The routing key is the integration's secret: it is not kept with the alert.
    raw = {name: value for name, value in event.items() if name != "routing_key"}
    if action != "trigger":
        return [Alert(action=action, dedup_key=key, raw=raw)]
    labels = {
        name: payload[name]
        for name in ("source", "component", "group", "class")
        if isinstance(payload.get(name), str)
    }
    details: dict[str, Any] = {"pagerduty": {
        "custom_details": payload.get("custom_details"), "timestamp": payload.get("timestamp"),
        "links": event.get("links", []), "images": event.get("images", []),
        "client": event.get("client"), "client_url": event.get("client_url"),
    }}  # fmt: skip
    alert = Alert(
        action="trigger",
        dedup_key=key,
        title=payload["summary"],
        description=_describe(payload.get("custom_details")),
        severity=SEVERITY[payload["severity"]],
        labels=labels,
        details=details,
        raw=raw,
    )
    return [alert]


def _check_payload(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is missing or not an object"]
    errors = []
    summary: Any = payload.get("summary")
    if not _text(summary):
        errors.append("'payload.summary' is missing or blank")
    elif len(summary) > MAX_SUMMARY:
        errors.append(f"'payload.summary' is longer than {MAX_SUMMARY} characters")
    if not _text(payload.get("source")):
        errors.append("'payload.source' is missing or blank")
    severity = payload.get("severity")
    if not isinstance(severity, str) or severity not in SEVERITY:
        errors.append("'payload.severity' must be one of critical, error, warning, info")
    timestamp = payload.get("timestamp")
    if timestamp is not None:
        try:
            datetime.fromisoformat(str(timestamp).replace("Z", "+00:00"))
        except ValueError:
            errors.append("'payload.timestamp' is not an ISO 8601 time")
    for name in ("component", "group", "class"):
        if name in payload and not isinstance(payload[name], str):
            errors.append(f"'payload.{name}' must be a string")
    return errors


def _describe(details: Any) -> str:
    if details is None:
        return ""
    if isinstance(details, dict):
        return "\n".join(f"{k}: {v}" for k, v in details.items())[:10_000]
    return str(details)[:10_000]


ANSWER_SCHEMA = {
    "type": "object",
    "properties": {
        "status": {"type": "string"},
        "message": {"type": "string"},
        "dedup_key": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "string"}},
    },
}
_TEXT = {"type": "string", "pattern": r"\S"}  # not blank
# What `parse` accepts, as JSON Schema: a trigger needs a payload (summary, source, severity);
# acknowledge and resolve need a dedup_key; other actions ignore the payload, so its rules live in
# the trigger's branch only.
EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["routing_key", "event_action"],
    "properties": {
        "routing_key": _TEXT,
        "event_action": {"type": "string", "enum": list(ACTIONS)},
        "dedup_key": {"type": ["string", "null"], "maxLength": MAX_DEDUP_KEY},
        "payload": {},
        "links": {"type": "array"},
        "images": {"type": "array"},
    },
    "allOf": [
        {"if": {"properties": {"event_action": {"const": "trigger"}}},
         "then": {"required": ["payload"], "properties": {"payload": {
             "type": "object", "required": ["summary", "source", "severity"],
             "properties": {
                 "summary": _TEXT | {"maxLength": MAX_SUMMARY},
                 "source": _TEXT,
                 "severity": {"type": "string", "enum": list(SEVERITY)},
                 "timestamp": {"type": "string", "description": "ISO 8601"},
                 "component": {"type": "string"}, "group": {"type": "string"},
                 "class": {"type": "string"},
             },
         }}}},
        {"if": {"properties": {"event_action": {"enum": ["acknowledge", "resolve"]}}},
         "then": {"required": ["dedup_key"], "properties": {"dedup_key": _TEXT}}},
    ],
}  # fmt: skip


def _invalid(errors: list[str]) -> JSONResponse:
    return JSONResponse(
        {"status": "invalid event", "message": "Event object is invalid", "errors": errors},
        status_code=status.HTTP_400_BAD_REQUEST,
    )


class PagerDutyAnswer:
    """PagerDuty's own answers: 202 `{"status": "success", "message", "dedup_key"}`, 400
    `{"status": "invalid event", "message", "errors"}` (a bad key too), 429 `throttle event`."""

    status_code = status.HTTP_202_ACCEPTED
    responses: Responses = {
        202: {"content": {"application/json": {"schema": ANSWER_SCHEMA}}},
        400: {"description": "Invalid event (PagerDuty's answer: status, message, errors)",
              "content": {"application/json": {"schema": ANSWER_SCHEMA}}},
        413: {"description": "Body over 64 KiB"},
        429: {"description": "Over the routing key's rate limit (PagerDuty's `throttle event`): "
                             "wait the `Retry-After` seconds",
              "content": {"application/json": {"schema": ANSWER_SCHEMA}}},
    }  # fmt: skip

    def answer(self, results: list[Result]) -> JSONResponse:
        [result] = results
        return JSONResponse(
            {"status": "success", "message": "Event processed", "dedup_key": result.dedup_key},
            status_code=self.status_code,
        )

    def refuse(self, error: Exception) -> JSONResponse | None:
        if isinstance(error, InvalidEvent):
            return _invalid(error.errors)
        if isinstance(error, Unauthorized | Forbidden):
            return _invalid(["Invalid routing key"])
        if isinstance(error, TooManyRequests):
            return JSONResponse(
                {"status": "throttle event", "message": str(error.detail), "errors": []},
                status_code=status.HTTP_429_TOO_MANY_REQUESTS, headers=error.headers,
            )  # fmt: skip
        if isinstance(error, BadRequest | DomainError):
            return _invalid([str(error.detail)])
        return None


SOURCE = Source(
    kind="pagerduty",
    name="PagerDuty Events API v2",
    summary="PagerDuty Events API v2: trigger, acknowledge or resolve by `dedup_key`.",
    parse=parse,
    severities=SEVERITY,
    schema=EVENT_SCHEMA,
    example={"routing_key": "your-integration-key", "event_action": "trigger",
             "payload": {"summary": "Disk almost full on db-1", "source": "db-1",
                         "severity": "critical"}},
    answer=PagerDutyAnswer(),
    path="/v2/enqueue",
    key_in_body=routing_key,
    key_hint="Send the key as each event's routing_key.",
)  # fmt: skip
