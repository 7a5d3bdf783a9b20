"""On-call shift computation: DST-proof handoffs, restrictions, layering, overrides, properties.

Plain synchronous tests without fixtures: nothing here touches a database.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from app.schedules.oncall import (
    Layer,
    Override,
    Restriction,
    Shift,
    Unit,
    final_shifts,
    layer_shifts,
    on_call,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
SYDNEY = ZoneInfo("Australia/Sydney")
KOLKATA = ZoneInfo("Asia/Kolkata")
TROLL = ZoneInfo("Antarctica/Troll")  # +00 <-> +02: a two-hour DST jump
UTC_ZONE = ZoneInfo("UTC")

WEEKDAYS = frozenset(range(5))
EVERY_DAY = frozenset(range(7))
HOUR = timedelta(hours=1)


def wall(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A naive local wall-clock time."""
    return datetime.combine(date(year, month, day), time(hour, minute))


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def at_local(zone: ZoneInfo, local: datetime) -> datetime:
    """A local wall-clock time as UTC (fold=0, like the module)."""
    return local.replace(tzinfo=zone).astimezone(UTC)


def local_of(zone: ZoneInfo, instant: datetime) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def hours(shift: Shift) -> float:
    return (shift.end - shift.start) / HOUR


def as_tuples(shifts: Sequence[Shift]) -> list[tuple[int, datetime, datetime]]:
    return [(s.user_id, s.start, s.end) for s in shifts]


def always(user: int) -> Layer:
    return Layer((user,), 1, "weeks", wall(2020, 1, 6))


# --- DST: handoffs are local wall-clock times ---------------------------------------------------


def test_berlin_daily_handoffs_stay_at_nine_across_spring_forward() -> None:
    layer = Layer((1, 2), 1, "days", wall(2026, 3, 27, 9))
    window = (at_local(BERLIN, wall(2026, 3, 27, 9)), at_local(BERLIN, wall(2026, 4, 3, 9)))
    shifts = layer_shifts(BERLIN, layer, *window)

    assert [local_of(BERLIN, s.start) for s in shifts] == [
        wall(2026, 3, day, 9) for day in range(27, 32)
    ] + [wall(2026, 4, day, 9) for day in (1, 2)]
    assert [s.user_id for s in shifts] == [1, 2, 1, 2, 1, 2, 1]
    # The shift covering the night of March 29 (02:00 -> 03:00) lasts 23 real hours.
    assert [hours(s) for s in shifts] == [24, 23, 24, 24, 24, 24, 24]
    assert shifts[1].start == utc(2026, 3, 28, 8) and shifts[1].end == utc(2026, 3, 29, 7)
    assert all(s.start.tzinfo is UTC and s.end.tzinfo is UTC for s in shifts)


def test_berlin_daily_shift_over_fall_back_lasts_25_hours() -> None:
    layer = Layer((1, 2), 1, "days", wall(2026, 3, 27, 9))
    shifts = layer_shifts(BERLIN, layer, utc(2026, 10, 23), utc(2026, 10, 27))

    starts = [local_of(BERLIN, s.start) for s in shifts]
    assert starts == [wall(2026, 10, 23, 2), *(wall(2026, 10, d, 9) for d in (23, 24, 25, 26))]
    full = shifts[1:-1]
    assert [hours(s) for s in full] == [24, 25, 24]
    # March 27 -> October 24 is 211 days: an odd handoff count, so user 2 holds the long night.
    assert [s.user_id for s in shifts] == [2, 1, 2, 1, 2]
    assert full[1].start == utc(2026, 10, 24, 7) and full[1].end == utc(2026, 10, 25, 8)


def test_berlin_weekly_rotation_across_both_changes() -> None:
    layer = Layer((1, 2, 3), 1, "weeks", wall(2026, 3, 23, 10))  # a Monday
    spring = layer_shifts(BERLIN, layer, utc(2026, 3, 23, 9), utc(2026, 4, 6, 8))
    assert [(s.user_id, hours(s)) for s in spring] == [(1, 167), (2, 168)]
    assert {local_of(BERLIN, s.start).time() for s in spring} == {time(10)}

    autumn = layer_shifts(BERLIN, layer, utc(2026, 10, 19, 8), utc(2026, 11, 2, 9))
    # 30 weeks after March 23: 30 % 3 == 0, so user 1 again.
    assert [(s.user_id, hours(s)) for s in autumn] == [(1, 169), (2, 168)]
    assert [local_of(BERLIN, s.start) for s in autumn] == [
        wall(2026, 10, 19, 10),
        wall(2026, 10, 26, 10),
    ]


def test_berlin_twelve_hour_rotation_across_both_changes() -> None:
    layer = Layer((1, 2), 12, "hours", wall(2026, 3, 28, 8))
    for lo, hi, odd_hours in (
        (utc(2026, 3, 28, 7), utc(2026, 3, 30, 6), 11),
        (utc(2026, 10, 24, 6), utc(2026, 10, 26, 7), 13),
    ):
        shifts = layer_shifts(BERLIN, layer, lo, hi)
        assert shifts[0].start == lo and shifts[-1].end == hi
        assert all(a.end == b.start for a, b in pairwise(shifts))  # contiguous, no overlap
        assert [s.user_id for s in shifts] == [1, 2, 1, 2]
        assert [hours(s) for s in shifts] == [12, odd_hours, 12, 12]
        assert {local_of(BERLIN, s.start).time() for s in shifts} == {time(8), time(20)}


