from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.auth import policy as authz
from app.auth.dependencies import CurrentPrincipal
from app.auth.policy import Action
from app.core.deps import SessionDep
from app.core.errors import NotFound
from app.core.schemas import IdPath
from app.incidents import service as incident_service
from app.incidents.models import Incident


async def valid_incident(
    incident_id: IdPath, session: SessionDep, principal: CurrentPrincipal
) -> Incident:
    """The incident, when the caller may see it (404 otherwise: a private team's)."""
    incident = await incident_service.get(session, incident_id)
    missing = f"Incident {incident_id} not found"
    if incident is None:
        raise NotFound(missing)
    await authz.require_for_service(
        session, principal, Action.read, incident.service_id, missing=missing
    )
    return incident


async def locked_incident(
    incident_id: IdPath, session: SessionDep, principal: CurrentPrincipal
) -> Incident:
    """The incident, row-locked for the rest of the request's transaction, when the caller may
    act on it (its team's responders and managers, admins; an incident of no team: everyone)."""
    incident = await incident_service.get(session, incident_id, lock=True)
    missing = f"Incident {incident_id} not found"
    if incident is None:
        raise NotFound(missing)
    await authz.require_for_service(
        session, principal, Action.respond, incident.service_id, missing=missing
    )
    return incident


ValidIncident = Annotated[Incident, Depends(valid_incident)]
LockedIncident = Annotated[Incident, Depends(locked_incident)]
