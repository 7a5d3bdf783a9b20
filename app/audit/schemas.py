from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from app.core.schemas import ResponseModel


class AuditActor(ResponseModel):
    type: Literal["user", "system", "api_key"] = Field(
        description="`user`: a signed-in person (API or console); `api_key`: a request sent "
        "with an API key; `system`: the worker, a CLI command (`name` says which: `worker`, "
        "`cli`), or a request nobody was signed in to"
    )
    id: int | None = Field(
        description="The user's id; the API key's id for `api_key`; null for `system`"
    )
    name: str = Field(
        description="The user's name when they acted (for a key: the name and the key's prefix)"
    )


class AuditEntryRead(ResponseModel):
    id: int
    at: datetime
    actor: AuditActor
    action: str = Field(
        description="`create`, `update`, `delete`, or what an update meant: `deactivate` and "
        "`reactivate` (a user), `rotate` (an integration key, a webhook secret, a calendar "
        "link), `reseal` (a webhook secret encrypted again under a new SECRET_KEY), `revoke` "
        "(an API key)"
    )
    object_type: str = Field(
        description="What was changed: `user`, `service`, `integration`, `escalation_policy`, "
        "`schedule`, `schedule_override`, `webhook_subscription`, `notification_preference`, "
        "`contact_method`, `notification_rule`, `api_key`, `team`, `team_member`"
    )
    object_id: int = Field(description="Its id")
    before: dict[str, Any] | None = Field(
        description="The whole row before a delete; the changed columns before an update; null "
        "for a create. Secrets read `[redacted]`"
    )
    after: dict[str, Any] | None = Field(
        description="The whole row after a create; the changed columns after an update; null "
        "for a delete. Secrets read `[redacted]`"
    )
    request_id: str | None = Field(description="The X-Request-ID of the request that made it")
    source_address: str | None = Field(description="The address the request came from")
    team_id: int | None = Field(
        default=None,
        description="The team that owned the object when it was changed (a team's managers "
        "read these entries); null: no team",
    )