def test_hourly_rotation_skips_the_handoff_in_the_spring_gap() -> None:
    # 02:00 does not exist on March 29: it maps (fold=0) to the same instant as 03:00, so the
    # shift handed over at "02:00" would be empty and is skipped; the rotation keeps its count.
    layer = Layer((1, 2, 3), 1, "hours", wall(2026, 3, 29, 0))
    shifts = layer_shifts(BERLIN, layer, utc(2026, 3, 28, 22), utc(2026, 3, 29, 3))
    assert as_tuples(shifts) == [
        (1, utc(2026, 3, 28, 23), utc(2026, 3, 29, 0)),
        (2, utc(2026, 3, 29, 0), utc(2026, 3, 29, 1)),
        (1, utc(2026, 3, 29, 1), utc(2026, 3, 29, 2)),
        (2, utc(2026, 3, 29, 2), utc(2026, 3, 29, 3)),
    ]


def test_hourly_rotation_over_fall_back_gives_the_repeated_hour_to_one_shift() -> None:
    layer = Layer((1, 2, 3), 1, "hours", wall(2026, 10, 25, 0))
    shifts = layer_shifts(BERLIN, layer, utc(2026, 10, 24, 21), utc(2026, 10, 25, 3))
    assert as_tuples(shifts) == [
        (1, utc(2026, 10, 24, 22), utc(2026, 10, 24, 23)),
        (2, utc(2026, 10, 24, 23), utc(2026, 10, 25, 0)),
        (3, utc(2026, 10, 25, 0), utc(2026, 10, 25, 2)),  # 02:00 CEST .. 03:00 CET
        (1, utc(2026, 10, 25, 2), utc(2026, 10, 25, 3)),
    ]


def test_handoffs_going_backwards_in_utc_never_overlap() -> None:
    # Troll jumps from +00 to +02: local 01:00 and 02:00 (gap, fold=0) are 01:00Z and 02:00Z, but
    # 03:00 and 04:00 are 01:00Z and 02:00Z again. Those shifts collapse; nothing overlaps.
    layer = Layer((1, 2, 3, 4), 1, "hours", wall(2026, 3, 29, 0))
    shifts = layer_shifts(TROLL, layer, utc(2026, 3, 28), utc(2026, 3, 29, 4))
    # Handoffs in UTC: 00Z, 01Z, 02Z, 01Z, 02Z, 03Z, ... Shifts 2 and 3 are empty; shift 4
    # (user 1) starts at 02Z, where the latest earlier handoff already was.
    assert as_tuples(shifts) == [
        (1, utc(2026, 3, 29, 0), utc(2026, 3, 29, 1)),
        (2, utc(2026, 3, 29, 1), utc(2026, 3, 29, 2)),
        (1, utc(2026, 3, 29, 2), utc(2026, 3, 29, 3)),
        (2, utc(2026, 3, 29, 3), utc(2026, 3, 29, 4)),
    ]


def test_window_starting_right_after_spring_forward_finds_the_earlier_handoff() -> None:
    # Handoffs at :50. Local 02:50 on March 29 does not exist: fold=0 puts it at 01:50Z, later
    # than 01:10Z (03:10 CEST). The shift containing 01:10Z is the one handed over at 01:50 CET.
    layer = Layer((1, 2, 3), 1, "hours", wall(2026, 3, 1, 0, 50))
    shifts = layer_shifts(BERLIN, layer, utc(2026, 3, 29, 1, 10), utc(2026, 3, 29, 3))
    # 01:50 on March 29 is handoff 28 * 24 + 1 = 673 (user 2); 02:50 (674) is empty.
    assert as_tuples(shifts) == [
        (2, utc(2026, 3, 29, 1, 10), utc(2026, 3, 29, 1, 50)),
        (1, utc(2026, 3, 29, 1, 50), utc(2026, 3, 29, 2, 50)),
        (2, utc(2026, 3, 29, 2, 50), utc(2026, 3, 29, 3)),
    ]
    assert on_call(BERLIN, [layer], [], utc(2026, 3, 29, 1, 10)) == 2
    assert on_call(BERLIN, [layer], [], utc(2026, 3, 29, 1, 50)) == 1


def test_window_starting_inside_a_two_hour_jump_looks_back_far_enough() -> None:
    # Troll: handoffs of March 29 at 01Z, 02Z, then 01Z, 02Z again (03:00, 04:00 local).
    # 01:30Z is 03:30 local, but the shift containing it was handed over at 01:00 local.
    layer = Layer((1, 2, 3, 4), 1, "hours", wall(2026, 3, 1))
    start = utc(2026, 3, 29, 1, 30)
    shifts = layer_shifts(TROLL, layer, start, utc(2026, 3, 29, 4))
    # Handoff 28 * 24 + 1 = 673 (01:00 local) belongs to user 2; 674, 675 are empty.
    assert as_tuples(shifts) == [
        (2, start, utc(2026, 3, 29, 2)),
        (1, utc(2026, 3, 29, 2), utc(2026, 3, 29, 3)),
        (2, utc(2026, 3, 29, 3), utc(2026, 3, 29, 4)),
    ]
    assert on_call(TROLL, [layer], [], start) == 2


