"""The closed sets of escalation: an incident's escalation status, a step's status, its targets'
and actions' types."""

from __future__ import annotations

from enum import StrEnum


class EscalationStatus(StrEnum):
    """Where an incident's escalation stands (`incidents.escalation_status`)."""

    none = "none"  # no policy applies: it does not escalate
    active = "active"  # a step is scheduled
    stopped = "stopped"  # it left `triggered` (acknowledged, snoozed, resolved) mid-run
    completed = "completed"  # every step of every cycle fired
    failed = "failed"  # a step failed and the run could not go on


class EventStatus(StrEnum):
    """What became of one scheduled step (`escalation_events.status`)."""

    scheduled = "scheduled"
    executed = "executed"
    cancelled = "cancelled"
    failed = "failed"
    skipped = "skipped"


class TargetType(StrEnum):
    user = "user"
    schedule = "schedule"  # whoever is on call when the step fires


class ActionType(StrEnum):
    notify = "notify"
    assign = "assign"
    webhook = "webhook"
    teams = "teams"  # a Microsoft Teams channel, through a Workflows webhook
    set_severity = "set_severity"
    slack = "slack"  # a message with buttons in a Slack channel (the Slack app)
