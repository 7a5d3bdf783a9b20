"""Pure escalation logic: which policy applies, where a run goes next, how long to wait."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Protocol


class IncidentLike(Protocol):
    title: str
    severity: str
    service_id: int | None
    labels: dict[str, str]


class PolicyLike(Protocol):
    id: int
    conditions: dict[str, Any]


def matches(conditions: dict[str, Any], incident: IncidentLike) -> bool:
    """Every given condition holds (an empty or missing one always does)."""
    severities = conditions.get("severities") or []
    if severities and incident.severity not in severities:
        return False
    service_ids = conditions.get("service_ids") or []
    if service_ids and incident.service_id not in service_ids:
        return False
    for key, value in (conditions.get("labels") or {}).items():
        if incident.labels.get(key) != value:
            return False
    needle = conditions.get("title_contains")
    return not (needle and needle.lower() not in incident.title.lower())


def choose(policies: Sequence[PolicyLike], incident: IncidentLike) -> PolicyLike | None:
    """The first matching policy; callers pass active policies ordered by (priority, id)."""
    return next((p for p in policies if matches(p.conditions, incident)), None)


def next_position(
    step: int, cycle: int, *, steps: int, repeat_count: int
) -> tuple[int, int] | None:
    """The (step, cycle) after this one, both counted from 1; None when the run is over.

    A policy runs its steps once, then `repeat_count` more times.
    """
    if step < steps:
        return step + 1, cycle
    if cycle <= repeat_count:
        return 1, cycle + 1
    return None


def step_delay(snapshot: dict[str, Any], step: int) -> timedelta:
    return timedelta(minutes=float(snapshot["steps"][step - 1]["delay_minutes"]))


def repeat_delay(snapshot: dict[str, Any]) -> timedelta:
    return timedelta(minutes=float(snapshot.get("repeat_delay_minutes", 5.0)))