def test_new_york_daily_handoff_in_the_gap_and_in_the_fold() -> None:
    # 02:30 does not exist on March 8: fold=0 reads it with the old offset (EST), i.e. 07:30Z.
    layer = Layer((1, 2), 1, "days", wall(2026, 3, 6, 2, 30))
    shifts = layer_shifts(NEW_YORK, layer, utc(2026, 3, 7, 7, 30), utc(2026, 3, 10, 6, 30))
    assert as_tuples(shifts) == [
        (2, utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7, 30)),
        (1, utc(2026, 3, 8, 7, 30), utc(2026, 3, 9, 6, 30)),
        (2, utc(2026, 3, 9, 6, 30), utc(2026, 3, 10, 6, 30)),
    ]
    # 01:30 happens twice on November 1: fold=0 takes the first (EDT), so that day lasts 25 h.
    layer = Layer((1, 2), 1, "days", wall(2026, 10, 31, 1, 30))
    shifts = layer_shifts(NEW_YORK, layer, utc(2026, 10, 31), utc(2026, 11, 3))
    assert as_tuples(shifts) == [
        (1, utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30)),
        (2, utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)),
        (1, utc(2026, 11, 2, 6, 30), utc(2026, 11, 3)),
    ]
    assert [hours(s) for s in shifts[:2]] == [24, 25]


def test_sydney_southern_hemisphere_changes() -> None:
    layer = Layer((7, 8, 9), 1, "days", wall(2026, 4, 3, 9))
    april = layer_shifts(SYDNEY, layer, at_local(SYDNEY, wall(2026, 4, 3, 9)), utc(2026, 4, 6))
    # DST ends on April 5 at 03:00 (clocks go back): the night of April 4 lasts 25 hours.
    assert [(s.user_id, hours(s)) for s in april[:2]] == [(7, 24), (8, 25)]
    assert april[1].start == utc(2026, 4, 3, 22) and april[1].end == utc(2026, 4, 4, 23)
    # DST starts on October 4 at 02:00: the night of October 3 lasts 23 hours.
    october = layer_shifts(SYDNEY, layer, utc(2026, 10, 2, 23), utc(2026, 10, 4, 22))
    assert [hours(s) for s in october] == [23, 24]
    assert [local_of(SYDNEY, s.start) for s in october] == [
        wall(2026, 10, 3, 9),
        wall(2026, 10, 4, 9),
    ]
    # April 3 -> October 3 is 183 days: 183 % 3 == 0.
    assert [s.user_id for s in october] == [7, 8]


def test_utc_rotation_far_from_its_start() -> None:
    layer = Layer((1, 2, 3), 8, "hours", wall(2026, 1, 1))
    shifts = layer_shifts(UTC_ZONE, layer, utc(2026, 6, 15, 13), utc(2026, 6, 16, 13))
    # June 15 13:00 is 3973 h after the start: shift 496 (user 2), running 08:00 -> 16:00.
    assert as_tuples(shifts) == [
        (2, utc(2026, 6, 15, 13), utc(2026, 6, 15, 16)),
        (3, utc(2026, 6, 15, 16), utc(2026, 6, 16, 0)),
        (1, utc(2026, 6, 16, 0), utc(2026, 6, 16, 8)),
        (2, utc(2026, 6, 16, 8), utc(2026, 6, 16, 13)),
    ]
    assert on_call(UTC_ZONE, [layer], [], utc(2026, 6, 16, 7, 59)) == 1
    assert on_call(UTC_ZONE, [layer], [], utc(2026, 6, 16, 8)) == 2


def test_kolkata_half_hour_offset_and_bounds_in_another_zone() -> None:
    layer = Layer((1, 2), 1, "days", wall(2026, 5, 1, 9))
    berlin_bounds = (
        datetime(2026, 5, 2, 7, tzinfo=BERLIN),
        datetime(2026, 5, 3, 7, tzinfo=BERLIN),
    )
    shifts = layer_shifts(KOLKATA, layer, *berlin_bounds)
    # Handoffs at 09:00 IST = 03:30Z; the bounds are 07:00 CEST = 05:00Z.
    assert as_tuples(shifts) == [
        (2, utc(2026, 5, 2, 5), utc(2026, 5, 3, 3, 30)),
        (1, utc(2026, 5, 3, 3, 30), utc(2026, 5, 3, 5)),
    ]


def test_nobody_before_the_layer_starts_or_when_it_is_empty() -> None:
    layer = Layer((4, 5), 1, "days", wall(2026, 2, 1, 9))
    assert layer_shifts(UTC_ZONE, layer, utc(2026, 1, 1), utc(2026, 2, 1, 9)) == []
    shifts = layer_shifts(UTC_ZONE, layer, utc(2026, 1, 1), utc(2026, 2, 2, 12))
    assert as_tuples(shifts) == [
        (4, utc(2026, 2, 1, 9), utc(2026, 2, 2, 9)),
        (5, utc(2026, 2, 2, 9), utc(2026, 2, 2, 12)),
    ]
    assert on_call(UTC_ZONE, [layer], [], utc(2026, 2, 1, 8, 59)) is None
    assert on_call(UTC_ZONE, [layer], [], utc(2026, 2, 1, 9)) == 4
    empty = Layer((), 1, "hours", wall(2026, 1, 1))
    assert layer_shifts(UTC_ZONE, empty, utc(2026, 1, 1), utc(2026, 3, 1)) == []


