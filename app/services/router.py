from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from app.auth.dependencies import AdminUser, CurrentUser
from app.core.deps import ClockDep, SessionDep
from app.core.errors import NotFound
from app.core.schemas import CursorQuery, IdPath, LimitQuery, Page
from app.services import service as service_service
from app.services.models import Service
from app.services.schemas import ServiceCreate, ServiceRead, ServiceUpdate

router = APIRouter(prefix="/services", tags=["services"])


async def valid_service(service_id: IdPath, session: SessionDep, _: CurrentUser) -> Service:
    service = await service_service.get(session, service_id)
    if service is None:
        raise NotFound(f"Service {service_id} not found")
    return service


ValidService = Annotated[Service, Depends(valid_service)]


@router.get("/", response_model=Page[ServiceRead])
async def list_services(
    session: SessionDep,
    _: CurrentUser,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    is_active: bool | None = None,
    q: Annotated[str | None, Query(max_length=200, description="Part of the name")] = None,
) -> object:
    """List services."""
    items, next_cursor = await service_service.list_page(
        session, limit=limit, cursor=cursor, is_active=is_active, q=q
    )
    return {"items": items, "next_cursor": next_cursor}


@router.post(
    "/",
    response_model=ServiceRead,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "Name taken (names are unique whatever their case)"}},
)
async def create_service(
    body: ServiceCreate, session: SessionDep, clock: ClockDep, _: AdminUser
) -> object:
    """Create a service (admin)."""
    return await service_service.create(
        session,
        name=body.name,
        description=body.description,
        is_active=body.is_active,
        escalation_policy_id=body.escalation_policy_id,
        slack_channel=body.slack_channel,
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
    body: ServiceUpdate, service: ValidService, session: SessionDep, clock: ClockDep, _: AdminUser
) -> object:
    """Rename, describe, activate or deactivate a service (admin)."""
    changes = body.model_dump(exclude_unset=True)
    return await service_service.update(session, service=service, changes=changes, now=clock.now())


@router.delete(
    "/{service_id}",
    response_model=ServiceRead,
    responses={409: {"description": "Incidents belong to it; deactivate it instead"}},
)
async def delete_service(service: ValidService, session: SessionDep, _: AdminUser) -> object:
    """Delete a service that no incident belongs to (admin); answers with the deleted service."""
    return await service_service.delete(session, service=service)
