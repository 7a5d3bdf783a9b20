"""What a policy says, as types: its conditions, and its steps with their targets and actions.

Policies are stored as JSON (the API's shape, `app.escalation.schemas`); the engine and the
worker read them through these types. A run copies its policy (`Snapshot`) into the incident, so a
later edit of the policy does not change a run in flight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from app.escalation.enums import ActionType, TargetType


class IncidentLike(Protocol):
    """What conditions look at: an incident, or the row of one about to be written."""

    title: str
    severity: str
    service_id: int | None
    labels: dict[str, str]


@dataclass(frozen=True, slots=True)
class Target:
    type: TargetType
    id: int

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Target:
        return cls(TargetType(data["type"]), int(data["id"]))


@dataclass(frozen=True, slots=True)
class Action:
    type: ActionType
    url: str | None = None  # of a `webhook` or `teams` action
    severity: str | None = None  # of a `set_severity` action
    channel: str | None = None  # of a `slack` action

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Action:
        return cls(
            ActionType(data["type"]), data.get("url"), data.get("severity"), data.get("channel")
        )


def targets_of(data: Sequence[Mapping[str, Any]]) -> tuple[Target, ...]:
    return tuple(Target.of(item) for item in data)


def actions_of(data: Sequence[Mapping[str, Any]]) -> tuple[Action, ...]:
    return tuple(Action.of(item) for item in data)


@dataclass(frozen=True, slots=True)
class Step:
    delay_minutes: float
    targets: tuple[Target, ...]
    actions: tuple[Action, ...]

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Step:
        return cls(
            float(data["delay_minutes"]), targets_of(data["targets"]), actions_of(data["actions"])
        )


def steps_of(data: Sequence[Mapping[str, Any]]) -> tuple[Step, ...]:
    return tuple(Step.of(item) for item in data)


@dataclass(frozen=True, slots=True)
class Conditions:
    """Which incidents a policy applies to: every given condition must hold; none given, all do."""

    severities: frozenset[str] = frozenset()
    service_ids: frozenset[int] = frozenset()
    labels: tuple[tuple[str, str], ...] = ()
    title_contains: str | None = None

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Conditions:
        return cls(
            frozenset(data.get("severities") or ()),
            frozenset(data.get("service_ids") or ()),
            tuple((data.get("labels") or {}).items()),
            data.get("title_contains") or None,
        )

    def matches(self, incident: IncidentLike) -> bool:
        if self.severities and incident.severity not in self.severities:
            return False
        if self.service_ids and incident.service_id not in self.service_ids:
            return False
        if any(incident.labels.get(key) != value for key, value in self.labels):
            return False
        needle = self.title_contains
        return not (needle and needle.lower() not in incident.title.lower())


DEFAULT_REPEAT_DELAY_MINUTES = 5.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The policy a run escalates by, as it was when the run started. Its steps stay as stored
    until one is scheduled (`step`): firing reads one step of each run, not the whole policy."""

    policy_id: int
    name: str
    repeat_count: int
    repeat_delay_minutes: float
    stored_steps: Sequence[Mapping[str, Any]]

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Snapshot:
        return cls(
            data["policy_id"],
            data["name"],
            data["repeat_count"],
            float(data.get("repeat_delay_minutes", DEFAULT_REPEAT_DELAY_MINUTES)),
            data["steps"],
        )

    @property
    def step_count(self) -> int:
        return len(self.stored_steps)

    def stored_step(self, number: int) -> Mapping[str, Any]:
        """Step `number` (counted from 1) as stored: read as a `Step` where it is acted on."""
        return self.stored_steps[number - 1]

    def delay_of(self, number: int) -> timedelta:
        return timedelta(minutes=float(self.stored_steps[number - 1]["delay_minutes"]))

    @property
    def repeat_delay(self) -> timedelta:
        return timedelta(minutes=self.repeat_delay_minutes)