def test_empty_or_reversed_window_gives_nothing() -> None:
    layer = always(1)
    override = Override(2, utc(2026, 1, 1), utc(2026, 1, 2), 1)
    for lo, hi in ((utc(2026, 1, 1, 5), utc(2026, 1, 1, 5)), (utc(2026, 1, 2), utc(2026, 1, 1))):
        assert layer_shifts(BERLIN, layer, lo, hi) == []
        assert final_shifts(BERLIN, [layer], [override], lo, hi) == []


# --- Restrictions ------------------------------------------------------------------------------


def test_weekday_office_hours() -> None:
    rule = Restriction(WEEKDAYS, time(9), time(17))
    layer = Layer((1, 2), 1, "days", wall(2026, 1, 5), (rule,))  # Monday 00:00
    shifts = layer_shifts(BERLIN, layer, utc(2026, 1, 4), utc(2026, 1, 12))
    assert as_tuples(shifts) == [
        (user, utc(2026, 1, day, 8), utc(2026, 1, day, 16))
        for user, day in zip((1, 2, 1, 2, 1), range(5, 10), strict=True)
    ]


def test_overnight_window_keeps_the_rotation_owner() -> None:
    rule = Restriction(frozenset({4}), time(22), time(6))  # Friday 22:00 -> Saturday 06:00
    layer = Layer((1, 2, 3), 1, "days", wall(2026, 1, 5), (rule,))
    shifts = layer_shifts(UTC_ZONE, layer, utc(2026, 1, 5), utc(2026, 1, 19))
    assert as_tuples(shifts) == [
        (2, utc(2026, 1, 9, 22), utc(2026, 1, 10)),  # Friday's owner (day 4)
        (3, utc(2026, 1, 10), utc(2026, 1, 10, 6)),  # Saturday's owner (day 5)
        (3, utc(2026, 1, 16, 22), utc(2026, 1, 17)),  # day 11
        (1, utc(2026, 1, 17), utc(2026, 1, 17, 6)),  # day 12
    ]
    # Clipping a window that started before the range.
    clipped = layer_shifts(UTC_ZONE, layer, utc(2026, 1, 10, 3), utc(2026, 1, 12))
    assert as_tuples(clipped) == [(3, utc(2026, 1, 10, 3), utc(2026, 1, 10, 6))]


def test_window_with_equal_start_and_end_lasts_a_full_day() -> None:
    rule = Restriction(frozenset({2}), time(12), time(12))  # Wednesday noon -> Thursday noon
    layer = Layer((1,), 1, "weeks", wall(2026, 1, 5), (rule,))
    shifts = layer_shifts(UTC_ZONE, layer, utc(2026, 1, 5), utc(2026, 1, 12))
    assert as_tuples(shifts) == [(1, utc(2026, 1, 7, 12), utc(2026, 1, 8, 12))]


def test_overlapping_windows_are_united() -> None:
    rules = (
        Restriction(frozenset({0}), time(9), time(13)),
        Restriction(frozenset({0}), time(12), time(17)),
        Restriction(frozenset({0}), time(17), time(18)),
    )
    layer = Layer((1,), 1, "weeks", wall(2026, 1, 5), rules)
    shifts = layer_shifts(UTC_ZONE, layer, utc(2026, 1, 5), utc(2026, 1, 12))
    assert as_tuples(shifts) == [(1, utc(2026, 1, 5, 9), utc(2026, 1, 5, 18))]


def test_windows_follow_local_time_across_dst() -> None:
    night = Layer((1,), 1, "weeks", wall(2026, 1, 5), (Restriction(EVERY_DAY, time(22), time(6)),))
    spring = layer_shifts(BERLIN, night, utc(2026, 3, 28, 12), utc(2026, 3, 29, 12))
    assert as_tuples(spring) == [(1, utc(2026, 3, 28, 21), utc(2026, 3, 29, 4))]  # 7 h
    autumn = layer_shifts(BERLIN, night, utc(2026, 10, 24, 12), utc(2026, 10, 25, 12))
    assert as_tuples(autumn) == [(1, utc(2026, 10, 24, 20), utc(2026, 10, 25, 5))]  # 9 h

    saturday = Restriction(frozenset({5}), time(9), time(9))
    day = Layer((1,), 1, "weeks", wall(2026, 1, 5), (saturday,))
    shifts = layer_shifts(BERLIN, day, utc(2026, 3, 27), utc(2026, 4, 1))
    assert as_tuples(shifts) == [(1, utc(2026, 3, 28, 8), utc(2026, 3, 29, 7))]  # 23 h

    office = Layer((1,), 1, "weeks", wall(2026, 1, 5), (Restriction(WEEKDAYS, time(9), time(17)),))
    week = layer_shifts(NEW_YORK, office, utc(2026, 3, 6), utc(2026, 3, 10))
    assert as_tuples(week) == [
        (1, utc(2026, 3, 6, 14), utc(2026, 3, 6, 22)),  # Friday, EST
        (1, utc(2026, 3, 9, 13), utc(2026, 3, 9, 21)),  # Monday, EDT
    ]


