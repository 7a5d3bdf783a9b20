from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    Field,
    StrictBool,
    StringConstraints,
    field_validator,
    model_validator,
)

from app.core.schemas import PartialUpdate, RequestModel, ResponseModel
from app.core.text import single_line
from app.incidents.models import Severity
from app.incidents.schemas import EntityId, LabelKey, LabelValue, labels_schema
from app.teams.schemas import TEAM_ID, OptionalTeamId

PolicyName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(single_line),
]


class Target(RequestModel):
    type: Literal["user", "schedule"] = Field(
        description="`user`, or `schedule` (whoever is on call when the step fires)"
    )
    id: EntityId


class NotifyAction(RequestModel):
    type: Literal["notify"]


class AssignAction(RequestModel):
    type: Literal["assign"]


class WebhookAction(RequestModel):
    type: Literal["webhook"]
    url: Annotated[AnyHttpUrl, Field(description="http(s) URL; receives a JSON POST")]

    @field_validator("url")
    @classmethod
    def _short(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        if len(str(value)) > 2000:
            raise ValueError("URL longer than 2,000 characters")
        return value


class TeamsAction(RequestModel):
    type: Literal["teams"]
    url: Annotated[
        AnyHttpUrl,
        Field(
            description='A Microsoft Teams Workflows webhook URL ("When a Teams webhook request is '
            'received"); receives an Adaptive Card'
        ),
    ]

    @field_validator("url")
    @classmethod
    def _short(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        if len(str(value)) > 2000:
            raise ValueError("URL longer than 2,000 characters")
        return value


class SetSeverityAction(RequestModel):
    type: Literal["set_severity"]
    severity: Severity


SlackChannelId = Annotated[
    str,
    StringConstraints(pattern=r"^[CG][A-Z0-9]{8,20}$"),
    Field(description="A Slack channel id, such as `C0123ABCD`", examples=["C0123ABCD"]),
]


class SlackAction(RequestModel):
    type: Literal["slack"]
    channel: SlackChannelId = Field(
        description="Where the Slack app posts the incident, with its buttons (see docs/slack.md)"
    )


Action = Annotated[
    NotifyAction | AssignAction | WebhookAction | TeamsAction | SetSeverityAction | SlackAction,
    Field(discriminator="type"),
]


def _notify_only() -> list[Action]:
    return [NotifyAction(type="notify")]


class Step(RequestModel):
    delay_minutes: Annotated[float, Field(ge=0, le=1440, allow_inf_nan=False)] = Field(
        default=0, description="Minutes after the previous step (fractions allowed: 0.05 = 3 s)"
    )
    targets: Annotated[list[Target], Field(min_length=0, max_length=50)] = Field(
        default_factory=list
    )
    actions: Annotated[list[Action], Field(min_length=1, max_length=10)] = Field(
        default_factory=_notify_only
    )


class Conditions(RequestModel):
    """Empty or missing conditions match every incident; given ones must all match."""

    @model_validator(mode="before")
    @classmethod
    def _original_severity(cls, value: Any) -> Any:
        """The original API's `{"severity": "critical"}`: one severity, as `severities`."""
        if isinstance(value, dict) and "severity" in value:
            if "severities" in value:
                raise ValueError("give severities or severity (the original's form), not both")
            value = dict(value)
            value["severities"] = [value.pop("severity")]
        return value

    severities: Annotated[list[Severity], Field(max_length=5)] = Field(default_factory=list)
    service_ids: Annotated[list[EntityId], Field(max_length=200)] = Field(default_factory=list)
    labels: Annotated[dict[LabelKey, LabelValue], Field(max_length=32), labels_schema(32)] = Field(
        default_factory=dict
    )
    title_contains: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None


Steps = Annotated[list[Step], Field(min_length=1, max_length=20)]
Priority = Annotated[int, Field(ge=0, le=1_000_000)]
RepeatCount = Annotated[int, Field(ge=0, le=10)]
RepeatDelay = Annotated[
    float,
    Field(
        ge=0,
        le=1440,
        allow_inf_nan=False,
        description="Minutes after the last step before a repeat starts again at step 1",
    ),
]

EXAMPLE: dict[str, Any] = {
    "name": "Critical checkout",
    "description": "",
    "priority": 10,
    "repeat_count": 1,
    "repeat_delay_minutes": 10,
    "is_active": True,
    "conditions": {
        "severities": ["critical", "high"],
        "service_ids": [1],
        "labels": {"team": "payments"},
        "title_contains": "checkout",
    },
    "steps": [
        {
            "delay_minutes": 0,
            "targets": [{"type": "user", "id": 1}],
            "actions": [{"type": "notify"}, {"type": "assign"}],
        },
        {
            "delay_minutes": 15,
            "targets": [{"type": "user", "id": 1}],
            "actions": [
                {"type": "notify"},
                {"type": "webhook", "url": "https://hooks.example.com/x"},
                {"type": "set_severity", "severity": "critical"},
            ],
        },
    ],
}


class PolicyCreate(RequestModel):
    name: PolicyName
    description: Annotated[str, StringConstraints(max_length=5_000)] = ""
    priority: Priority = 100
    repeat_count: RepeatCount = 0
    repeat_delay_minutes: RepeatDelay = 5
    is_active: StrictBool = True
    conditions: Conditions = Field(default_factory=Conditions)
    steps: Steps
    team_id: OptionalTeamId = Field(default=None, description=TEAM_ID)

    model_config = {"json_schema_extra": {"examples": [EXAMPLE]}}


class PolicyUpdate(PartialUpdate):
    """Fields to change; omitted ones stay. Incidents already escalating keep their old steps."""

    name: PolicyName | None = None
    description: Annotated[str, StringConstraints(max_length=5_000)] | None = None
    priority: Priority | None = None
    repeat_count: RepeatCount | None = None
    repeat_delay_minutes: RepeatDelay | None = None
    is_active: StrictBool | None = None
    conditions: Conditions | None = None
    steps: Steps | None = None
    team_id: OptionalTeamId = Field(default=None, description=TEAM_ID)

    nullable_fields = frozenset({"team_id"})

    model_config = {"json_schema_extra": {"examples": [{"priority": 5, "is_active": False}]}}


class TargetRead(BaseModel):
    type: Literal["user", "schedule"]
    id: int


class NotifyActionRead(BaseModel):
    type: Literal["notify"]


class AssignActionRead(BaseModel):
    type: Literal["assign"]


class WebhookActionRead(BaseModel):
    type: Literal["webhook"]
    url: str | None = Field(
        description="Where the step posts; null for anyone who may not change the policy"
    )


class TeamsActionRead(BaseModel):
    type: Literal["teams"]
    url: str | None = Field(
        description="The Teams Workflows webhook the step posts to; null for anyone who may not "
        "change the policy"
    )


class SetSeverityActionRead(BaseModel):
    type: Literal["set_severity"]
    severity: Severity


class SlackActionRead(BaseModel):
    type: Literal["slack"]
    channel: str = Field(description="The Slack channel id the step posts the incident to")


ActionRead = Annotated[
    NotifyActionRead
    | AssignActionRead
    | WebhookActionRead
    | TeamsActionRead
    | SetSeverityActionRead
    | SlackActionRead,
    Field(discriminator="type"),
]


class StepRead(BaseModel):
    delay_minutes: float
    targets: list[TargetRead]
    actions: list[ActionRead]


class PolicyRead(ResponseModel):
    id: int
    name: str
    description: str
    priority: int
    repeat_count: int
    repeat_delay_minutes: float
    is_active: bool
    conditions: dict[str, Any]
    steps: list[StepRead]
    team_id: int | None = Field(default=None, description=TEAM_ID)
    created_at: datetime
    updated_at: datetime

    def shown_to(self, *, may_change: bool) -> PolicyRead:
        """Webhook and Teams URLs (they let anyone post as the step) only for those who may
        change the policy: admins, its team's managers."""
        if may_change:
            return self
        steps = [s.model_copy(update={"actions": without_urls(s.actions)}) for s in self.steps]
        return self.model_copy(update={"steps": steps})


class EscalationEventRead(ResponseModel):
    id: int
    policy_id: int | None
    run: int
    step: int
    cycle: int
    status: str
    due_at: datetime
    executed_at: datetime | None
    delay_minutes: float
    targets: list[TargetRead]
    actions: list[ActionRead]
    notified_user_ids: list[int]
    detail: str

    def shown_to(self, *, admin: bool) -> EscalationEventRead:
        """As `GET /v1/incidents/{id}/escalation-events` shows it: a policy's webhook URLs are
        for admins."""
        if admin:
            return self
        return self.model_copy(update={"actions": without_urls(self.actions)})


def without_urls(actions: list[Any]) -> list[Any]:
    return [
        a.model_copy(update={"url": None})
        if isinstance(a, WebhookActionRead | TeamsActionRead)
        else a
        for a in actions
    ]
