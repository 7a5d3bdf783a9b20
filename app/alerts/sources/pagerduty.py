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

from app.alerts.ingest import Alert
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


def parse(event: Any) -> tuple[str, Alert]:
    """The routing key and the alert; raises InvalidEvent listing every problem found."""
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
        return routing_key, Alert(action=action, dedup_key=key, raw=raw)
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
    return routing_key, Alert(
        action="trigger",
        dedup_key=key,
        title=payload["summary"],
        description=_describe(payload.get("custom_details")),
        severity=SEVERITY[payload["severity"]],
        labels=labels,
        details=details,
        raw=raw,
    )


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
