"""`/v1/services/{id}/integrations` (admins, the service's team's managers): alert sources and
their keys."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, status

from app.auth import policy as authz
from app.auth.dependencies import CurrentPrincipal
from app.auth.policy import Action
from app.core.deps import ClockDep, SessionDep
from app.core.errors import NotFound
from app.core.schemas import CursorQuery, IdPath, LimitQuery, Page
from app.integrations import service as integration_service
from app.integrations.models import Integration
from app.integrations.schemas import IntegrationCreate, IntegrationRead, IntegrationUpdate
from app.services import service as service_service
from app.services.models import Service

router = APIRouter(prefix="/services/{service_id}/integrations", tags=["integrations"])
# Integrations hold keys: read by those who may change them.
MANAGERS_ONLY: dict[int | str, dict[str, Any]] = {
    403: {"description": "Only admins and the service's team's managers read them"}
}


async def admin_service(
    service_id: IdPath, session: SessionDep, principal: CurrentPrincipal
) -> Service:
    """The service, when the caller may inspect its integrations (admins, its team's managers:
    integrations hold keys)."""
    service = await service_service.get(session, service_id)
    missing = f"Service {service_id} not found"
    return await authz.found(session, principal, Action.inspect, service, missing=missing)


async def changed_service(
    service: Annotated[Service, Depends(admin_service)],
    session: SessionDep,
    principal: CurrentPrincipal,
) -> Service:
    """The service, when the caller may change its integrations."""
    await authz.require(session, principal, Action.configure, service.team_id, missing="")
    return service


async def valid_integration(
    integration_id: IdPath, service: Annotated[Service, Depends(admin_service)], session: SessionDep
) -> Integration:
    found = await integration_service.get(
        session, service_id=service.id, integration_id=integration_id
    )
    if found is None:
        raise NotFound(f"Integration {integration_id} not found on service {service.id}")
    return found


AdminService = Annotated[Service, Depends(admin_service)]
ChangedService = Annotated[Service, Depends(changed_service)]
ValidIntegration = Annotated[Integration, Depends(valid_integration)]


async def changeable_integration(
    integration: ValidIntegration, service: ChangedService
) -> Integration:
    return integration


ChangeableIntegration = Annotated[Integration, Depends(changeable_integration)]


def _with_key(integration: Integration, key: str) -> dict[str, Any]:
    shown = IntegrationRead.model_validate(integration).model_dump()
    return shown | {"key": key}


@router.get("/", response_model=Page[IntegrationRead], responses=MANAGERS_ONLY)
async def list_integrations(
    service: AdminService, session: SessionDep, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> object:
    """A service's integrations (admin); keys show only their prefix."""
    items, next_cursor = await integration_service.list_page(
        session, service_id=service.id, limit=limit, cursor=cursor
    )
    return {"items": items, "next_cursor": next_cursor}


@router.post("/", response_model=IntegrationRead, status_code=status.HTTP_201_CREATED)
async def create_integration(
    body: IntegrationCreate,
    service: ChangedService,
    session: SessionDep,
    clock: ClockDep,
    principal: CurrentPrincipal,
) -> object:
    """Add an alert source (admins, the service's team's managers). The answer holds the key,
    in full, this once."""
    integration, key = await integration_service.create(
        session, service_id=service.id, name=body.name, kind=body.kind,
        created_by=principal.user_id, now=clock.now(),
    )  # fmt: skip
    return _with_key(integration, key)


@router.get("/{integration_id}", response_model=IntegrationRead, responses=MANAGERS_ONLY)
async def read_integration(integration: ValidIntegration) -> object:
    """One integration (admins, the service's team's managers); the key shows only its
    prefix."""
    return integration


@router.put("/{integration_id}", response_model=IntegrationRead)
async def update_integration(
    body: IntegrationUpdate,
    integration: ChangeableIntegration,
    session: SessionDep,
    clock: ClockDep,
) -> object:
    """Rename an integration (admins, the service's team's managers). Its kind and service are
    fixed: make a new one instead."""
    if body.name is not None:
        integration.name = body.name
        integration.updated_at = clock.now()
        await session.flush()
    return integration


@router.post("/{integration_id}/rotate", response_model=IntegrationRead)
async def rotate_integration_key(
    integration: ChangeableIntegration, session: SessionDep, clock: ClockDep
) -> object:
    """Replace the key (admins, the service's team's managers); the old key stops working at
    once. The answer holds the new key."""
    key = await integration_service.rotate(session, integration=integration, now=clock.now())
    return _with_key(integration, key)


@router.delete("/{integration_id}", response_model=IntegrationRead)
async def delete_integration(integration: ChangeableIntegration, session: SessionDep) -> object:
    """Remove an integration (admins, the service's team's managers); its key stops working at
    once."""
    shown = IntegrationRead.model_validate(integration)
    await session.delete(integration)
    await session.flush()
    return shown
