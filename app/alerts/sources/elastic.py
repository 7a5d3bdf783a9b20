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

from fastapi import status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from app.alerts.alert import Alert, Result
from app.alerts.source import Responses, Source, inline
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


def parse(body: Any) -> list[Alert]:
    """One alert; raises pydantic's ValidationError for a body that does not fit."""
    item = ElasticAlert.model_validate(body)
    labels = {"service.name": item.service.name}
    if item.service.environment:
        labels["service.environment"] = item.service.environment
    if item.service.version:
        labels["service.version"] = item.service.version
    labels |= {str(k): str(v) for k, v in item.tags.items()}
    alert = Alert(
        action="trigger" if item.state.state == "active" else "resolve",
        dedup_key=item.alert_id,
        title=item.alert_name,
        description=item.message,
        severity=SEVERITY.get(item.severity.lower(), Severity.medium),
        labels=labels,
        details={"metadata": item.metadata, "state": item.state.model_dump()},
        raw=body,
    )
    return [alert]


ANSWER_SCHEMA = {
    "type": "object",
    "properties": {
        "status": {"type": "string"},
        "incident_id": {"type": ["integer", "null"]},
        "message": {"type": "string"},
    },
}
MESSAGES = {
    "incident_created": "Incident created",
    "incident_updated": "Alert added to the open incident",
    "incident_reopened": "Incident reopened",
    "incident_resolved": "Incident resolved",
    "incident_acknowledged": "Incident acknowledged",
    "no_changes": "No open incident for this alert; nothing to do",
}
# The contract's four names: a reopen or acknowledge is an update.
RENAMED = {"incident_reopened": "incident_updated", "incident_acknowledged": "incident_updated"}


class ElasticAnswer:
    """201 when the alert opened an incident, else 200: `{"status", "incident_id", "message"}`."""

    status_code = status.HTTP_200_OK
    responses: Responses = {
        200: {"description": "An existing incident changed, or nothing to do",
              "content": {"application/json": {"schema": ANSWER_SCHEMA}}},
        201: {"description": "An incident was opened",
              "content": {"application/json": {"schema": ANSWER_SCHEMA}}},
    }  # fmt: skip

    def answer(self, results: list[Result]) -> JSONResponse:
        [result] = results
        created = result.outcome == "incident_created"
        return JSONResponse(
            {"status": RENAMED.get(result.outcome, result.outcome),
             "incident_id": result.incident_id, "message": MESSAGES[result.outcome]},
            status_code=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )  # fmt: skip

    def refuse(self, error: Exception) -> JSONResponse | None:
        return None


SOURCE = Source(
    kind="elastic",
    name="Elastic (Kibana rule actions)",
    summary="Elastic APM / Kibana rule actions (webhook connector); the dedup key is `alert_id`.",
    parse=parse,
    severities=SEVERITY,
    schema=inline(ElasticAlert.model_json_schema()),
    example={"alert_name": "High error rate", "message": "checkout 5xx at 12%",
             "severity": "critical",
             "service": {"name": "checkout-api", "environment": "production"},
             "alert_id": "apm-rule-42-checkout", "state": {"state": "active"}},
    answer=ElasticAnswer(),
)  # fmt: skip
