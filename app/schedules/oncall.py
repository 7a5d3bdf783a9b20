"""Pure on-call computation: who is on duty when, for a schedule's layers and overrides.

A schedule has an IANA time zone and ordered layers. Each layer rotates through its participants:
handoff k is at the local wall-clock time `layer.start + k * rotation`, converted to UTC with the
zone (fold=0 for ambiguous or non-existent local times), and shift k runs from handoff k to
handoff k+1. Handoffs that would not move forward in UTC are absorbed: the effective handoff k is
the latest UTC instant among handoffs 0..k, so shifts never overlap and empty ones are dropped.
Restrictions cut a layer's shifts down to local wall-clock windows without changing the owner.

Merging: at each instant the last layer that has someone wins; overrides win over every layer,
and among overlapping overrides the largest `order` wins (on a tie, the later one in the
sequence). Adjacent pieces of the same user are joined. No database, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Literal
from zoneinfo import ZoneInfo

Unit = Literal["hours", "days", "weeks"]

# More than any difference between two UTC offsets of one zone (offsets span -12h..+14h), so a
# local handoff this far (in wall-clock time) before another is also earlier in UTC.
_MAX_OFFSET_SWING = timedelta(hours=48)
_ONE_DAY = timedelta(days=1)
_INSTANT = timedelta(microseconds=1)


@dataclass(frozen=True)
class Restriction:
    """When a layer is on duty, in the schedule's zone: on these days of the week (0 = Monday …
    6 = Sunday; the day the window STARTS), from `start` to `end` local wall-clock time.
    end <= start: the window runs past midnight into the next day (end == start: 24 hours)."""

    days: frozenset[int]
    start: time
    end: time


@dataclass(frozen=True)
class Layer:
    user_ids: tuple[int, ...]  # participants in rotation order; may be empty (layer has nobody)
    rotation_length: int  # >= 1
    rotation_unit: Unit
    start: datetime  # NAIVE local wall-clock time of the first handoff, in the schedule's zone
    restrictions: tuple[Restriction, ...] = ()  # empty: on duty all the time


@dataclass(frozen=True)
class Override:
    user_id: int
    start: datetime  # aware (UTC)
    end: datetime  # aware (UTC), > start
    order: int  # larger = newer; among overlapping overrides the newest wins


@dataclass(frozen=True)
class Shift:
    user_id: int
    start: datetime  # aware UTC
    end: datetime  # aware UTC


def layer_shifts(zone: ZoneInfo, layer: Layer, start: datetime, end: datetime) -> list[Shift]:
    """The layer's shifts clipped to [start, end): sorted, non-overlapping, none empty."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if start >= end:
        return []
    shifts = _rotation(zone, layer, start, end)
    if not layer.restrictions or not shifts:
        return shifts
    return _restrict(shifts, _windows(zone, layer.restrictions, start, end))


def final_shifts(
    zone: ZoneInfo,
    layers: Sequence[Layer],
    overrides: Sequence[Override],
    start: datetime,
    end: datetime,
    absent: frozenset[int] = frozenset(),
) -> list[Shift]:
    """Who is on call over [start, end), after layering and overrides, adjacent pieces joined.

    `absent` users (deactivated, deleted) keep their place in their rotations, but their turns
    and overrides are gaps, which earlier layers fill where they have someone.
    """
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if start >= end:
        return []
    ranked = sorted(enumerate(overrides), key=lambda pair: (pair[1].order, pair[0]))
    override_sources: list[list[Shift]] = []
    for _, override in ranked:
        lo, hi = max(override.start.astimezone(UTC), start), min(override.end.astimezone(UTC), end)
        if lo < hi and override.user_id not in absent:
            override_sources.append([Shift(override.user_id, lo, hi)])
    sources = [
        [s for s in layer_shifts(zone, layer, start, end) if s.user_id not in absent]
        for layer in layers
    ]
    sources.append(_resolve(override_sources))
    return _resolve(sources)


def on_call(
    zone: ZoneInfo,
    layers: Sequence[Layer],
    overrides: Sequence[Override],
    at: datetime,
    absent: frozenset[int] = frozenset(),
) -> int | None:
    """The user on call at `at`, or None when nobody is."""
    shifts = final_shifts(zone, layers, overrides, at, at + _INSTANT, absent)
    return shifts[0].user_id if shifts else None


