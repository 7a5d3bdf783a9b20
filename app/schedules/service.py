"""Schedules: their layers and overrides, who is on call, and the calendar feeds. Never a commit."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.actors import Actor
from app.core.errors import Conflict, Unprocessable
from app.core.pagination import page_by_id
from app.core.tokens import hash_token, new_token
from app.schedules import oncall
from app.schedules.models import Schedule, ScheduleChange, ScheduleOverride, UserCalendar
from app.schedules.schemas import DAYS
from app.users.models import User
from app.users.queries import not_active

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_WINDOW = timedelta(days=90)
# Overrides not yet ended, per schedule: bounds the work of computing a window.
MAX_PENDING_OVERRIDES = 500


# ---- schedules -----------------------------------------------------------------------------------


async def get(session: AsyncSession, schedule_id: int) -> Schedule | None:
    return await session.get(Schedule, schedule_id)


async def list_page(
    session: AsyncSession,
    *,
    limit: int,
    cursor: str | None,
    q: str | None = None,
    team_id: int | None = None,
    visible: ColumnElement[bool] | None = None,
) -> tuple[list[Schedule], str | None]:
    """A page of schedules in id order; `visible`: the rows the caller may read."""
    query = select(Schedule)
    if visible is not None:
        query = query.where(visible)
    if team_id is not None:
        query = query.where(Schedule.team_id == team_id)
    if q:
        query = query.where(Schedule.name_key.contains(q.lower(), autoescape=True))
    return await page_by_id(session, query, Schedule.id, limit=limit, cursor=cursor)


def check_layers(time_zone: str, layers: list[dict[str, Any]], now: datetime) -> None:
    """Layers the computation can use: compute a day from now and from each layer's start."""
    zone = ZoneInfo(time_zone)
    parsed = layers_of(layers)
    try:
        starts = [layer.start.replace(tzinfo=zone).astimezone(UTC) for layer in parsed]
        for moment in [now, *starts]:
            oncall.final_shifts(zone, parsed, [], moment, moment + timedelta(days=1))
    except (OverflowError, ValueError) as exc:
        raise Unprocessable(f"layers: these times cannot be computed ({exc})") from exc


async def create(
    session: AsyncSession,
    *,
    name: str,
    description: str,
    time_zone: str,
    layers: list[dict[str, Any]],
    actor: Actor,
    now: datetime,
    team_id: int | None = None,
) -> Schedule:
    await _check_users(session, _layer_users(layers))
    check_layers(time_zone, layers, now)
    schedule = Schedule(
        name=name, name_key=name.lower(), description=description, time_zone=time_zone,
        layers=layers, team_id=team_id, created_at=now, updated_at=now,
    )  # fmt: skip
    session.add(schedule)
    await _flush_unique_name(session, name)
    record(session, schedule.id, "created", actor, now, {"name": name, "layers": len(layers)})
    return schedule


async def update(
    session: AsyncSession, *, schedule: Schedule, changes: dict[str, Any], actor: Actor,
    now: datetime,
) -> Schedule:  # fmt: skip
    if "layers" in changes:
        await _check_users(session, _layer_users(changes["layers"]))
    if "layers" in changes or "time_zone" in changes:
        check_layers(
            changes.get("time_zone", schedule.time_zone),
            changes.get("layers", schedule.layers),
            now,
        )
    changed = {k: v for k, v in changes.items() if getattr(schedule, k) != v}
    if not changed:
        return schedule
    if "name" in changed:
        schedule.name_key = changed["name"].lower()
    for field, value in changed.items():
        setattr(schedule, field, value)
    schedule.updated_at = now
    await _flush_unique_name(session, schedule.name)
    record(session, schedule.id, "updated", actor, now, {"fields": sorted(changed)})
    return schedule


async def delete(session: AsyncSession, *, schedule: Schedule) -> Schedule:
    """Delete a schedule (its overrides and history go with it); the caller checks that no
    policy pages it."""
    await session.delete(schedule)
    await session.flush()
    return schedule


