from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from app.apikeys.models import KeyKind, KeyRole
from app.core.schemas import MAX_ID, RequestModel, ResponseModel, UtcDateTime
from app.core.text import single_line
from app.schedules.schemas import in_range
from app.teams.models import TeamRole

KeyName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(single_line),
]


class ApiKeyCreate(RequestModel):
    name: KeyName = Field(description="What the key is for (1–200 characters)")
    kind: KeyKind = Field(
        KeyKind.personal,
        description="`personal`: acts for you, with at most your rights; `organisation` "
        "(admins): acts as a service account of its own",
    )
    role: KeyRole = Field(
        description="`admin`, `user` or `read-only` (reads only). A personal key's role is at "
        "most its owner's, and never more than the owner's role at the time of use"
    )
    expires_at: Annotated[UtcDateTime, AfterValidator(in_range)] | None = Field(
        None, description="When the key stops working (a future time with its offset); null: never"
    )
    team_id: int | None = Field(
        None, ge=1, le=MAX_ID,
        description="Organisation keys: the one team the key acts in (with `team_role`)",
    )  # fmt: skip
    team_role: TeamRole | None = Field(
        None, description="The key's role in `team_id`: `manager`, `responder` or `observer`"
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"name": "CI deploy marker", "role": "user", "expires_at": "2027-06-30T00:00:00Z"},
                {
                    "name": "Payments monitoring",
                    "kind": "organisation",
                    "role": "user",
                    "team_id": 1,
                    "team_role": "responder",
                },
            ]
        }
    }

    @model_validator(mode="after")
    def _team_scope(self) -> Self:
        if (self.team_id is None) != (self.team_role is None):
            raise ValueError("team_id and team_role go together")
        if self.team_id is not None and self.kind is KeyKind.personal:
            raise ValueError("a personal key carries its owner's teams: no team_id")
        return self


class ApiKeyRead(ResponseModel):
    id: int = Field(description="The key's id (the audit log's actor id for what it changes)")
    name: str = Field(description="What the key is for")
    prefix: str = Field(description="The key's public start (`imsk_` and 8 characters)")
    kind: KeyKind = Field(description="`personal` or `organisation`")
    role: KeyRole = Field(description="`admin`, `user` or `read-only`")
    user_id: int = Field(description="The owner (personal), or the key's service account")
    team_id: int | None = Field(description="Organisation keys: the one team it acts in")
    team_role: TeamRole | None = Field(description="Its role in that team")
    expires_at: datetime | None = Field(description="When it stops working; null: never")
    last_used_at: datetime | None = Field(description="Last use, noted at most once a minute")
    last_used_from: str | None = Field(description="The address of that use")
    revoked_at: datetime | None = Field(description="When it was revoked; null: not revoked")
    created_by: int | None = Field(description="Who made it (null once they are deleted)")
    created_at: datetime = Field(description="When it was made")


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(
        description="The whole key, shown this once: send it as `Authorization: Bearer <key>`"
    )
