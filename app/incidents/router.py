from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import StringConstraints, ValidationError
from sqlalchemy import select

from app.auth import policy as authz
from app.auth.dependencies import CurrentCaller, CurrentPrincipal, CurrentUser, for_the_logs
from app.auth.policy import Action
from app.core.actors import Actor
from app.core.batching import Batcher
from app.core.deps import ClockDep, SessionDep
from app.core.errors import DomainError, Unprocessable
from app.core.schemas import MAX_ID, CursorQuery, LimitQuery, Page, UtcDateTime, json_response
from app.flows import incidents as incident_flow
from app.incidents import service as incident_service
from app.incidents.dependencies import LockedIncident, ValidIncident
from app.incidents.models import Incident, Severity, Status
from app.incidents.schemas import (
    AssignBody,
    CommentCreate,
    CommentRead,
    IncidentCreate,
    IncidentRead,
    IncidentUpdate,
    SnoozeBody,
    SnoozeRequest,
    TimelineEntryRead,
    TransitionBody,
)
from app.teams.models import TeamMember

router = APIRouter(prefix="/incidents", tags=["incidents"])
# The rule the handler applies, in the schema: a key without a colon, then the value.
LabelFilter = Annotated[str, StringConstraints(pattern=r"^[^:]{1,100}:[\s\S]{0,255}$")]

Responses = dict[int | str, dict[str, Any]]
CONFLICT: Responses = {
    409: {"description": "Illegal transition (the detail names the current status)"}
}
NOT_FOUND: Responses = {404: {"description": "No such incident"}}


@router.get("/", response_model=Page[IncidentRead])
async def list_incidents(
    session: SessionDep,
    principal: CurrentPrincipal,
    status_: Annotated[list[Status], Query(alias="status", max_length=4)] = [],  # noqa: B006
    severity: Annotated[list[Severity], Query(max_length=5)] = [],  # noqa: B006
    service_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    team_id: Annotated[
        list[int],
        Query(max_length=50, description="Of the services of these teams (repeat for several)"),
    ] = [],  # noqa: B006
    my_teams: Annotated[
        bool, Query(description="Only incidents of the services of the teams I am a member of")
    ] = False,
    assignee_id: Annotated[
        str | None, Query(pattern=r"^(me|[1-9][0-9]{0,18})$", description="A user id, or `me`")
    ] = None,
    label: Annotated[
        list[LabelFilter],
        Query(max_length=20, description="`key:value`; repeat for several (all must match)"),
    ] = [],  # noqa: B006
    created_after: UtcDateTime | None = None,
    created_before: UtcDateTime | None = None,
    q: Annotated[str | None, Query(min_length=1, max_length=200, description="Title text")] = None,
    sort: Annotated[
        str, Query(pattern=r"^-?(created_at|updated_at)$", description="`-created_at` (default)")
    ] = "-created_at",
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> object:
    """List incidents, newest first by default, with filters and a keyset cursor (a private
    team's only to its members and admins)."""
    if assignee_id not in (None, "me") and int(assignee_id) > MAX_ID:
        raise Unprocessable("assignee_id is out of range")
    if any(not 1 <= t <= MAX_ID for t in team_id):
        raise Unprocessable("team_id is out of range")
    user = principal.user
    teams: list[int] | Any | None = None
    if my_teams:
        teams = authz.member_team_ids(principal)
    if team_id:
        teams = (
            team_id
            if teams is None
            else select(TeamMember.team_id).where(
                TeamMember.team_id.in_(team_id), TeamMember.team_id.in_(teams)
            )
        )
    labels: dict[str, str] = {}
    for item in label:
        key, sep, value = item.partition(":")
        if not sep or not key or len(key) > 100 or len(value) > 255:
            raise DomainError(f"label filter {item[:120]!r} must be key:value")
        labels[key] = value
    filters = incident_service.IncidentFilter(
        statuses=status_,
        severities=severity,
        service_id=service_id,
        assignee_id=None if assignee_id is None else (
            user.id if assignee_id == "me" else int(assignee_id)
        ),
        labels=labels,
        created_after=created_after,
        created_before=created_before,
        q=q,
        team_ids=teams,
        visible=authz.visible_service(principal, Incident.service_id),
    )  # fmt: skip
    items, next_cursor = await incident_service.list_page_read(
        session, filters=filters, sort=sort, limit=limit, cursor=cursor
    )
    # Rows straight to JSON: `Page[IncidentRead]` describes it (see `json_response`).
    return json_response({"items": items, "next_cursor": next_cursor})


@router.post(
    "/",
    response_model=IncidentRead,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": IncidentRead, "description": "An open incident had this dedup_key"},
        422: {"description": "Invalid body, or an unknown service_id"},
    },
)
async def create_incident(body: IncidentCreate, request: Request, caller: CurrentCaller) -> object:
    """Open an incident (status `triggered`). `service` names a service, created if new."""
    wanted = incident_flow.Wanted(
        Actor("user", caller.user_id, ""), body.title, body.description, body.severity,
        body.service_id, body.service, body.labels, body.custom_fields, body.dedup_key,
    )  # fmt: skip
    # Requests that arrive together are written in one transaction (app.core.batching); the
    # token's user is checked there too (an API key's was checked by `CurrentCaller`).
    batcher: Batcher[incident_flow.OpenJob] = request.app.state.incident_batcher
    job = incident_flow.OpenJob(
        caller.user_id, caller.token_version, wanted, key_principal=caller.key_principal
    )
    incident, created = await batcher.submit(job)
    for_the_logs(caller.user_id)
    if created:
        return incident
    return JSONResponse(IncidentRead.model_validate(incident).model_dump(mode="json"), 200)