def record(
    session: AsyncSession, schedule_id: int, type: str, actor: Actor, now: datetime,
    data: dict[str, Any],
) -> None:  # fmt: skip
    session.add(
        ScheduleChange(
            schedule_id=schedule_id, type=type, actor_id=actor.id if actor.type == "user" else None,
            actor_name=actor.name, data=data, created_at=now,
        )
    )  # fmt: skip


async def history(session: AsyncSession, schedule_id: int) -> list[ScheduleChange]:
    return list(
        await session.scalars(
            select(ScheduleChange)
            .where(ScheduleChange.schedule_id == schedule_id)
            .order_by(ScheduleChange.id)
        )
    )


def _layer_users(layers: Iterable[dict[str, Any]]) -> set[int]:
    return {uid for layer in layers for uid in layer["user_ids"]}


async def _check_users(session: AsyncSession, user_ids: set[int]) -> None:
    missing = await not_active(session, user_ids)
    if missing:
        raise Unprocessable(f"users {', '.join(map(str, missing))} do not exist or are inactive")


async def _flush_unique_name(session: AsyncSession, name: str) -> None:
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Conflict(f"A schedule named {name!r} already exists") from None


# ---- overrides -----------------------------------------------------------------------------------


async def add_override(
    session: AsyncSession, *, schedule: Schedule, user_id: int, start: datetime, end: datetime,
    actor: Actor, now: datetime,
) -> ScheduleOverride:  # fmt: skip
    await _check_users(session, {user_id})
    pending = await session.scalar(
        select(func.count())
        .select_from(ScheduleOverride)
        .where(ScheduleOverride.schedule_id == schedule.id, ScheduleOverride.end_at > now)
    )
    if (pending or 0) >= MAX_PENDING_OVERRIDES:
        raise Unprocessable(
            f"Schedule {schedule.id} already has {MAX_PENDING_OVERRIDES} overrides that have not "
            "ended; remove some first"
        )
    override = ScheduleOverride(
        schedule_id=schedule.id, user_id=user_id, start_at=start, end_at=end,
        created_by=actor.user_id, created_at=now,
    )  # fmt: skip
    session.add(override)
    await session.flush()
    record(session, schedule.id, "override_added", actor, now,
           {"override_id": override.id, "user_id": user_id,
            "start": start.isoformat(), "end": end.isoformat()})  # fmt: skip
    return override


async def overrides(
    session: AsyncSession, schedule_ids: Sequence[int], start: datetime, end: datetime
) -> list[ScheduleOverride]:
    """The overrides of these schedules that overlap [start, end), oldest first."""
    if not schedule_ids:
        return []
    return list(
        await session.scalars(
            select(ScheduleOverride)
            .where(
                ScheduleOverride.schedule_id.in_(schedule_ids),
                ScheduleOverride.end_at > start,
                ScheduleOverride.start_at < end,
            )
            .order_by(ScheduleOverride.id)
        )
    )


async def get_override(
    session: AsyncSession, *, schedule_id: int, override_id: int
) -> ScheduleOverride | None:
    override = await session.get(ScheduleOverride, override_id)
    return override if override is not None and override.schedule_id == schedule_id else None


async def delete_override(
    session: AsyncSession, *, override: ScheduleOverride, actor: Actor, now: datetime
) -> None:
    record(session, override.schedule_id, "override_removed", actor, now,
           {"override_id": override.id, "user_id": override.user_id})  # fmt: skip
    await session.delete(override)
    await session.flush()


# ---- who is on call ------------------------------------------------------------------------------


