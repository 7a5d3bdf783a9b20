"""`GET /v1/audit`: who changed what in the configuration, and when (admins; a team's managers,
for their team)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AfterValidator

from app.audit import service as audit_service
from app.audit.models import Action, ObjectType
from app.audit.schemas import AuditEntryRead
from app.auth import policy as authz
from app.auth.dependencies import CurrentPrincipal
from app.auth.policy import Action as Do
from app.core.deps import SessionDep
from app.core.schemas import MAX_ID, CursorQuery, LimitQuery, Page, UtcDateTime
from app.schedules.schemas import in_range

router = APIRouter(prefix="/audit", tags=["audit"])

Moment = Annotated[UtcDateTime, AfterValidator(in_range)]
Id = Annotated[int, Query(ge=1, le=MAX_ID)]


@router.get(
    "",
    response_model=Page[AuditEntryRead],
    responses={
        403: {"description": "Admins only; with team_id, also that team's managers"},
        422: {"description": "An unknown object type or action, a bad id, time or cursor"},
    },
)
async def list_audit_entries(
    session: SessionDep,
    principal: CurrentPrincipal,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    object_type: Annotated[ObjectType | None, Query(description="What was changed")] = None,
    object_id: Annotated[Id | None, Query(description="Its id (with object_type)")] = None,
    actor_id: Annotated[Id | None, Query(description="The user who changed it")] = None,
    action: Annotated[Action | None, Query()] = None,
    since: Annotated[Moment | None, Query(description="Changes at or after this time")] = None,
    until: Annotated[Moment | None, Query(description="Changes before this time")] = None,
    team_id: Annotated[
        Id | None,
        Query(description="Changes to what this team owned (required unless you are an admin)"),
    ] = None,
) -> object:
    """The audit log, newest first (admins: all of it; a team's managers: their team's, with
    `team_id`): every create, update and delete of users, teams and their members, services,
    integrations, escalation policies, schedules, overrides, webhooks, API keys, notification
    preferences, contact methods and notification rules, with who made it, when, from where,
    and the values before and after (secrets redacted). See docs/audit.md."""
    if team_id is None:
        authz.check(principal, Do.administer, authz.NO_TEAM, missing="")
    else:
        await authz.require(
            session, principal, Do.inspect, team_id, missing=f"Team {team_id} not found"
        )
    filters = audit_service.AuditFilter(
        object_type, object_id, actor_id, action, since, until, team_id
    )
    items, next_cursor = await audit_service.list_page(
        session, filters=filters, limit=limit, cursor=cursor
    )
    return {"items": [audit_service.as_item(e) for e in items], "next_cursor": next_cursor}
