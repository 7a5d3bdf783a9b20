"""Elastic (Kibana rule actions through the webhook connector), in the body the contract gives:

`{"alert_name", "message", "severity", "service": {"name", "environment"?, "version"?},
"alert_id", "state": {"state": "active"|"recovered"|"resolved", "timestamp"?},
"metadata"?, "tags"?}`; the dedup key is `alert_id`. The incident belongs to the integration's
service; the body's service name, environment and version become labels.

| `severity` | incident severity |
|---|---|
| critical | critical |
| high, major, error | high |
| medium, minor, warning | medium |
| low | low |
| info | info |
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.alerts.ingest import Alert
from app.incidents.models import Severity

SEVERITY = {
    "critical": Severity.critical,
    **dict.fromkeys(("high", "major", "error"), Severity.high),
    **dict.fromkeys(("medium", "minor", "warning"), Severity.medium),
    "low": Severity.low,
    "info": Severity.info,
}


class ElasticService(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=200)
    environment: str | None = Field(default=None, max_length=200)
    version: str | None = Field(default=None, max_length=200)


class ElasticState(BaseModel):
    model_config = ConfigDict(extra="allow")

    state: Literal["active", "recovered", "resolved"]
    timestamp: str | None = Field(default=None, max_length=64)


class ElasticAlert(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    alert_name: str = Field(min_length=1, max_length=500)
    message: str = Field(default="", max_length=10_000)
    severity: str = Field(min_length=1, max_length=32)
    service: ElasticService
    alert_id: str = Field(min_length=1, max_length=255)
    state: ElasticState
    metadata: dict[str, Any] = Field(default_factory=dict)
    tags: dict[str, Any] = Field(default_factory=dict)


def parse(body: Any) -> Alert:
    """Raises pydantic's ValidationError for a body that does not fit."""
    item = ElasticAlert.model_validate(body)
    labels = {"service.name": item.service.name}
    if item.service.environment:
        labels["service.environment"] = item.service.environment
    if item.service.version:
        labels["service.version"] = item.service.version
    labels |= {str(k): str(v) for k, v in item.tags.items()}
    return Alert(
        action="trigger" if item.state.state == "active" else "resolve",
        dedup_key=item.alert_id,
        title=item.alert_name,
        description=item.message,
        severity=SEVERITY.get(item.severity.lower(), Severity.medium),
        labels=labels,
        details={"metadata": item.metadata, "state": item.state.model_dump()},
        raw=body,
    )
