"""The generic JSON alert, for anything that can POST:

`{"summary", "severity"?, "dedup_key"?, "status"?: "firing"|"resolved", "labels"?, "details"?}`
or `{"alerts": [that, …]}` for several. Severity uses this service's names (critical, high,
medium, low, info; default medium). Without a dedup key, one is made from the summary, so a
repeated summary counts as the same alert.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.alerts.alert import Alert
from app.alerts.source import Source, inline
from app.incidents.models import Severity


class GenericAlert(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    summary: str = Field(min_length=1, max_length=500)
    severity: Severity = Severity.medium
    dedup_key: str | None = Field(default=None, min_length=1, max_length=255)
    status: Literal["firing", "resolved"] = "firing"
    labels: dict[str, str] = Field(default_factory=dict, max_length=64)
    details: dict[str, Any] = Field(default_factory=dict)
    description: str = Field(default="", max_length=10_000)


class GenericBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alerts: list[GenericAlert] = Field(min_length=1, max_length=1000)


def parse(body: Any) -> list[Alert]:
    """Raises pydantic's ValidationError for a body that does not fit."""
    if isinstance(body, dict) and "alerts" in body:
        items = GenericBatch.model_validate(body).alerts
    else:
        items = [GenericAlert.model_validate(body)]
    return [_alert(item) for item in items]


def _alert(item: GenericAlert) -> Alert:
    key = item.dedup_key or hashlib.sha256(item.summary.encode()).hexdigest()[:32]
    return Alert(
        action="trigger" if item.status == "firing" else "resolve",
        dedup_key=key, title=item.summary, description=item.description,
        severity=item.severity, labels=item.labels, details=item.details,
        raw=item.model_dump(mode="json"),
    )  # fmt: skip


SOURCE = Source(
    kind="generic",
    name="Generic JSON",
    summary='A simple JSON alert (or `{"alerts": [...]}`); `status: resolved` resolves its '
    "incident.",
    parse=parse,
    severities={severity.value: severity for severity in Severity},
    schema=inline(GenericAlert.model_json_schema()),
    example={"summary": "Queue backlog over 10,000", "severity": "high",
             "dedup_key": "queue-backlog", "status": "firing", "labels": {"queue": "emails"},
             "details": {"depth": 12000}},
)  # fmt: skip
