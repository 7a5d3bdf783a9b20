from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, Field, StrictBool, StringConstraints

from app.core.schemas import MAX_ID, PartialUpdate, RequestModel, ResponseModel
from app.core.text import single_line
from app.teams.schemas import TEAM_ID, OptionalTeamId

ServiceName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(single_line),
]
Description = Annotated[str, StringConstraints(max_length=20_000)]
SlackChannel = Annotated[str, StringConstraints(pattern=r"^[CG][A-Z0-9]{8,20}$")]
SLACK_CHANNEL = (
    "A Slack channel id, such as `C0123ABCD`: the Slack app posts the service's new incidents "
    "there, with Acknowledge / Resolve / Escalate buttons (see docs/slack.md); null: none"
)


class ServiceRead(ResponseModel):
    id: int
    name: str
    description: str
    escalation_policy_id: int | None = None
    slack_channel: str | None = Field(default=None, description=SLACK_CHANNEL)
    is_active: bool
    team_id: int | None = Field(default=None, description=TEAM_ID)
    created_at: datetime
    updated_at: datetime


class ServiceCreate(RequestModel):
    name: ServiceName
    description: Description = ""
    is_active: StrictBool = True
    escalation_policy_id: Annotated[int, Field(ge=1, le=MAX_ID)] | None = Field(
        default=None,
        description="Default policy for its incidents when no policy's conditions match",
    )
    slack_channel: SlackChannel | None = Field(default=None, description=SLACK_CHANNEL)
    team_id: OptionalTeamId = Field(default=None, description=TEAM_ID)

    model_config = {
        "json_schema_extra": {
            "examples": [{"name": "checkout-api", "description": "Payments and checkout"}]
        }
    }


class ServiceUpdate(PartialUpdate):
    """Fields to change; omitted fields stay as they are."""

    nullable_fields = frozenset({"escalation_policy_id", "slack_channel", "team_id"})

    name: ServiceName | None = None
    description: Description | None = None
    is_active: StrictBool | None = None
    escalation_policy_id: Annotated[int, Field(ge=1, le=MAX_ID)] | None = None
    slack_channel: SlackChannel | None = Field(default=None, description=SLACK_CHANNEL)
    team_id: OptionalTeamId = Field(default=None, description=TEAM_ID)

    model_config = {"json_schema_extra": {"examples": [{"is_active": False}]}}