def layers_of(layers: Sequence[dict[str, Any]]) -> list[oncall.Layer]:
    """Stored layers, for the shift computation."""
    return [
        oncall.Layer(
            user_ids=tuple(layer["user_ids"]),
            rotation_length=layer["rotation_length"],
            rotation_unit=layer["rotation_unit"],
            start=datetime.fromisoformat(layer["start"]),
            restrictions=tuple(
                oncall.Restriction(
                    days=frozenset(DAYS.index(day) for day in r["days"]),
                    start=time.fromisoformat(r["start_time"]),
                    end=time.fromisoformat(r["end_time"]),
                )
                for r in layer["restrictions"]
            ),
        )
        for layer in layers
    ]


def _overrides_of(rows: Iterable[ScheduleOverride]) -> list[oncall.Override]:
    return [oncall.Override(o.user_id, o.start_at, o.end_at, o.id) for o in rows]


async def shifts(
    session: AsyncSession, schedules: Sequence[Schedule], start: datetime, end: datetime
) -> dict[int, list[oncall.Shift] | None]:
    """Each schedule's final shifts in [start, end): layers merged, overrides applied, users who
    are deactivated or gone left out (earlier layers fill their turns). None for a schedule that
    cannot be computed (logged), so that one broken schedule does not break the others."""
    found = await overrides(session, [s.id for s in schedules], start, end)
    named = {uid for s in schedules for uid in _layer_users(s.layers)}
    absent = frozenset(await not_active(session, named | {o.user_id for o in found}))
    # Plain values for the thread: the computation is CPU work, kept off the event loop.
    work = [
        (s.id, s.time_zone, list(s.layers),
         _overrides_of(o for o in found if o.schedule_id == s.id))
        for s in schedules
    ]  # fmt: skip

    def compute() -> dict[int, list[oncall.Shift] | None]:
        result: dict[int, list[oncall.Shift] | None] = {}
        for schedule_id, zone, layers, mine in work:
            try:
                result[schedule_id] = oncall.final_shifts(
                    ZoneInfo(zone), layers_of(layers), mine, start, end, absent
                )
            except Exception:
                logger.exception("schedule %s cannot be computed", schedule_id)
                result[schedule_id] = None
        return result

    return await asyncio.to_thread(compute)


async def on_call(
    session: AsyncSession, schedules: Sequence[Schedule], at: datetime
) -> dict[int, list[int] | None]:
    """Whoever each schedule names at `at` (empty: nobody; None: it cannot be computed)."""
    moment = await shifts(session, schedules, at, at + timedelta(microseconds=1))
    return {
        schedule_id: None if found is None else [s.user_id for s in found]
        for schedule_id, found in moment.items()
    }


async def on_call_by_id(
    session: AsyncSession, schedule_ids: Iterable[int], at: datetime
) -> dict[int, list[int] | None]:
    """`on_call` for schedule ids; a schedule that no longer exists names nobody."""
    wanted = sorted(set(schedule_ids))
    if not wanted:
        return {}
    found = list(await session.scalars(select(Schedule).where(Schedule.id.in_(wanted))))
    named = await on_call(session, found, at)
    return {schedule_id: named.get(schedule_id, []) for schedule_id in wanted}


def computed(schedule: Schedule, found: T | None) -> T:
    """What one schedule an endpoint asked about answered (shifts, who is on call), or a clear
    error when its layers cannot be computed."""
    if found is None:
        raise Conflict(
            f"Schedule {schedule.id} cannot be computed from its stored layers; "
            "replace them with PUT /v1/schedules/{id}"
        )
    return found


async def all_schedules(
    session: AsyncSession, *, visible: ColumnElement[bool] | None = None
) -> list[Schedule]:
    """Every schedule (`visible`: those the caller may read), in id order."""
    query = select(Schedule).order_by(Schedule.id)
    if visible is not None:
        query = query.where(visible)
    return list(await session.scalars(query))