# --- Merging -----------------------------------------------------------------------------------


def test_later_layer_wins() -> None:
    shifts = final_shifts(UTC_ZONE, [always(1), always(2)], [], utc(2026, 1, 1), utc(2026, 1, 3))
    assert as_tuples(shifts) == [(2, utc(2026, 1, 1), utc(2026, 1, 3))]
    shifts = final_shifts(UTC_ZONE, [always(2), always(1)], [], utc(2026, 1, 1), utc(2026, 1, 3))
    assert as_tuples(shifts) == [(1, utc(2026, 1, 1), utc(2026, 1, 3))]


def test_earlier_layer_fills_the_gaps_of_a_restricted_later_layer() -> None:
    office = Layer((2,), 1, "weeks", wall(2026, 1, 5), (Restriction(WEEKDAYS, time(9), time(17)),))
    shifts = final_shifts(BERLIN, [always(1), office], [], utc(2026, 1, 8), utc(2026, 1, 13))
    assert as_tuples(shifts) == [
        (1, utc(2026, 1, 8), utc(2026, 1, 8, 8)),
        (2, utc(2026, 1, 8, 8), utc(2026, 1, 8, 16)),
        (1, utc(2026, 1, 8, 16), utc(2026, 1, 9, 8)),
        (2, utc(2026, 1, 9, 8), utc(2026, 1, 9, 16)),
        (1, utc(2026, 1, 9, 16), utc(2026, 1, 12, 8)),  # the whole weekend, one piece
        (2, utc(2026, 1, 12, 8), utc(2026, 1, 12, 16)),
        (1, utc(2026, 1, 12, 16), utc(2026, 1, 13)),
    ]


def test_override_wins_over_every_layer() -> None:
    office = Layer((2,), 1, "weeks", wall(2026, 1, 5), (Restriction(WEEKDAYS, time(9), time(17)),))
    override = Override(3, utc(2026, 1, 5, 15), utc(2026, 1, 5, 20), order=1)
    shifts = final_shifts(
        UTC_ZONE, [always(1), office], [override], utc(2026, 1, 5), utc(2026, 1, 6)
    )
    assert as_tuples(shifts) == [
        (1, utc(2026, 1, 5), utc(2026, 1, 5, 9)),
        (2, utc(2026, 1, 5, 9), utc(2026, 1, 5, 15)),
        (3, utc(2026, 1, 5, 15), utc(2026, 1, 5, 20)),
        (1, utc(2026, 1, 5, 20), utc(2026, 1, 6)),
    ]
    # An override also covers times when no layer has anyone.
    alone = final_shifts(UTC_ZONE, [office], [override], utc(2026, 1, 5), utc(2026, 1, 6))
    assert as_tuples(alone) == [
        (2, utc(2026, 1, 5, 9), utc(2026, 1, 5, 15)),
        (3, utc(2026, 1, 5, 15), utc(2026, 1, 5, 20)),
    ]


def test_newest_overlapping_override_wins() -> None:
    newer = Override(4, utc(2026, 1, 5, 12), utc(2026, 1, 5, 13), order=7)
    older = Override(3, utc(2026, 1, 5, 10), utc(2026, 1, 5, 14), order=2)
    expected = [
        (1, utc(2026, 1, 5), utc(2026, 1, 5, 10)),
        (3, utc(2026, 1, 5, 10), utc(2026, 1, 5, 12)),
        (4, utc(2026, 1, 5, 12), utc(2026, 1, 5, 13)),
        (3, utc(2026, 1, 5, 13), utc(2026, 1, 5, 14)),
        (1, utc(2026, 1, 5, 14), utc(2026, 1, 6)),
    ]
    for overrides in ([newer, older], [older, newer]):
        shifts = final_shifts(UTC_ZONE, [always(1)], overrides, utc(2026, 1, 5), utc(2026, 1, 6))
        assert as_tuples(shifts) == expected
    # The older override covering everything the newer one does changes nothing.
    wide_old = Override(5, utc(2026, 1, 5, 11), utc(2026, 1, 5, 14), order=1)
    assert on_call(UTC_ZONE, [always(1)], [newer, wide_old], utc(2026, 1, 5, 12, 30)) == 4
    assert on_call(UTC_ZONE, [always(1)], [newer, wide_old], utc(2026, 1, 5, 13)) == 5
    # Equal order: the later one in the sequence wins.
    a = Override(6, utc(2026, 1, 5, 1), utc(2026, 1, 5, 3), order=9)
    b = Override(7, utc(2026, 1, 5, 2), utc(2026, 1, 5, 4), order=9)
    assert on_call(UTC_ZONE, [], [a, b], utc(2026, 1, 5, 2)) == 7
    assert on_call(UTC_ZONE, [], [b, a], utc(2026, 1, 5, 2)) == 6


