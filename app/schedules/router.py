"""On-call schedules (their team's managers write, users read), who is on call, and calendar
feeds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import Response
from pydantic import AfterValidator
from sqlalchemy import select

from app.auth import policy as authz
from app.auth.dependencies import CurrentPrincipal, CurrentUser
from app.auth.policy import Action, Principal
from app.core.actors import Actor
from app.core.deps import ClockDep, SessionDep
from app.core.errors import NotFound, Unauthorized
from app.core.schemas import MAX_ID, CursorQuery, IdPath, LimitQuery, Page, UtcDateTime
from app.flows import schedules as schedule_flow
from app.schedules import calendar
from app.schedules import service as schedule_service
from app.schedules.models import Schedule, ScheduleOverride
from app.schedules.oncall import Shift
from app.schedules.schemas import (
    CalendarLink,
    EveryOnCall,
    MyShifts,
    OnCall,
    OverrideCreate,
    OverrideRead,
    PersonRead,
    ScheduleChangeRead,
    ScheduleCreate,
    ScheduleRead,
    ScheduleUpdate,
    Shifts,
    in_range,
)
from app.teams.dependencies import may_give_to
from app.users.models import User

router = APIRouter(prefix="/schedules", tags=["schedules"])
# What a calendar feed covers, around the moment it is fetched.
FEED_PAST, FEED_AHEAD = timedelta(days=7), timedelta(days=60)
CANNOT_COMPUTE = "cannot be computed from its stored layers (see the logs)"
oncall_router = APIRouter(tags=["schedules"])

Moment = Annotated[UtcDateTime, AfterValidator(in_range)]
AtQuery = Annotated[Moment | None, Query(description="An instant with an offset; default: now")]
StartQuery = Annotated[Moment | None, Query(description="Default: now")]
EndQuery = Annotated[
    Moment | None, Query(description="Default: 7 days after start; at most 90 days after")
]
TokenQuery = Annotated[
    str | None, Query(max_length=256, description="The feed's secret, from its calendar URL")
]


async def valid_schedule(
    schedule_id: IdPath, session: SessionDep, principal: CurrentPrincipal
) -> Schedule:
    """The schedule, when the caller may see it (404 otherwise)."""
    schedule = await schedule_service.get(session, schedule_id)
    missing = f"Schedule {schedule_id} not found"
    return await authz.found(session, principal, Action.read, schedule, missing=missing)


ValidSchedule = Annotated[Schedule, Depends(valid_schedule)]


async def changeable_schedule(
    schedule: ValidSchedule, session: SessionDep, principal: CurrentPrincipal
) -> Schedule:
    """The schedule, when the caller may change it (admins, its team's managers)."""
    await authz.require(session, principal, Action.configure, schedule.team_id, missing="")
    return schedule


ChangeableSchedule = Annotated[Schedule, Depends(changeable_schedule)]


async def _may_override(
    session: SessionDep, principal: Principal, schedule: Schedule, user_id: int
) -> None:
    """Taking a shift yourself (an override naming you) needs the team's responder role;
    putting someone else on call, its manager role (admins: both)."""
    action = Action.respond if user_id == principal.user_id else Action.configure
    await authz.require(session, principal, action, schedule.team_id, missing="")


async def _users(session: SessionDep, ids: set[int]) -> dict[int, User]:
    if not ids:
        return {}
    return {u.id: u for u in await session.scalars(select(User).where(User.id.in_(ids)))}


def _window(
    start: datetime | None, end: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    start = start or now
    end = end or start + timedelta(days=7)
    schedule_service.check_window(start, end)
    return start, end


def _person(user: User, viewer: Principal) -> PersonRead:
    """Someone on a schedule as `viewer` may see them: contact details for admins and the
    person themself only (a schedule is read by every user)."""
    person = PersonRead.model_validate(user)
    if viewer.is_admin or viewer.user_id == user.id:
        return person
    return person.model_copy(update={"email": None, "phone": None})


async def _shifts_answer(
    session: SessionDep, shifts: Sequence[Shift], viewer: Principal
) -> dict[str, Any]:
    users = await _users(session, {s.user_id for s in shifts})
    return {
        "items": [
            {"user": _person(users[s.user_id], viewer), "start": s.start, "end": s.end}
            for s in shifts
            if s.user_id in users
        ]
    }


def _calendar_link(request: Request, route: str, token: str, **params: str) -> dict[str, str]:
    """The feed's address under PUBLIC_BASE_URL: never built from the request's Host header,
    which a client chooses (a link with a secret in it must not point at someone else's host)."""
    path = request.app.url_path_for(route, **params)
    base = request.app.state.settings.public_base_url
    return {"url": f"{base}{path}?token={token}"}


def _feed(name: str, events: list[calendar.Event], now: datetime) -> Response:
    body = calendar.feed(name=name, events=events, now=now)
    return Response(body, media_type="text/calendar; charset=utf-8")


def _override_answer(override: ScheduleOverride, user: User, viewer: Principal) -> dict[str, Any]:
    return {
        "id": override.id, "schedule_id": override.schedule_id, "user": _person(user, viewer),
        "start": override.start_at, "end": override.end_at, "created_at": override.created_at,
    }  # fmt: skip


@router.get("/", response_model=Page[ScheduleRead])
async def list_schedules(
    session: SessionDep,
    principal: CurrentPrincipal,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    q: Annotated[str | None, Query(max_length=200, description="Part of the name")] = None,
    team_id: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Owned by this team")] = None,
) -> object:
    """List schedules (a private team's only to its members and admins)."""
    items, next_cursor = await schedule_service.list_page(
        session, limit=limit, cursor=cursor, q=q, team_id=team_id,
        visible=authz.visible(principal, Schedule.team_id),
    )  # fmt: skip
    return {"items": items, "next_cursor": next_cursor}


@router.post(
    "/",
    response_model=ScheduleRead,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "Name taken"}, 422: {"description": "Unknown users"}},
)
async def create_schedule(
    body: ScheduleCreate, session: SessionDep, clock: ClockDep, principal: CurrentPrincipal
) -> object:
    """Create a schedule (admins; a team's managers, for their team): a time zone and layers of
    rotations."""
    await may_give_to(session, principal, body.team_id)
    return await schedule_service.create(
        session, name=body.name, description=body.description, time_zone=body.time_zone,
        layers=[layer.model_dump(mode="json") for layer in body.layers], team_id=body.team_id,
        actor=Actor.of(principal.user), now=clock.now(),
    )  # fmt: skip


