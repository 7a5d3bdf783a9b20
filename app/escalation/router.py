from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status

from app.auth import policy as authz
from app.auth.dependencies import CurrentPrincipal, CurrentUser
from app.auth.policy import Action, Principal, Scope
from app.core.actors import Actor
from app.core.deps import ClockDep, SessionDep, SettingsDep
from app.core.schemas import MAX_ID, CursorQuery, IdPath, LimitQuery, Page
from app.escalation import policies as policy_service
from app.escalation import runs
from app.escalation.models import EscalationPolicy
from app.escalation.schemas import EscalationEventRead, PolicyCreate, PolicyRead, PolicyUpdate
from app.flows import paging
from app.incidents import service as incident_service
from app.incidents.dependencies import LockedIncident, ValidIncident
from app.incidents.schemas import IncidentRead
from app.teams import service as team_service
from app.teams.dependencies import may_give_to
from app.teams.models import TeamRole

policies = APIRouter(prefix="/escalation/policies", tags=["escalation"])
incidents = APIRouter(prefix="/incidents", tags=["incidents"])

Responses = dict[int | str, dict[str, Any]]
INVALID: Responses = {422: {"description": "Invalid policy (the detail says what)"}}


async def valid_policy(
    policy_id: IdPath, session: SessionDep, principal: CurrentPrincipal
) -> EscalationPolicy:
    """The policy, when the caller may see it (404 otherwise)."""
    policy = await policy_service.get_policy(session, policy_id)
    missing = f"Escalation policy {policy_id} not found"
    return await authz.found(session, principal, Action.read, policy, missing=missing)


ValidPolicy = Annotated[EscalationPolicy, Depends(valid_policy)]


async def changeable_policy(
    policy: ValidPolicy, session: SessionDep, principal: CurrentPrincipal
) -> EscalationPolicy:
    """The policy, when the caller may change it (admins, its team's managers)."""
    await authz.require(session, principal, Action.configure, policy.team_id, missing="")
    return policy


ChangeablePolicy = Annotated[EscalationPolicy, Depends(changeable_policy)]


async def _shown(
    session: SessionDep, principal: Principal, items: list[EscalationPolicy]
) -> list[PolicyRead]:
    """`items` as the caller may see them: webhook URLs only where they may change the policy."""
    roles: dict[int, TeamRole] = {}
    if principal.teams is not None:  # an organisation key's own teams
        roles = dict(principal.teams)
    elif not principal.is_admin:
        roles = await team_service.roles_of(session, principal.user_id)
    return [
        PolicyRead.model_validate(p).shown_to(
            may_change=authz.allowed(
                principal, Action.configure, Scope(p.team_id, role=roles.get(p.team_id or 0))
            )
        )
        for p in items
    ]


@policies.get("/", response_model=Page[PolicyRead])
async def list_policies(
    session: SessionDep,
    principal: CurrentPrincipal,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    is_active: bool | None = None,
    team_id: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Owned by this team")] = None,
) -> object:
    """List escalation policies (a private team's only to its members and admins; webhook URLs
    only to those who may change the policy)."""
    items, next_cursor = await policy_service.list_policies(
        session, limit=limit, cursor=cursor, is_active=is_active, team_id=team_id,
        visible=authz.visible(principal, EscalationPolicy.team_id),
    )  # fmt: skip
    return {"items": await _shown(session, principal, items), "next_cursor": next_cursor}


@policies.post(
    "/", response_model=PolicyRead, status_code=status.HTTP_201_CREATED, responses=INVALID
)
async def create_policy(
    body: PolicyCreate,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
) -> object:
    """Create an escalation policy (admins; a team's managers, for their team)."""
    await may_give_to(session, principal, body.team_id)
    return await policy_service.create_policy(
        session, data=body.model_dump(mode="json"), now=clock.now(),
        allow_private=settings.allow_private_outbound,
    )  # fmt: skip


