"""Incident analytics: what the console's charts draw (every signed-in user, as for incidents)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AfterValidator
from sqlalchemy import select

from app.analytics import service as analytics_service
from app.analytics.schemas import IncidentAnalytics
from app.auth import policy as authz
from app.auth.dependencies import CurrentPrincipal
from app.core.deps import ClockDep, SessionDep, writes_when_reading
from app.core.errors import NotFound
from app.core.schemas import MAX_ID, UtcDateTime
from app.schedules.schemas import in_range
from app.services.models import Service

router = APIRouter(prefix="/analytics", tags=["analytics"])

Moment = Annotated[UtcDateTime, AfterValidator(in_range)]


@router.get(
    "/incidents",
    response_model=IncidentAnalytics,
    responses={422: {"description": "Invalid parameters, end not after start, or over 366 days"}},
)
@writes_when_reading  # computed figures are kept (analytics_snapshots)
async def incident_analytics(
    session: SessionDep,
    principal: CurrentPrincipal,
    clock: ClockDep,
    start: Annotated[
        Moment | None, Query(description="Inclusive; default: 30 days before end")
    ] = None,
    end: Annotated[
        Moment | None,
        Query(description="Exclusive; default: now (or 30 days after start); at most 366 days"),
    ] = None,
    service_id: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Only this service's incidents")
    ] = None,
) -> object:
    """Incidents opened per day and severity, time to acknowledge and resolve (mean, p90),
    escalation steps fired, pages per user, and the noisiest services and dedup keys, for
    incidents created in [start, end). The counts are the organisation's; a private team's
    services and dedup keys are named only to its members (and admins), and its service is a 404
    to anyone else."""
    start, end = analytics_service.window(start, end, clock.now())
    hidden: set[int] = set()
    if not principal.is_admin:
        hidden = set(
            await session.scalars(
                select(Service.id).where(~authz.visible(principal, Service.team_id))
            )
        )
    if service_id in hidden:
        raise NotFound(f"Service {service_id} not found")
    found = await analytics_service.report(session, start=start, end=end, service_id=service_id)
    if hidden:
        for key in ("noisiest_services", "noisiest_dedup_keys"):
            found[key] = [row for row in found[key] if row["service_id"] not in hidden]
    return found
