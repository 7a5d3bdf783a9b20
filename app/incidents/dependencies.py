from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.auth.dependencies import CurrentUser
from app.core.deps import SessionDep
from app.core.errors import NotFound
from app.core.schemas import IdPath
from app.incidents import service as incident_service
from app.incidents.models import Incident


async def valid_incident(incident_id: IdPath, session: SessionDep, _: CurrentUser) -> Incident:
    incident = await incident_service.get(session, incident_id)
    if incident is None:
        raise NotFound(f"Incident {incident_id} not found")
    return incident


async def locked_incident(incident_id: IdPath, session: SessionDep, _: CurrentUser) -> Incident:
    """The incident, row-locked for the rest of the request's transaction (for changes)."""
    incident = await incident_service.get(session, incident_id, lock=True)
    if incident is None:
        raise NotFound(f"Incident {incident_id} not found")
    return incident


ValidIncident = Annotated[Incident, Depends(valid_incident)]
LockedIncident = Annotated[Incident, Depends(locked_incident)]