@router.get("/{incident_id}", response_model=IncidentRead, responses=NOT_FOUND)
async def read_incident(incident: ValidIncident) -> object:
    """One incident."""
    return incident


@router.put(
    "/{incident_id}",
    response_model=IncidentRead,
    responses={
        **NOT_FOUND,
        409: {
            "description": "Stale version, or an open incident on the new service has its dedup key"
        },
    },
)
async def update_incident(
    body: IncidentUpdate,
    incident: LockedIncident,
    session: SessionDep,
    user: CurrentUser,
    clock: ClockDep,
    if_match: Annotated[
        str | None,
        Header(
            max_length=40,
            pattern=r'^(W/)?"?[0-9]{1,9}"?$',
            description='The version you read, e.g. `3` or `"3"`',
        ),
    ] = None,
) -> object:
    """Change title, description, severity, service, labels or custom fields."""
    expected = body.version
    if if_match is not None:
        match = re.fullmatch(r'\s*(?:W/)?"?([0-9]{1,9})"?\s*', if_match)
        if match is None:
            raise DomainError('If-Match must be the incident version, e.g. "3"')
        if expected is not None and int(match.group(1)) != expected:
            raise DomainError("If-Match and version disagree")
        expected = int(match.group(1))
    changes = body.model_dump(exclude_unset=True, exclude={"version"})
    return await incident_flow.update(
        session,
        incident=incident,
        changes=changes,
        expected_version=expected,
        actor=Actor.of(user),
        now=clock.now(),
    )


@router.post(
    "/{incident_id}/acknowledge", response_model=IncidentRead, responses=NOT_FOUND | CONFLICT
)
async def acknowledge_incident(
    incident: LockedIncident,
    session: SessionDep,
    user: CurrentUser,
    clock: ClockDep,
    body: TransitionBody | None = None,
) -> object:
    """Triggered → acknowledged. Acknowledging again is a no-op."""
    return await incident_flow.acknowledge(
        session, incident=incident, actor=Actor.of(user), now=clock.now(), note=_note(body)
    )


@router.post("/{incident_id}/resolve", response_model=IncidentRead, responses=NOT_FOUND | CONFLICT)
async def resolve_incident(
    incident: LockedIncident,
    session: SessionDep,
    user: CurrentUser,
    clock: ClockDep,
    body: TransitionBody | None = None,
) -> object:
    """Any open status → resolved. Resolving again is a no-op."""
    return await incident_flow.resolve(
        session, incident=incident, actor=Actor.of(user), now=clock.now(), note=_note(body)
    )


@router.post("/{incident_id}/snooze", response_model=IncidentRead, responses=NOT_FOUND | CONFLICT)
async def snooze_incident(
    incident: LockedIncident,
    session: SessionDep,
    user: CurrentUser,
    clock: ClockDep,
    body: SnoozeRequest | None = None,
    minutes: Annotated[int | None, Query(ge=1, le=10_080)] = None,
    hours: Annotated[int | None, Query(ge=1, le=168)] = None,
    until: UtcDateTime | None = None,
) -> object:
    """Triggered or acknowledged → snoozed until a time; it returns to triggered by itself then.

    Give `minutes` (1–10,080), `hours` (1–168) or `until` (within 7 days), in the JSON body or the
    query string. Snoozing a snoozed incident moves the end of the snooze.
    """
    # The duration may come in the query string and a note in the body, or both in either.
    given = body.model_dump(exclude_unset=True) if body else {}
    query = {"minutes": minutes, "hours": hours, "until": until}
    try:
        body = SnoozeBody(**({k: v for k, v in query.items() if v is not None} | given))
    except ValidationError as exc:
        raise DomainError(exc.errors()[0]["msg"]) from None
    now = clock.now()
    if body.until is not None:
        end = body.until
    elif body.minutes is not None:
        end = now + timedelta(minutes=body.minutes)
    else:
        end = now + timedelta(hours=body.hours or 0)
    return await incident_flow.snooze(
        session, incident=incident, until=end, actor=Actor.of(user), now=now, note=body.note
    )


