from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from app.core.schemas import MAX_ID, PartialUpdate, RequestModel, ResponseModel, UtcDateTime
from app.incidents.models import Severity, Status
from app.services.schemas import ServiceName
from app.users.models import Role

MAX_LABELS = 64
MAX_CUSTOM_FIELDS_BYTES = 16 * 1024
LabelValue = Annotated[str, StringConstraints(max_length=255)]


def _few_labels(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels")
    return value


def _small_json(value: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_CUSTOM_FIELDS_BYTES:
        raise ValueError(f"custom_fields is {size} bytes; at most {MAX_CUSTOM_FIELDS_BYTES}")
    return value


LABEL_KEY = r"^[A-Za-z0-9_.:/\-]+$"
LabelKey = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=LABEL_KEY)]


# Pydantic documents a dict's key pattern as `patternProperties`, which leaves any other key (with
# any value) valid in the schema; `propertyNames` says what the validation does.
def labels_schema(most: int) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "type": "object",
            "propertyNames": {"minLength": 1, "maxLength": 100, "pattern": LABEL_KEY},
            "additionalProperties": {"type": "string", "maxLength": 255},
            "maxProperties": most,
        }
    )


Labels = Annotated[
    dict[LabelKey, LabelValue], AfterValidator(_few_labels), labels_schema(MAX_LABELS)
]
CustomFields = Annotated[dict[str, Any], AfterValidator(_small_json)]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
Description = Annotated[str, StringConstraints(max_length=20_000)]
Note = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10_000)]
EntityId = Annotated[int, Field(ge=1, le=MAX_ID)]


class AssigneeRead(ResponseModel):
    """Someone assigned to an incident, as every reader of the incident sees them: no contact
    details (those are for admins, through `/v1/users/{id}`, and for the person themself)."""

    id: int
    full_name: str
    role: Role
    is_active: bool
    timezone: str
    response_role: str = Field(
        description="The person's part in the response (the `role` given when assigning), "
        "e.g. responder, commander; `role` stays the account's role"
    )
    assigned_at: datetime


class IncidentRead(ResponseModel):
    id: int
    title: str
    description: str
    status: Status
    severity: Severity
    service_id: int | None
    source: str
    dedup_key: str | None
    alert_count: int
    last_alert_at: datetime | None = Field(
        default=None, description="When the last alert for it arrived (null if none did)"
    )
    labels: dict[str, str]
    custom_fields: dict[str, Any]
    assignees: list[AssigneeRead]
    escalation_policy_id: int | None
    escalation_level: int
    escalation_status: str = Field(
        description="`none` (no policy applies), `active`, `completed` (every step and repeat "
        "fired), `stopped` (acknowledged, snoozed or resolved) or `failed` (a step could not "
        "be scheduled; see the timeline)"
    )
    created_by: int | None
    acknowledged_at: datetime | None
    acknowledged_by: int | None
    resolved_at: datetime | None
    resolved_by: int | None
    snoozed_until: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int


class IncidentCreate(RequestModel):
    title: Title
    description: Description = ""
    severity: Severity = Severity.medium
    service_id: EntityId | None = None
    service: ServiceName | None = Field(
        default=None, description="A service name, used instead of service_id; created if new"
    )
    labels: Labels = Field(default_factory=dict)
    custom_fields: CustomFields = Field(default_factory=dict)
    dedup_key: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = Field(
        default=None,
        description="While an unresolved incident of the same service has this key, "
        "creating again returns that incident (200) instead of a new one",
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "title": "Checkout latency above 2 s",
                    "description": "p99 latency of POST /checkout is 2.4 s for 10 minutes",
                    "severity": "high",
                    "service": "checkout-api",
                    "labels": {"team": "payments", "env": "prod"},
                    "custom_fields": {"runbook": "https://wiki.example.com/checkout"},
                }
            ]
        }
    }

    @model_validator(mode="after")
    def _one_service_reference(self) -> IncidentCreate:
        if self.service_id is not None and self.service is not None:
            raise ValueError("give service_id or service, not both")
        return self


class IncidentUpdate(PartialUpdate):
    """Fields to change; omitted fields stay as they are. `service_id` may be null (no service)."""

    nullable_fields = frozenset({"service_id", "version"})

    title: Title | None = None
    description: Description | None = None
    severity: Severity | None = None
    service_id: EntityId | None = None
    labels: Labels | None = None
    custom_fields: CustomFields | None = None
    version: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="The version you read; a stale one answers 409"
    )

    model_config = {"json_schema_extra": {"examples": [{"severity": "critical", "version": 3}]}}


class TransitionBody(RequestModel):
    note: Note | None = Field(default=None, description="Kept in the timeline entry")

    model_config = {"json_schema_extra": {"examples": [{"note": "Rolled back the deploy"}]}}


class SnoozeRequest(RequestModel):
    """The body of a snooze; the duration may come in the query string instead."""

    minutes: Annotated[int, Field(ge=1, le=10_080)] | None = None
    hours: Annotated[int, Field(ge=1, le=168)] | None = None
    until: UtcDateTime | None = Field(
        default=None, description="An ISO 8601 time with offset, within 7 days"
    )
    note: Note | None = None

    model_config = {"json_schema_extra": {"examples": [{"minutes": 30}]}}


class SnoozeBody(SnoozeRequest):
    """Body and query string merged: exactly one way of saying how long."""

    @model_validator(mode="after")
    def _exactly_one(self) -> SnoozeBody:
        given = [n for n in ("minutes", "hours", "until") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of minutes (1-10080), hours (1-168) or until")
        return self


class AssignBody(RequestModel):
    """Either the whole set of assignees (`user_ids`), or one person to add (`user_id`, `role`)."""

    user_ids: Annotated[list[EntityId], Field(max_length=50)] | None = None
    user_id: EntityId | None = None
    role: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)] = (
        "responder"
    )

    model_config = {
        "json_schema_extra": {
            "examples": [{"user_ids": [2, 3]}, {"user_id": 2, "role": "commander"}]
        }
    }

    @model_validator(mode="after")
    def _one_form(self) -> AssignBody:
        if (self.user_ids is None) == (self.user_id is None):
            raise ValueError("give user_ids (the whole set) or user_id (one person to add)")
        if self.user_ids is not None and "role" in self.model_fields_set:
            raise ValueError("role goes with user_id")
        return self


class CommentCreate(RequestModel):
    content: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10_000)
    ]
    incident_id: EntityId | None = Field(
        default=None,
        description="Optional, as clients of the original API send it: must be the path's id",
    )

    model_config = {"json_schema_extra": {"examples": [{"content": "Rolling back 4.2.1 now."}]}}


class Author(BaseModel):
    id: int | None
    name: str


class CommentRead(ResponseModel):
    id: int
    incident_id: int
    author: Author
    content: str
    created_at: datetime


class Actor(BaseModel):
    type: Literal["user", "integration", "system"]
    id: int | None
    name: str


class TimelineEntryRead(ResponseModel):
    id: int
    type: str
    actor: Actor
    data: dict[str, Any]
    request_id: str | None
    created_at: datetime
