"""The console's directory pages: who is on call in every schedule, and the services with their
alert sources (ingest URLs, key prefixes, and key rotation for admins)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import HTMLResponse, Response

from app.alerts.sources import SOURCES
from app.auth import policy as authz
from app.core.deps import ClockDep, SessionDep, SettingsDep
from app.core.errors import NotFound
from app.core.schemas import MAX_ID
from app.escalation.models import EscalationPolicy
from app.integrations import service as integration_service
from app.integrations.models import Integration
from app.schedules import service as schedule_service
from app.schedules.models import Schedule
from app.schedules.oncall import Shift
from app.services.models import Service
from app.ui.auth import AdminActorDep, Browser, ViewerDep, principal_of
from app.ui.render import page
from app.users.models import User

router = APIRouter()

# The on-call page computes windows around now with the API's computation (one overrides query
# for every schedule, the rotations in Python). The work grows with the window's length times
# the rotation's pace, so each schedule gets the narrowest window that holds its current turn and
# next handoffs whole: a 4-hour rotation the first, a weekly one the last. In the last, a turn
# that began before it reads "before …", one that ends after it "after …".
WINDOWS = (
    (timedelta(days=1), timedelta(days=2)),
    (timedelta(days=4), timedelta(days=8)),
    (timedelta(days=14), timedelta(days=36)),
)
HANDOFFS = 5
MAX_SERVICES = 1000


# ---- on call -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    """A stretch of a schedule: someone (or nobody, `who` None) from `start` to `end`.
    `open_start` / `open_end`: it goes on beyond the window that was computed."""

    who: str | None
    start: datetime
    end: datetime
    open_start: bool
    open_end: bool
    start_local: str
    end_local: str


@dataclass(frozen=True)
class Rota:
    schedule: Schedule
    computed: bool  # False: its stored layers cannot be computed (logged by the service)
    current: Turn | None
    upcoming: list[Turn]


def _local(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%a %H:%M")


def turns(
    shifts: Sequence[Shift], names: dict[int, str], zone: ZoneInfo, lo: datetime, hi: datetime
) -> list[Turn]:
    """The window [lo, hi) as consecutive turns: the shifts, and the gaps between them as
    nobody's turns."""
    stretches: list[tuple[int | None, datetime, datetime]] = []
    cursor = lo
    for shift in shifts:
        if shift.start > cursor:
            stretches.append((None, cursor, shift.start))
        stretches.append((shift.user_id, shift.start, shift.end))
        cursor = shift.end
    if cursor < hi:
        stretches.append((None, cursor, hi))
    return [
        Turn(
            who=None if user_id is None else names.get(user_id, f"user {user_id}"),
            start=start,
            end=end,
            open_start=start <= lo,
            open_end=end >= hi,
            start_local=_local(start, zone),
            end_local=_local(end, zone),
        )
        for user_id, start, end in stretches
    ]


def _rota(
    schedule: Schedule,
    shifts: Sequence[Shift] | None,
    names: dict[int, str],
    now: datetime,
    window: tuple[datetime, datetime],
) -> Rota:
    if shifts is None:
        return Rota(schedule, computed=False, current=None, upcoming=[])
    every = turns(shifts, names, ZoneInfo(schedule.time_zone), *window)
    index = next(i for i, turn in enumerate(every) if turn.start <= now < turn.end)
    return Rota(
        schedule,
        computed=True,
        current=every[index],
        upcoming=every[index + 1 : index + 1 + HANDOFFS],
    )


def _whole(rota: Rota) -> bool:
    """Whether the window held the current turn and the next handoffs from end to end."""
    if not rota.computed or rota.current is None:
        return True
    shown = [rota.current, *rota.upcoming]
    return len(rota.upcoming) == HANDOFFS and not any(t.open_start or t.open_end for t in shown)


async def rotas(session: AsyncSession, now: datetime, browser: Browser) -> list[Rota]:
    """Every schedule's turn now and the next handoffs (of the schedules the user may see), from
    the API's own computation (`schedule_service.shifts`: layers, overrides, inactive users left
    out)."""
    principal = principal_of(browser)
    schedules = await schedule_service.all_schedules(
        session, visible=None if principal.is_admin else authz.visible(principal, Schedule.team_id)
    )
    found: dict[int, tuple[list[Shift] | None, tuple[datetime, datetime]]] = {}
    pending = schedules
    for back, ahead in WINDOWS:
        if not pending:
            break
        window = (now - back, now + ahead)
        computed = await schedule_service.shifts(session, pending, *window)
        found.update({s.id: (computed[s.id], window) for s in pending})
        # Names are not needed to tell whether a window was enough.
        pending = [s for s in pending if not _whole(_rota(s, computed[s.id], {}, now, window))]
    ids = {s.user_id for shifts, _ in found.values() for s in shifts or []}
    names: dict[int, str] = {}
    if ids:
        rows = await session.execute(select(User.id, User.full_name).where(User.id.in_(ids)))
        names = {user_id: name for user_id, name in rows}
    result = []
    for schedule in sorted(schedules, key=lambda s: (s.name_key, s.id)):
        shifts, window = found[schedule.id]
        result.append(_rota(schedule, shifts, names, now, window))
    return result


