"""What every source's payload comes down to: alerts that trigger, acknowledge or resolve the
incident of their (service, dedup key), and what became of each."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from app.incidents.models import Severity

Action = Literal["trigger", "acknowledge", "resolve"]
Outcome = Literal[
    "incident_created",
    "incident_updated",
    "incident_reopened",
    "incident_acknowledged",
    "incident_resolved",
    "no_changes",
]
MAX_TITLE = 500
MAX_LABELS = 64


@dataclass
class Alert:
    action: Action
    dedup_key: str
    title: str = ""
    description: str = ""
    severity: Severity = Severity.medium
    labels: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    raw: Any = None  # what the source sent for this alert, kept in the timeline
    request_id: str | None = None  # of the request that brought it (see app.core.logging)


@dataclass(frozen=True)
class Result:
    incident_id: int | None
    outcome: Outcome
    dedup_key: str


def clean_labels(labels: dict[str, Any]) -> dict[str, str]:
    """String labels, at most 64, keys up to 100 and values up to 500 characters."""
    cleaned: dict[str, str] = {}
    for key, value in list(labels.items())[:MAX_LABELS]:
        if value is None:
            continue
        cleaned[str(key)[:100]] = str(value)[:500]
    return cleaned