@router.get("/{schedule_id}", response_model=ScheduleRead)
async def read_schedule(schedule: ValidSchedule) -> object:
    """One schedule."""
    return schedule


@router.put(
    "/{schedule_id}",
    response_model=ScheduleRead,
    responses={409: {"description": "Name taken"}, 422: {"description": "Unknown users"}},
)
async def update_schedule(
    body: ScheduleUpdate, schedule: ChangeableSchedule, session: SessionDep, clock: ClockDep,
    principal: CurrentPrincipal,
) -> object:  # fmt: skip
    """Change a schedule (admins, its team's managers; giving it to another team needs that
    team's manager role too); `layers` replaces every layer."""
    changes = body.model_dump(mode="json", exclude_unset=True)
    if "team_id" in changes and changes["team_id"] != schedule.team_id:
        await may_give_to(session, principal, changes["team_id"])
    return await schedule_service.update(
        session, schedule=schedule, changes=changes, actor=Actor.of(principal.user),
        now=clock.now(),
    )  # fmt: skip


@router.delete(
    "/{schedule_id}",
    response_model=ScheduleRead,
    responses={409: {"description": "An escalation policy pages it"}},
)
async def delete_schedule(schedule: ChangeableSchedule, session: SessionDep) -> object:
    """Delete a schedule that no escalation policy targets (admins, its team's managers)."""
    return await schedule_flow.delete(session, schedule=schedule)


@router.get("/{schedule_id}/history", response_model=list[ScheduleChangeRead])
async def schedule_history(schedule: ValidSchedule, session: SessionDep) -> object:
    """Every change to the schedule, oldest first: who, what, when."""
    return await schedule_service.history(session, schedule.id)