async def user_shifts(
    session: AsyncSession, *, user_id: int, start: datetime, end: datetime
) -> list[tuple[Schedule, oncall.Shift]]:
    """A user's shifts across every schedule, in time order."""
    schedules = await all_schedules(session)
    per_schedule = await shifts(session, schedules, start, end)
    by_id = {s.id: s for s in schedules}
    mine = [
        (by_id[schedule_id], shift)
        for schedule_id, found in per_schedule.items()
        for shift in found or []  # one that cannot be computed is logged and left out
        if shift.user_id == user_id
    ]
    return sorted(mine, key=lambda pair: (pair[1].start, pair[0].id))


def check_window(start: datetime, end: datetime) -> None:
    if end <= start:
        raise Unprocessable("end must be after start")
    if end - start > MAX_WINDOW:
        raise Unprocessable("at most 90 days per call")


# ---- users leaving -------------------------------------------------------------------------------


async def schedules_with(session: AsyncSession, user_id: int, now: datetime) -> list[Schedule]:
    """Schedules naming the user in a layer or in an override that has not ended."""
    overriding = set(
        await session.scalars(
            select(ScheduleOverride.schedule_id).where(
                ScheduleOverride.user_id == user_id, ScheduleOverride.end_at > now
            )
        )
    )
    return [
        s for s in await all_schedules(session)
        if s.id in overriding or user_id in _layer_users(s.layers)
    ]  # fmt: skip


async def remove_user(
    session: AsyncSession, *, user_id: int, actor: Actor, now: datetime
) -> list[int]:
    """Take the user out of every layer and override; answers the schedules changed."""
    changed = await schedules_with(session, user_id, now)
    for schedule in changed:
        schedule.layers = [
            {**layer, "user_ids": [uid for uid in layer["user_ids"] if uid != user_id]}
            for layer in schedule.layers
        ]
        schedule.updated_at = now
        removed = await session.scalar(
            select(func.count())
            .select_from(ScheduleOverride)
            .where(
                ScheduleOverride.schedule_id == schedule.id,
                ScheduleOverride.user_id == user_id,
            )
        )
        record(session, schedule.id, "user_removed", actor, now,
               {"user_id": user_id, "overrides_removed": removed})  # fmt: skip
    for override in await session.scalars(
        select(ScheduleOverride).where(ScheduleOverride.user_id == user_id)
    ):
        await session.delete(override)
    await session.flush()
    return [s.id for s in changed]


# ---- calendar feeds ------------------------------------------------------------------------------


async def new_calendar_token(session: AsyncSession, *, schedule: Schedule) -> str:
    """A new secret for the schedule's calendar feed; the old one stops working."""
    token = new_token()
    schedule.calendar_token_hash = hash_token(token)
    await session.flush()
    return token


def calendar_token_matches(schedule: Schedule, token: str | None) -> bool:
    stored = schedule.calendar_token_hash
    return bool(token and stored) and hmac.compare_digest(stored or "", hash_token(token or ""))


async def new_user_calendar_token(session: AsyncSession, *, user_id: int, now: datetime) -> str:
    """A new secret for the user's own feed; the old one stops working."""
    token = new_token()
    version = await session.scalar(select(User.token_version).where(User.id == user_id)) or 0
    existing = await session.get(UserCalendar, user_id)
    if existing is None:
        session.add(
            UserCalendar(
                user_id=user_id, token_hash=hash_token(token), created_at=now, token_version=version
            )
        )
    else:
        existing.token_hash, existing.created_at = hash_token(token), now
        existing.token_version = version
    await session.flush()
    return token


async def user_calendar_token_matches(
    session: AsyncSession, *, user_id: int, token: str | None
) -> bool:
    """Does `token` open the user's feed? Not once they changed their password or left (their
    token_version moved past the feed's), as their sign-in tokens end then too."""
    found = await session.get(UserCalendar, user_id) if token else None
    if found is None or not hmac.compare_digest(found.token_hash, hash_token(token or "")):
        return False
    current = await session.scalar(
        select(User.token_version).where(User.id == user_id, User.is_active.is_(True))
    )
    return current is not None and current == found.token_version