def test_adjacent_pieces_of_the_same_user_are_joined() -> None:
    solo = Layer((1,), 4, "hours", wall(2026, 1, 1))
    assert as_tuples(layer_shifts(UTC_ZONE, solo, utc(2026, 1, 1), utc(2026, 1, 1, 12))) == [
        (1, utc(2026, 1, 1), utc(2026, 1, 1, 4)),
        (1, utc(2026, 1, 1, 4), utc(2026, 1, 1, 8)),
        (1, utc(2026, 1, 1, 8), utc(2026, 1, 1, 12)),
    ]
    assert as_tuples(final_shifts(UTC_ZONE, [solo], [], utc(2026, 1, 1), utc(2026, 1, 2))) == [
        (1, utc(2026, 1, 1), utc(2026, 1, 2))
    ]
    # Same user from a layer and from an override, touching: one shift.
    second = Layer((2,), 1, "days", wall(2026, 1, 1, 12))
    override = Override(1, utc(2026, 1, 1, 12), utc(2026, 1, 1, 15), order=1)
    shifts = final_shifts(UTC_ZONE, [solo, second], [override], utc(2026, 1, 1), utc(2026, 1, 2))
    assert as_tuples(shifts) == [
        (1, utc(2026, 1, 1), utc(2026, 1, 1, 15)),
        (2, utc(2026, 1, 1, 15), utc(2026, 1, 2)),
    ]


def test_on_call_boundaries() -> None:
    layer = Layer((1, 2), 1, "days", wall(2026, 3, 27, 9))
    handoff = at_local(BERLIN, wall(2026, 3, 29, 9))
    assert on_call(BERLIN, [layer], [], handoff - timedelta(microseconds=1)) == 2
    assert on_call(BERLIN, [layer], [], handoff) == 1
    override = Override(5, handoff, handoff + HOUR, order=0)
    assert on_call(BERLIN, [layer], [override], handoff + HOUR - timedelta(microseconds=1)) == 5
    assert on_call(BERLIN, [layer], [override], handoff + HOUR) == 1


def test_ninety_days_of_busy_layers() -> None:
    """The shape the API allows at its limit (speed: docs/performance.md, On-call shifts)."""
    office = (
        Restriction(WEEKDAYS, time(8), time(18)),
        Restriction(frozenset({5}), time(22), time(6)),
    )
    layers = [
        Layer((1, 2, 3, 4), 4, "hours", wall(2025, 12, 1, 6)),
        Layer((5, 6, 7), 4, "hours", wall(2026, 1, 3, 1), office),
        Layer((8, 9), 4, "hours", wall(2026, 2, 1, 2)),
    ]
    overrides = [
        Override(
            10 + i % 5,
            utc(2026, 1, 1) + i * 61 * HOUR,
            utc(2026, 1, 1) + i * 61 * HOUR + 9 * HOUR,
            i,
        )
        for i in range(36)
    ]
    shifts = final_shifts(BERLIN, layers, overrides, utc(2026, 1, 1), utc(2026, 4, 1))
    assert len(shifts) > 500
    assert shifts[0].start == utc(2026, 1, 1) and shifts[-1].end == utc(2026, 4, 1)
    # Tiled: every piece starts where the last ended (some layer always has someone), and a
    # person's adjacent pieces are joined.
    assert all(a.end == b.start and a.user_id != b.user_id for a, b in itertools.pairwise(shifts))
    for override in overrides:
        assert on_call(BERLIN, layers, overrides, override.start) == override.user_id


# --- Properties over random schedules ----------------------------------------------------------

ZONES = (BERLIN, NEW_YORK, SYDNEY, UTC_ZONE, KOLKATA, TROLL)
# Windows cluster around each zone's 2026 offset changes (or lie anywhere in 2026).
DST_CHANGES: dict[str, tuple[datetime, ...]] = {
    "Europe/Berlin": (utc(2026, 3, 29, 1), utc(2026, 10, 25, 1)),
    "America/New_York": (utc(2026, 3, 8, 7), utc(2026, 11, 1, 6)),
    "Australia/Sydney": (utc(2026, 4, 4, 16), utc(2026, 10, 3, 16)),
    "UTC": (),
    "Asia/Kolkata": (),
    "Antarctica/Troll": (utc(2026, 3, 29, 1), utc(2026, 10, 25, 1)),
}
UNITS: tuple[Unit, ...] = ("hours", "days", "weeks")
STEP = {"hours": timedelta(hours=1), "days": timedelta(days=1), "weeks": timedelta(weeks=1)}
MICRO = timedelta(microseconds=1)
MINUTE = timedelta(minutes=1)

clock_times = st.builds(time, st.integers(0, 23), st.sampled_from((0, 15, 30, 45)))
restrictions = st.builds(
    Restriction, st.frozensets(st.integers(0, 6), min_size=1), clock_times, clock_times
)