def _to_utc(local: datetime, zone: ZoneInfo) -> datetime:
    """A naive local wall-clock time in `zone` as an aware UTC instant (fold=0 for gaps/folds)."""
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _step(layer: Layer) -> timedelta:
    if layer.rotation_unit == "hours":
        return timedelta(hours=layer.rotation_length)
    if layer.rotation_unit == "days":
        return timedelta(days=layer.rotation_length)
    return timedelta(weeks=layer.rotation_length)


def _rotation(zone: ZoneInfo, layer: Layer, start: datetime, end: datetime) -> list[Shift]:
    """Unrestricted rotation shifts clipped to [start, end)."""
    users = layer.user_ids
    if not users:
        return []
    step = _step(layer)
    first_local = layer.start.replace(tzinfo=None, fold=0)
    # Estimate the handoff just before `start` from the wall-clock difference, then back off far
    # enough that (a) every handoff before the shift containing `start` lies earlier in UTC and
    # (b) the running maximum below is exact by the time it reaches that shift.
    margin = -(-_MAX_OFFSET_SWING // step) + 1
    estimate = (start.astimezone(zone).replace(tzinfo=None) - first_local) // step
    k = max(0, estimate - 2 * margin)
    current = _to_utc(first_local + step * k, zone)
    shifts: list[Shift] = []
    while current < end:
        following = max(current, _to_utc(first_local + step * (k + 1), zone))
        lo, hi = max(current, start), min(following, end)
        if lo < hi:
            shifts.append(Shift(users[k % len(users)], lo, hi))
        current = following
        k += 1
    return shifts


def _windows(
    zone: ZoneInfo, restrictions: Sequence[Restriction], start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """The union of the restriction windows, in UTC, clipped to [start, end), sorted, disjoint."""
    day: date = start.astimezone(zone).date() - 2 * _ONE_DAY
    last: date = end.astimezone(zone).date() + _ONE_DAY
    pieces: list[tuple[datetime, datetime]] = []
    while day <= last:
        weekday = day.weekday()
        for restriction in restrictions:
            if weekday not in restriction.days:
                continue
            opens = _to_utc(datetime.combine(day, restriction.start), zone)
            end_day = day if restriction.end > restriction.start else day + _ONE_DAY
            closes = _to_utc(datetime.combine(end_day, restriction.end), zone)
            lo, hi = max(opens, start), min(closes, end)
            if lo < hi:
                pieces.append((lo, hi))
        day += _ONE_DAY
    pieces.sort()
    merged: list[tuple[datetime, datetime]] = []
    for lo, hi in pieces:
        if merged and lo <= merged[-1][1]:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


def _restrict(shifts: list[Shift], windows: list[tuple[datetime, datetime]]) -> list[Shift]:
    """The parts of the (sorted, disjoint) shifts inside the (sorted, disjoint) windows."""
    out: list[Shift] = []
    i = j = 0
    while i < len(shifts) and j < len(windows):
        shift, (w_lo, w_hi) = shifts[i], windows[j]
        lo, hi = max(shift.start, w_lo), min(shift.end, w_hi)
        if lo < hi:
            out.append(Shift(shift.user_id, lo, hi))
        if shift.end <= w_hi:
            i += 1
        else:
            j += 1
    return out


def _resolve(sources: Sequence[Sequence[Shift]]) -> list[Shift]:
    """Overlay sources (each sorted and disjoint), later sources winning; join same-user pieces."""
    boundaries = sorted({t for source in sources for s in source for t in (s.start, s.end)})
    cursors = [0] * len(sources)
    out: list[Shift] = []
    for lo, hi in pairwise(boundaries):
        user = _owner_at(sources, cursors, lo)
        if user is None:
            continue
        if out and out[-1].user_id == user and out[-1].end == lo:
            out[-1] = Shift(user, out[-1].start, hi)
        else:
            out.append(Shift(user, lo, hi))
    return out


def _owner_at(sources: Sequence[Sequence[Shift]], cursors: list[int], at: datetime) -> int | None:
    """The user of the last source with a shift containing `at`; `at` never decreases per call."""
    for index in range(len(sources) - 1, -1, -1):
        source, cursor = sources[index], cursors[index]
        while cursor < len(source) and source[cursor].end <= at:
            cursor += 1
        cursors[index] = cursor
        if cursor < len(source) and source[cursor].start <= at:
            return source[cursor].user_id
    return None