@policies.get("/{policy_id}", response_model=PolicyRead)
async def read_policy(
    policy: ValidPolicy, session: SessionDep, principal: CurrentPrincipal
) -> object:
    """One escalation policy (webhook URLs only to those who may change it)."""
    return (await _shown(session, principal, [policy]))[0]


@policies.put("/{policy_id}", response_model=PolicyRead, responses=INVALID)
async def update_policy(
    body: PolicyUpdate,
    policy: ChangeablePolicy,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
) -> object:
    """Change a policy (admins, its team's managers; giving it to another team needs that
    team's manager role too). Incidents already escalating keep the steps they started with."""
    # Only the fields given change; steps and conditions are replaced whole, with their defaults.
    dumped = body.model_dump(mode="json")
    changes = {name: dumped[name] for name in body.model_fields_set}
    if "team_id" in changes and changes["team_id"] != policy.team_id:
        await may_give_to(session, principal, changes["team_id"])
    return await policy_service.update_policy(
        session, policy=policy, changes=changes, now=clock.now(),
        allow_private=settings.allow_private_outbound,
    )  # fmt: skip


@policies.delete(
    "/{policy_id}",
    response_model=PolicyRead,
    responses={409: {"description": "Open incidents or services use it (the detail names them)"}},
)
async def delete_policy(policy: ChangeablePolicy, session: SessionDep) -> object:
    """Delete a policy no open incident or service uses (admins, its team's managers)."""
    return await policy_service.delete_policy(session, policy=policy)


@incidents.get(
    "/{incident_id}/escalation-events",
    response_model=Page[EscalationEventRead],
    responses={404: {"description": "No such incident"}},
)
async def list_escalation_events(
    incident: ValidIncident,
    session: SessionDep,
    principal: CurrentPrincipal,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> object:
    """Every step scheduled for the incident, oldest first: due, fired, cancelled, failed.
    Webhook actions show their URL to admins only."""
    items, next_cursor = await runs.list_events(
        session, incident=incident, limit=limit, cursor=cursor
    )
    shown = [
        EscalationEventRead.model_validate(item).shown_to(admin=principal.is_admin)
        for item in items
    ]
    return {"items": shown, "next_cursor": next_cursor}


@incidents.post(
    "/{incident_id}/escalate",
    response_model=IncidentRead,
    responses={
        404: {"description": "No such incident"},
        409: {"description": "Not triggered, no policy, or no step left"},
    },
)
async def escalate_incident(
    incident: LockedIncident, session: SessionDep, user: CurrentUser, clock: ClockDep
) -> object:
    """Fire the next escalation step now; the steps after it are timed from now."""
    incident_id = incident.id  # the ORM object is expired by the escalation's direct writes
    await paging.escalate_now(session, incident=incident, actor=Actor.of(user), now=clock.now())
    return await incident_service.get(session, incident_id)


# The original API's paths for the same two operations, kept for its clients (deprecated: the
# OpenAPI document says so and names the current path).
legacy = APIRouter(prefix="/escalation/incidents", tags=["escalation"], deprecated=True)
legacy.add_api_route(
    "/{incident_id}/escalation-events/",
    list_escalation_events,
    methods=["GET"],
    response_model=Page[EscalationEventRead],
    responses={404: {"description": "No such incident"}},
    summary="List escalation events (deprecated path)",
    description="The original API's path of `GET /v1/incidents/{incident_id}/escalation-events`; "
    "use that one.",
)
legacy.add_api_route(
    "/{incident_id}/escalate/",
    escalate_incident,
    methods=["POST"],
    response_model=IncidentRead,
    responses={
        404: {"description": "No such incident"},
        409: {"description": "Not triggered, no policy, or no step left"},
    },
    summary="Escalate an incident now (deprecated path)",
    description="The original API's path of `POST /v1/incidents/{incident_id}/escalate`; "
    "use that one.",
)