@dataclass(frozen=True)
class Scenario:
    zone: ZoneInfo
    layers: list[Layer]
    overrides: list[Override]
    start: datetime
    end: datetime


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    zone = draw(st.sampled_from(ZONES))
    anywhere = st.datetimes(wall(2026, 1, 1), wall(2026, 12, 31, 23, 59), timezones=st.just(UTC))
    changes = DST_CHANGES[zone.key]
    anchor = draw(st.one_of(st.sampled_from(changes), anywhere) if changes else anywhere)
    start = anchor + timedelta(minutes=draw(st.integers(-3 * 24 * 60, 3 * 24 * 60)))
    end = start + timedelta(minutes=draw(st.integers(1, 20 * 24 * 60)))
    layers = []
    for _ in range(draw(st.integers(1, 3))):
        # Mostly shortly before the window (the oracle steps from here), sometimes anywhere.
        before = timedelta(minutes=draw(st.integers(-2 * 24 * 60, 40 * 24 * 60)))
        near = local_of(zone, start) - before
        first = draw(
            st.one_of(
                st.just(near.replace(second=0, microsecond=0)),
                st.datetimes(wall(2026, 1, 1), wall(2026, 12, 31, 23, 59)).map(
                    lambda moment: moment.replace(second=0, microsecond=0)
                ),
            )
        )
        layers.append(
            Layer(
                tuple(draw(st.lists(st.integers(1, 5), max_size=4))),
                draw(st.integers(1, 3)),
                draw(st.sampled_from(UNITS)),
                first,
                tuple(draw(st.lists(restrictions, max_size=2))),
            )
        )
    overrides = []
    for _ in range(draw(st.integers(0, 4))):
        lo = start + timedelta(minutes=draw(st.integers(-2 * 24 * 60, (end - start) // MINUTE)))
        hi = lo + timedelta(minutes=draw(st.integers(1, 3 * 24 * 60)))
        overrides.append(Override(draw(st.integers(1, 6)), lo, hi, draw(st.integers(0, 5))))
    return Scenario(zone, layers, overrides, start, end)


def containing(shifts: Sequence[Shift], instant: datetime) -> int | None:
    users = [s.user_id for s in shifts if s.start <= instant < s.end]
    assert len(users) <= 1
    return users[0] if users else None


def join(shifts: Sequence[Shift]) -> list[Shift]:
    out: list[Shift] = []
    for shift in shifts:
        if out and out[-1].user_id == shift.user_id and out[-1].end == shift.start:
            out[-1] = Shift(shift.user_id, out[-1].start, shift.end)
        else:
            out.append(shift)
    return out


def assert_well_formed(shifts: Sequence[Shift], start: datetime, end: datetime) -> None:
    for shift in shifts:
        assert start <= shift.start < shift.end <= end
        assert shift.start.tzinfo is UTC and shift.end.tzinfo is UTC
    for a, b in pairwise(shifts):
        assert a.end <= b.start


def instants(data: st.DataObject, scenario: Scenario, shifts: Sequence[Shift]) -> list[datetime]:
    """Random instants in the window plus the edges of every piece (the likely off-by-ones)."""
    span = (scenario.end - scenario.start) // MICRO
    offsets = data.draw(st.lists(st.integers(0, span - 1), min_size=1, max_size=6))
    picks = [scenario.start + offset * MICRO for offset in offsets]
    edges = [t for s in shifts for t in (s.start, s.end, s.end - MICRO)]
    edges += [t for o in scenario.overrides for t in (o.start, o.end, o.end - MICRO)]
    # Around an offset change: where handoffs go missing, repeat or run backwards.
    jitter = data.draw(st.integers(0, 9)) * MINUTE
    edges += [
        change + jitter + minutes * MINUTE
        for change in DST_CHANGES[scenario.zone.key]
        if scenario.start - 4 * HOUR <= change < scenario.end + 4 * HOUR
        for minutes in range(-180, 180, 10)
    ]
    return [t for t in picks + edges if scenario.start <= t < scenario.end]


class Oracle:
    """An independent, slow reference: step every handoff from the layer's start."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.handoffs: dict[int, list[datetime]] = {}

    def layer_user(self, index: int, instant: datetime) -> int | None:
        layer, zone = self.scenario.layers[index], self.scenario.zone
        if not layer.user_ids:
            return None
        step = STEP[layer.rotation_unit] * layer.rotation_length
        handoffs = self.handoffs.setdefault(index, [])
        # The owner is the one handed over by the last handoff before the first one after
        # `instant` (handoffs that do not move forward in UTC are absorbed).
        k = 0
        while True:
            if k == len(handoffs):
                handoffs.append(at_local(zone, layer.start + k * step))
            if handoffs[k] > instant:
                break
            k += 1
        if k == 0:
            return None
        if layer.restrictions and not self.in_window(layer.restrictions, instant):
            return None
        return layer.user_ids[(k - 1) % len(layer.user_ids)]

    def in_window(self, rules: Sequence[Restriction], instant: datetime) -> bool:
        zone = self.scenario.zone
        local = local_of(zone, instant)
        by_wall_clock = by_conversion = False
        for rule in rules:
            for back in (0, 1, 2):
                day = local.date() - timedelta(days=back)
                if day.weekday() not in rule.days:
                    continue
                opens = datetime.combine(day, rule.start)
                closes = datetime.combine(
                    day if rule.end > rule.start else day + timedelta(days=1), rule.end
                )
                by_wall_clock = by_wall_clock or opens <= local < closes
                by_conversion = by_conversion or (
                    at_local(zone, opens) <= instant < at_local(zone, closes)
                )
        offsets = {
            (instant + timedelta(days=days)).astimezone(zone).utcoffset() for days in (-3, 0, 3)
        }
        if len(offsets) == 1:  # away from offset changes, plain wall-clock comparison agrees
            assert by_wall_clock == by_conversion
        return by_conversion

    def override_user(self, instant: datetime) -> int | None:
        covering = [
            (o.order, i, o.user_id)
            for i, o in enumerate(self.scenario.overrides)
            if o.start <= instant < o.end
        ]
        return max(covering)[2] if covering else None

    def on_call(self, instant: datetime) -> int | None:
        user = self.override_user(instant)
        for index in reversed(range(len(self.scenario.layers))):
            if user is not None:
                break
            user = self.layer_user(index, instant)
        return user


PROPERTY = settings(max_examples=200, deadline=None)


@PROPERTY
@given(scenarios())
def test_shifts_are_sorted_disjoint_inside_the_window_and_joined(scenario: Scenario) -> None:
    zone, start, end = scenario.zone, scenario.start, scenario.end
    for layer in scenario.layers:
        shifts = layer_shifts(zone, layer, start, end)
        assert_well_formed(shifts, start, end)
        if shifts:
            assert shifts[0].start >= at_local(zone, layer.start)  # nobody before the layer starts
            assert {s.user_id for s in shifts} <= set(layer.user_ids)
    final = final_shifts(zone, scenario.layers, scenario.overrides, start, end)
    assert_well_formed(final, start, end)
    for a, b in pairwise(final):
        assert not (a.end == b.start and a.user_id == b.user_id)


@PROPERTY
@given(scenarios(), st.data())
def test_on_call_is_the_user_of_the_containing_shift(
    scenario: Scenario, data: st.DataObject
) -> None:
    zone, layers, overrides = scenario.zone, scenario.layers, scenario.overrides
    final = final_shifts(zone, layers, overrides, scenario.start, scenario.end)
    for instant in instants(data, scenario, final):
        assert on_call(zone, layers, overrides, instant) == containing(final, instant)


@PROPERTY
@given(scenarios(), st.data())
def test_an_override_always_wins(scenario: Scenario, data: st.DataObject) -> None:
    zone, layers, overrides = scenario.zone, scenario.layers, scenario.overrides
    for index, override in enumerate(overrides):
        span = (override.end - override.start) // MICRO
        instant = override.start + data.draw(st.integers(0, span - 1)) * MICRO
        newest = max(
            (o.order, i, o.user_id) for i, o in enumerate(overrides) if o.start <= instant < o.end
        )
        assert newest >= (override.order, index, override.user_id)
        assert on_call(zone, layers, overrides, instant) == newest[2]
        if scenario.start <= instant < scenario.end:
            final = final_shifts(zone, layers, overrides, scenario.start, scenario.end)
            assert containing(final, instant) == newest[2]


@PROPERTY
@given(scenarios(), st.data())
def test_shifts_do_not_depend_on_the_window(scenario: Scenario, data: st.DataObject) -> None:
    zone, layers, overrides = scenario.zone, scenario.layers, scenario.overrides
    a, c = scenario.start, scenario.end
    b = a + data.draw(st.integers(0, (c - a) // MICRO)) * MICRO
    whole = final_shifts(zone, layers, overrides, a, c)
    split = final_shifts(zone, layers, overrides, a, b) + final_shifts(
        zone, layers, overrides, b, c
    )
    assert whole == join(split)
    for layer in layers:
        whole = layer_shifts(zone, layer, a, c)
        split = layer_shifts(zone, layer, a, b) + layer_shifts(zone, layer, b, c)
        assert join(whole) == join(split)
        # Adding a participant changes who is on duty, never when: the same pieces, and none
        # before the layer's start.
        grown = Layer(
            (*layer.user_ids, 9),
            layer.rotation_length,
            layer.rotation_unit,
            layer.start,
            layer.restrictions,
        )
        grown_shifts = layer_shifts(zone, grown, a, c)
        assert layer_shifts(zone, grown, a, min(c, at_local(zone, layer.start))) == []
        if layer.user_ids:
            assert [(s.start, s.end) for s in grown_shifts] == [(s.start, s.end) for s in whole]
        # And the schedule as a whole, other layers and overrides included, is unchanged before
        # the grown layer's start.
        before = min(c, max(a, at_local(zone, layer.start)))
        with_grown = [grown if other is layer else other for other in layers]
        assert final_shifts(zone, with_grown, overrides, a, before) == final_shifts(
            zone, layers, overrides, a, before
        )


@PROPERTY
@given(scenarios(), st.data())
def test_matches_a_brute_force_oracle(scenario: Scenario, data: st.DataObject) -> None:
    zone, layers, overrides = scenario.zone, scenario.layers, scenario.overrides
    oracle = Oracle(scenario)
    per_layer = [layer_shifts(zone, layer, scenario.start, scenario.end) for layer in layers]
    final = final_shifts(zone, layers, overrides, scenario.start, scenario.end)
    pieces = final + [s for shifts in per_layer for s in shifts]
    for instant in instants(data, scenario, pieces):
        for index, shifts in enumerate(per_layer):
            assert containing(shifts, instant) == oracle.layer_user(index, instant)
        assert on_call(zone, layers, overrides, instant) == oracle.on_call(instant)