@router.get("/{schedule_id}/overrides", response_model=list[OverrideRead])
async def list_overrides(
    schedule: ValidSchedule, session: SessionDep, clock: ClockDep, viewer: CurrentPrincipal,
    start: StartQuery = None, end: EndQuery = None,
) -> object:  # fmt: skip
    """The overrides overlapping [start, end) (default: the next 7 days), oldest first."""
    start, end = _window(start, end, clock.now())
    found = await schedule_service.overrides(session, [schedule.id], start, end)
    users = await _users(session, {o.user_id for o in found})
    return [_override_answer(o, users[o.user_id], viewer) for o in found]


@router.post(
    "/{schedule_id}/overrides",
    response_model=OverrideRead,
    status_code=status.HTTP_201_CREATED,
    responses={422: {"description": "Unknown or inactive user, or end not after start"}},
)
async def create_override(
    body: OverrideCreate, schedule: ValidSchedule, session: SessionDep, clock: ClockDep,
    principal: CurrentPrincipal,
) -> object:  # fmt: skip
    """Put someone on call from start to end, over every layer; the newest override wins where
    overrides overlap. Taking a shift yourself needs the team's responder role, putting
    someone else on call its manager role (admins may do both; a schedule of no team: admins,
    or anyone taking a shift themself)."""
    await _may_override(session, principal, schedule, body.user_id)
    override = await schedule_service.add_override(
        session, schedule=schedule, user_id=body.user_id, start=body.start, end=body.end,
        actor=Actor.of(principal.user), now=clock.now(),
    )  # fmt: skip
    user = await session.get(User, override.user_id)
    assert user is not None
    return _override_answer(override, user, principal)


