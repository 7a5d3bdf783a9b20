from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, Field, StrictBool, StringConstraints, model_validator

from app.core.schemas import MAX_ID, PartialUpdate, RequestModel, ResponseModel
from app.core.text import single_line
from app.teams.models import TeamRole
from app.users.schemas import Email

TeamName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(single_line),
]
Description = Annotated[str, StringConstraints(max_length=20_000)]
PRIVATE = (
    "Private: only the team's members (and admins) see its incidents, services and schedules; "
    "otherwise every signed-in user reads them"
)
TEAM_ID = "The team that owns it: its managers change it; null: no team (admins change it)"
OptionalTeamId = Annotated[int, Field(ge=1, le=MAX_ID)] | None


class TeamRead(ResponseModel):
    id: int
    name: str
    description: str
    is_private: bool = Field(description=PRIVATE)
    created_at: datetime
    updated_at: datetime


class TeamCreate(RequestModel):
    name: TeamName
    description: Description = ""
    is_private: StrictBool = Field(default=False, description=PRIVATE)

    model_config = {"json_schema_extra": {"examples": [{"name": "payments", "description": ""}]}}


class TeamUpdate(PartialUpdate):
    """Fields to change; omitted fields stay as they are."""

    name: TeamName | None = None
    description: Description | None = None
    is_private: StrictBool | None = Field(default=None, description=PRIVATE)


class MemberRead(ResponseModel):
    team_id: int = Field(description="The team")
    user_id: int
    email: str
    full_name: str
    role: TeamRole
    created_at: datetime


class MemberAdd(RequestModel):
    """Whom to add, by id or by email address (one of the two), and their role."""

    user_id: Annotated[int, Field(ge=1, le=MAX_ID)] | None = None
    email: Email | None = None
    role: TeamRole = TeamRole.responder

    @model_validator(mode="after")
    def _one_of(self) -> MemberAdd:
        if (self.user_id is None) == (self.email is None):
            raise ValueError("give either user_id or email")
        return self

    model_config = {
        "json_schema_extra": {"examples": [{"email": "alice@example.com", "role": "responder"}]}
    }


class MemberUpdate(RequestModel):
    role: TeamRole