@router.get("/oncall", response_class=HTMLResponse)
async def oncall_page(
    request: Request, session: SessionDep, clock: ClockDep, browser: ViewerDep
) -> Response:
    now = clock.now().astimezone(UTC)
    return page(
        request,
        "oncall.html",
        browser=browser,
        rotas=await rotas(session, now, browser),
        look_ahead=WINDOWS[-1][1],
    )


# ---- services ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    integration: Integration
    url: str
    hint: str


@dataclass(frozen=True)
class NewKey:
    """A key just made by rotation: on the page that answers the rotation, and nowhere else."""

    integration: Integration
    service_name: str
    key: str


@dataclass(frozen=True)
class Listing:
    service: Service
    policy: str | None
    sources: list[Source]


def ingest_url(request: Request, base_url: str, kind: str) -> str:
    """Where an integration of this kind posts its alerts, in full."""
    return base_url + SOURCES[kind].endpoint


async def listings(
    session: AsyncSession, request: Request, base_url: str, *, browser: Browser
) -> list[Listing]:
    """The services the user may see, with their integrations where the user may inspect them
    (admins; a team's managers, their team's)."""
    principal = principal_of(browser)
    query = select(Service).order_by(Service.name_key, Service.id).limit(MAX_SERVICES)
    if not principal.is_admin:
        query = query.where(authz.visible(principal, Service.team_id))
    services = list(await session.scalars(query))
    with_integrations = (
        [s.id for s in services]
        if principal.is_admin
        else list(
            await session.scalars(
                select(Service.id).where(
                    Service.id.in_([s.id for s in services]),
                    authz.inspectable(principal, Service.team_id),
                )
            )
        )
    )
    integrations = (
        list(
            await session.scalars(
                select(Integration)
                .where(Integration.service_id.in_(with_integrations))
                .order_by(Integration.name, Integration.id)
            )
        )
        if with_integrations
        else []
    )
    policy_ids = {s.escalation_policy_id for s in services if s.escalation_policy_id is not None}
    policies = (
        {
            policy_id: name
            for policy_id, name in await session.execute(
                select(EscalationPolicy.id, EscalationPolicy.name).where(
                    EscalationPolicy.id.in_(policy_ids)
                )
            )
        }
        if policy_ids
        else {}
    )
    by_service: dict[int, list[Source]] = {}
    for integration in integrations:
        by_service.setdefault(integration.service_id, []).append(
            Source(
                integration,
                ingest_url(request, base_url, integration.kind),
                SOURCES[integration.kind].key_hint,
            )
        )
    return [
        Listing(
            service,
            policies.get(service.escalation_policy_id)
            if service.escalation_policy_id is not None
            else None,
            by_service.get(service.id, []),
        )
        for service in services
    ]


async def _services_page(
    request: Request,
    session: AsyncSession,
    browser: Browser,
    base_url: str,
    *,
    new_key: NewKey | None = None,
    notice: str | None = None,
    status: int = 200,
) -> Response:
    # Integrations (names, key prefixes) are listed to those who may inspect them, as the API does.
    found = await listings(session, request, base_url, browser=browser)
    response = page(
        request,
        "services.html",
        status_code=status,
        browser=browser,
        listings=found,
        truncated=len(found) >= MAX_SERVICES,
        new_key=new_key,
        notice=notice,
    )
    if new_key is not None:
        # The one page that holds a key in full: kept out of every cache.
        response.headers["Cache-Control"] = "no-store"
    if new_key is not None or notice is not None:
        # The address bar shows the services page, not the rotation's address.
        response.headers["HX-Push-Url"] = "/ui/services"
    return response


@router.get("/services", response_class=HTMLResponse)
async def services_page(
    request: Request, session: SessionDep, settings: SettingsDep, browser: ViewerDep
) -> Response:
    return await _services_page(request, session, browser, settings.public_base_url)


@router.post(
    "/services/{service_id}/integrations/{integration_id}/rotate", response_class=HTMLResponse
)
async def rotate_key(
    service_id: int,
    integration_id: int,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    browser: AdminActorDep,
    key_prefix: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Replace an integration's key (admin), as the API's rotate does; the page that answers
    shows the new key, this once (it is not redirected to: the key is never stored).

    The form names the key it means to replace (`key_prefix`, the prefix it showed): a form sent
    again (a reload of the answer with JavaScript off, a double submit) finds that key already
    replaced and changes nothing, instead of rotating a key just handed out."""
    integration = (
        await integration_service.get(session, service_id=service_id, integration_id=integration_id)
        if 0 < service_id <= MAX_ID and 0 < integration_id <= MAX_ID
        else None
    )
    if integration is None:
        raise NotFound(f"Integration {integration_id} not found on service {service_id}")
    # The row is locked before the check: two submits in flight at once (PostgreSQL) must not
    # both see the old key and both rotate.
    await session.refresh(integration, with_for_update=True)
    if key_prefix != integration.key_prefix:
        notice = (
            f"The key of “{integration.name}” was not rotated: the form was for a key that was "
            "already replaced (a reload or a second submit). Nothing changed; rotate again from "
            "this page if you meant to."
        )
        return await _services_page(
            request, session, browser, settings.public_base_url, notice=notice, status=409
        )
    key = await integration_service.rotate(session, integration=integration, now=clock.now())
    service = await session.get(Service, integration.service_id)
    new_key = NewKey(integration, service.name if service else "", key)
    return await _services_page(
        request, session, browser, settings.public_base_url, new_key=new_key
    )
