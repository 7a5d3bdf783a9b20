"""The console's analytics page: the report of `GET /v1/analytics/incidents`, drawn, from the
snapshots the worker keeps fresh (app/analytics/snapshots.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import HTMLResponse, Response

from app.analytics import snapshots
from app.core.deps import ClockDep, SessionDep, writes_when_reading
from app.core.schemas import MAX_ID
from app.ui import charts
from app.ui.auth import ViewerDep
from app.ui.incidents import services_menu
from app.ui.render import page

router = APIRouter()

RANGES = {"7": "7 days", "30": "30 days", "90": "90 days", "365": "365 days"}


@router.get("/analytics", response_class=HTMLResponse)
@writes_when_reading  # computed figures are kept (analytics_snapshots)
async def analytics_page(
    request: Request,
    session: SessionDep,
    browser: ViewerDep,
    clock: ClockDep,
    days: Annotated[str, Query(pattern="^(7|30|90|365)$")] = "30",
    service: Annotated[str, Query(pattern=r"^[0-9]{0,18}$")] = "",
) -> Response:
    service_id = int(service) if service and 0 < int(service) <= MAX_ID else None
    report, computed_at = await snapshots.read(
        session, days=int(days), service_id=service_id, now=clock.now()
    )
    pages = [(row.full_name, row.pages) for row in report.pages_by_user]
    noisy = [(row.name, row.incidents) for row in report.noisiest_services]
    return page(
        request,
        "analytics.html",
        browser=browser,
        report=report,
        computed_at=computed_at,
        ranges=RANGES,
        days=days,
        service=service,
        services=await services_menu(session, browser),
        opened_chart=charts.opened_by_day(report.opened_by_day),
        pages_chart=charts.horizontal_bars(pages, title="Pages sent per person", unit="pages"),
        services_chart=charts.horizontal_bars(
            noisy, title="Incidents per service", unit="incidents"
        ),
    )