@router.delete("/{schedule_id}/overrides/{override_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_override(
    override_id: IdPath, schedule: ValidSchedule, session: SessionDep, clock: ClockDep,
    principal: CurrentPrincipal,
) -> Response:  # fmt: skip
    """Remove an override (your own: the team's responders; anyone's: its managers, admins)."""
    override = await schedule_service.get_override(
        session, schedule_id=schedule.id, override_id=override_id
    )
    if override is None:
        raise NotFound(f"Override {override_id} not found in schedule {schedule.id}")
    await _may_override(session, principal, schedule, override.user_id)
    await schedule_service.delete_override(
        session, override=override, actor=Actor.of(principal.user), now=clock.now()
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{schedule_id}/on-call", response_model=OnCall)
async def on_call(
    schedule: ValidSchedule,
    session: SessionDep,
    clock: ClockDep,
    viewer: CurrentPrincipal,
    at: AtQuery = None,
) -> object:
    """Who is on call at `at` (default: now): an empty list when nobody is."""
    at = at or clock.now()
    found = (await schedule_service.on_call(session, [schedule], at))[schedule.id]
    named = schedule_service.computed(schedule, found)
    users = await _users(session, set(named))
    return {"at": at, "users": [_person(users[uid], viewer) for uid in named if uid in users]}


@router.get("/{schedule_id}/shifts", response_model=Shifts)
async def shifts(
    schedule: ValidSchedule, session: SessionDep, clock: ClockDep, viewer: CurrentPrincipal,
    start: StartQuery = None, end: EndQuery = None,
) -> object:  # fmt: skip
    """The final shifts in [start, end): layers merged, overrides applied, one person's
    adjacent shifts joined; gaps where nobody is on call. At most 90 days per call."""
    start, end = _window(start, end, clock.now())
    found = (await schedule_service.shifts(session, [schedule], start, end))[schedule.id]
    return await _shifts_answer(session, schedule_service.computed(schedule, found), viewer)


@router.post("/{schedule_id}/calendar-url", response_model=CalendarLink)
async def schedule_calendar_url(
    request: Request, schedule: ChangeableSchedule, session: SessionDep
) -> object:
    """A new secret URL for the schedule's iCal feed (admins, its team's managers); the previous
    URL stops working."""
    token = await schedule_service.new_calendar_token(session, schedule=schedule)
    return _calendar_link(request, "schedule_calendar", token, schedule_id=str(schedule.id))


@router.get(
    "/{schedule_id}/calendar.ics",
    name="schedule_calendar",
    response_class=Response,
    responses={
        200: {"content": {"text/calendar": {}}, "description": "The shifts as iCal events"},
        401: {"description": "No token, or not this feed's"},
    },
)
async def schedule_calendar(
    schedule_id: IdPath, session: SessionDep, clock: ClockDep, token: TokenQuery = None
) -> Response:
    """The schedule's shifts from 7 days ago to 60 days ahead, as an iCal feed for calendar
    apps; authenticated by the secret token in its URL (see `calendar-url`), not a bearer token.
    """
    schedule = await schedule_service.get(session, schedule_id)
    if schedule is None or not schedule_service.calendar_token_matches(schedule, token):
        raise Unauthorized("A valid calendar token is required")
    now = clock.now()
    start, end = now - FEED_PAST, now + FEED_AHEAD
    found = schedule_service.computed(
        schedule, (await schedule_service.shifts(session, [schedule], start, end))[schedule.id]
    )
    users = await _users(session, {s.user_id for s in found})
    return _feed(schedule.name, [
        calendar.Event(f"schedule-{schedule.id}-{s.user_id}-{int(s.start.timestamp())}",
                       f"On call: {users[s.user_id].full_name}", s.start, s.end)
        for s in found if s.user_id in users
    ], now)  # fmt: skip


@oncall_router.get("/oncall", response_model=EveryOnCall)
async def every_on_call(
    session: SessionDep, clock: ClockDep, viewer: CurrentPrincipal, at: AtQuery = None
) -> object:
    """Who is on call in every schedule the caller may see at `at` (default: now)."""
    at = at or clock.now()
    schedules = await schedule_service.all_schedules(
        session, visible=authz.visible(viewer, Schedule.team_id)
    )
    named = await schedule_service.on_call(session, schedules, at)
    users = await _users(session, {uid for ids in named.values() for uid in ids or []})
    return {
        "at": at,
        "items": [
            {"schedule": s,
             "users": [_person(users[uid], viewer) for uid in named[s.id] or [] if uid in users],
             "error": None if named[s.id] is not None else CANNOT_COMPUTE}
            for s in schedules
        ],
    }  # fmt: skip


@oncall_router.get("/users/me/shifts", response_model=MyShifts)
async def my_shifts(
    session: SessionDep, clock: ClockDep, user: CurrentUser,
    start: StartQuery = None, end: EndQuery = None,
) -> object:  # fmt: skip
    """The signed-in user's shifts in every schedule in [start, end) (default: the next 7 days;
    at most 90)."""
    start, end = _window(start, end, clock.now())
    found = await schedule_service.user_shifts(session, user_id=user.id, start=start, end=end)
    return {"items": [{"schedule": s, "start": x.start, "end": x.end} for s, x in found]}


@oncall_router.post("/users/me/calendar-url", response_model=CalendarLink)
async def my_calendar_url(
    request: Request, session: SessionDep, clock: ClockDep, user: CurrentUser
) -> object:
    """A new secret URL for the signed-in user's own iCal feed (their shifts in every
    schedule); the previous URL stops working."""
    token = await schedule_service.new_user_calendar_token(
        session, user_id=user.id, now=clock.now()
    )
    return _calendar_link(request, "user_calendar", token, user_id=str(user.id))


@oncall_router.get(
    "/users/{user_id}/calendar.ics",
    name="user_calendar",
    response_class=Response,
    responses={
        200: {"content": {"text/calendar": {}}, "description": "The user's shifts as events"},
        401: {"description": "No token, or not this feed's"},
    },
)
async def user_calendar(
    user_id: IdPath, session: SessionDep, clock: ClockDep, token: TokenQuery = None
) -> Response:
    """A user's shifts in every schedule, 7 days back to 60 ahead, as an iCal feed;
    authenticated by the secret token in its URL (see `/v1/users/me/calendar-url`)."""
    if not await schedule_service.user_calendar_token_matches(
        session, user_id=user_id, token=token
    ):
        raise Unauthorized("A valid calendar token is required")
    now = clock.now()
    found = await schedule_service.user_shifts(
        session, user_id=user_id, start=now - FEED_PAST, end=now + FEED_AHEAD
    )
    return _feed("My on-call shifts", [
        calendar.Event(f"user-{user_id}-{s.id}-{int(x.start.timestamp())}", f"On call: {s.name}",
                       x.start, x.end)
        for s, x in found
    ], now)  # fmt: skip
