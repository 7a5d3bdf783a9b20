from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from app.auth import policy
from app.auth.dependencies import CurrentPrincipal
from app.auth.policy import Action
from app.core.deps import ClockDep, SessionDep
from app.core.schemas import MAX_ID, CursorQuery, IdPath, LimitQuery, Page
from app.services import service as service_service
from app.services.models import Service
from app.services.schemas import ServiceCreate, ServiceRead, ServiceUpdate
from app.teams.dependencies import may_give_to

router = APIRouter(prefix="/services", tags=["services"])


async def valid_service(
    service_id: IdPath, session: SessionDep, principal: CurrentPrincipal
) -> Service:
    """The service, when the caller may see it (404 otherwise)."""
    service = await service_service.get(session, service_id)
    return await policy.found(
        session, principal, Action.read, service, missing=f"Service {service_id} not found"
    )


ValidService = Annotated[Service, Depends(valid_service)]


async def configurable_service(
    service: ValidService, session: SessionDep, principal: CurrentPrincipal
) -> Service:
    """The service, when the caller may change it (its team's managers, admins)."""
    await policy.require(session, principal, Action.configure, service.team_id, missing="")
    return service


ConfigurableService = Annotated[Service, Depends(configurable_service)]


@router.get("/", response_model=Page[ServiceRead])
async def list_services(
    session: SessionDep,
    principal: CurrentPrincipal,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    is_active: bool | None = None,
    q: Annotated[str | None, Query(max_length=200, description="Part of the name")] = None,
    team_id: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Owned by this team")] = None,
) -> object:
    """List services (a private team's only to its members and admins)."""
    items, next_cursor = await service_service.list_page(
        session, limit=limit, cursor=cursor, is_active=is_active, q=q, team_id=team_id,
        visible=policy.visible(principal, Service.team_id),
    )  # fmt: skip
    return {"items": items, "next_cursor": next_cursor}


@router.post(
    "/",
    response_model=ServiceRead,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "Name taken (names are unique whatever their case)"}},
)
async def create_service(
    body: ServiceCreate, session: SessionDep, clock: ClockDep, principal: CurrentPrincipal
) -> object:
    """Create a service (admins; a team's managers, for their team)."""
    await may_give_to(session, principal, body.team_id)
    return await service_service.create(
        session,
        name=body.name,
        description=body.description,
        is_active=body.is_active,
        escalation_policy_id=body.escalation_policy_id,
        slack_channel=body.slack_channel,
        team_id=body.team_id,
        now=clock.now(),
    )


@router.get("/{service_id}", response_model=ServiceRead)
async def read_service(service: ValidService) -> object:
    """One service."""
    return service


@router.put(
    "/{service_id}", response_model=ServiceRead, responses={409: {"description": "Name taken"}}
)
async def update_service(
    body: ServiceUpdate,
    service: ConfigurableService,
    session: SessionDep,
    clock: ClockDep,
    principal: CurrentPrincipal,
) -> object:
    """Rename, describe, activate or deactivate a service, or give it to another team (admins;
    the team's managers; giving it to a team needs that team's manager role too)."""
    changes = body.model_dump(exclude_unset=True)
    if "team_id" in changes and changes["team_id"] != service.team_id:
        await may_give_to(session, principal, changes["team_id"])
    return await service_service.update(session, service=service, changes=changes, now=clock.now())


@router.delete(
    "/{service_id}",
    response_model=ServiceRead,
    responses={409: {"description": "Incidents belong to it; deactivate it instead"}},
)
async def delete_service(service: ConfigurableService, session: SessionDep) -> object:
    """Delete a service that no incident belongs to (admins, the team's managers); answers with
    the deleted service."""
    return await service_service.delete(session, service=service)