@router.post("/{incident_id}/unsnooze", response_model=IncidentRead, responses=NOT_FOUND | CONFLICT)
async def unsnooze_incident(
    incident: LockedIncident, session: SessionDep, user: CurrentUser, clock: ClockDep
) -> object:
    """Snoozed → triggered now, before the snooze ends."""
    return await incident_flow.unsnooze(
        session, incident=incident, actor=Actor.of(user), now=clock.now()
    )


@router.post(
    "/{incident_id}/unacknowledge", response_model=IncidentRead, responses=NOT_FOUND | CONFLICT
)
async def unacknowledge_incident(
    incident: LockedIncident, session: SessionDep, user: CurrentUser, clock: ClockDep
) -> object:
    """Acknowledged → triggered: hand the incident back to escalation."""
    return await incident_flow.unacknowledge(
        session, incident=incident, actor=Actor.of(user), now=clock.now()
    )


@router.post(
    "/{incident_id}/reopen",
    response_model=IncidentRead,
    responses=NOT_FOUND
    | {409: {"description": "Not resolved, or another open incident has its dedup key"}},
)
async def reopen_incident(
    incident: LockedIncident,
    session: SessionDep,
    user: CurrentUser,
    clock: ClockDep,
    body: TransitionBody | None = None,
) -> object:
    """Resolved → triggered."""
    return await incident_flow.reopen(
        session, incident=incident, actor=Actor.of(user), now=clock.now(), note=_note(body)
    )


@router.post(
    "/{incident_id}/assign",
    response_model=IncidentRead,
    responses={**NOT_FOUND, 422: {"description": "Invalid body, or an unknown/inactive user"}},
)
async def assign_incident(
    body: AssignBody,
    incident: LockedIncident,
    session: SessionDep,
    user: CurrentUser,
    clock: ClockDep,
) -> object:
    """Set the assignees (`user_ids`), or add one person with their part (`user_id`, `role`)."""
    return await incident_flow.assign(
        session,
        incident=incident,
        actor=Actor.of(user),
        now=clock.now(),
        user_ids=body.user_ids,
        add_user_id=body.user_id,
        role=body.role,
    )


@router.post(
    "/{incident_id}/comments",
    response_model=CommentRead,
    status_code=status.HTTP_201_CREATED,
    responses=NOT_FOUND,
)
async def add_comment(
    body: CommentCreate,
    incident: ValidIncident,
    session: SessionDep,
    principal: CurrentPrincipal,
    clock: ClockDep,
) -> object:
    """Add a comment (Markdown text, up to 10,000 characters; the team's responders and
    managers, admins; an incident of no team: everyone)."""
    await authz.require_for_service(
        session, principal, Action.respond, incident.service_id, missing=""
    )
    user = principal.user
    if body.incident_id is not None and body.incident_id != incident.id:
        raise Unprocessable(
            f"incident_id: the body names incident {body.incident_id} but the path "
            f"{incident.id}; leave it out or make them the same"
        )
    return await incident_flow.comment(
        session, incident=incident, author=user, content=body.content, now=clock.now()
    )


@router.get("/{incident_id}/comments", response_model=Page[CommentRead], responses=NOT_FOUND)
async def list_comments(
    incident: ValidIncident, session: SessionDep, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> object:
    """Comments, oldest first."""
    items, next_cursor = await incident_service.list_comments(
        session, incident=incident, limit=limit, cursor=cursor
    )
    return {"items": items, "next_cursor": next_cursor}


@router.get("/{incident_id}/timeline", response_model=Page[TimelineEntryRead], responses=NOT_FOUND)
async def list_timeline(
    incident: ValidIncident, session: SessionDep, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> object:
    """Everything that happened to the incident, oldest first. Entries are never changed."""
    items, next_cursor = await incident_service.list_timeline(
        session, incident=incident, limit=limit, cursor=cursor
    )
    return {"items": items, "next_cursor": next_cursor}


def _note(body: TransitionBody | None) -> str | None:
    return body.note if body else None
