"""GET /v1/analytics/incidents against a small, deliberate data set whose figures are worked out
by hand below, on both databases."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from app.analytics.service import nearest_rank
from tests.support.analytics import URL, at

RANGE = {"start": "2026-01-01T00:00:00Z", "end": "2026-01-04T00:00:00Z"}
ZERO = {"critical": 0, "high": 0, "medium": 0, "low": 0, "info": 0}


def day(date: str, **counts: int) -> dict[str, object]:
    return {"date": date, "total": sum(counts.values()), **ZERO, **counts}


async def test_the_whole_report_matches_the_hand_computed_figures(user_client, world):
    checkout, search = world["checkout"].id, world["search"].id
    ana, ben, cleo = world["ana"].id, world["ben"].id, world["cleo"].id
    response = await user_client.get(URL, params=RANGE)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "start": "2026-01-01T00:00:00Z",
        "end": "2026-01-04T00:00:00Z",
        "service_id": None,
        # i1..i6; not i7 (created at the end) nor i8 (a microsecond before the start).
        "incidents": {
            "total": 6,
            "by_severity": {"critical": 2, "high": 1, "medium": 1, "low": 1, "info": 1},
        },
        "opened_by_day": [
            day("2026-01-01", critical=1, high=1),  # i1 (00:00), i2
            day("2026-01-02", medium=1, critical=1),  # i3, i4 (23:59:59)
            day("2026-01-03", low=1, info=1),  # i5, i6
        ],
        # Acknowledged: i1 60, i2 120.5, i3 300, i5 30 s. Mean (60 + 120.5 + 300 + 30) / 4 =
        # 510.5 / 4 = 127.625. p90: rank ceil(0.9 × 4) = 4 of [30, 60, 120.5, 300] → 300.
        "time_to_acknowledge": {"count": 4, "mean_seconds": 127.625, "p90_seconds": 300.0},
        # Resolved: i1 600, i2 1200, i4 1800 (never acknowledged), i5 90 s. Mean 3690 / 4 =
        # 922.5. p90: rank ceil(3.6) = 4 of [90, 600, 1200, 1800] → 1800.
        "time_to_resolve": {"count": 4, "mean_seconds": 922.5, "p90_seconds": 1800.0},
        # executed: i1 step 1, i3 step 1, i8 step 1; failed: i1 step 2; skipped: i4.
        # Not: scheduled, cancelled, and i7's (after the end). 3 + 1 + 1 = 5.
        "escalation_steps": {"fired": 5, "executed": 3, "failed": 1, "skipped": 1},
        # Ana: email + SMS for i1, one for i3 = 3 pages, 2 incidents. Ben: i3 (the failed one,
        # the `assigned` message and i7's after the end do not count). Cleo: i8's (pending i2's
        # does not). Ties in user id order.
        "pages_by_user": [
            {"user_id": ana, "full_name": "Ana Oncall", "pages": 3, "incidents": 2},
            {"user_id": ben, "full_name": "Ben Oncall", "pages": 1, "incidents": 1},
            {"user_id": cleo, "full_name": "Cleo Oncall", "pages": 1, "incidents": 1},
        ],
        # checkout: i1, i2, i4, alerts 5 + 3 + 10 = 18; search: i3, i5, alerts 1 + 2 = 3.
        "noisiest_services": [
            {"service_id": checkout, "name": "checkout", "incidents": 3, "alerts": 18},
            {"service_id": search, "name": "search", "incidents": 2, "alerts": 3},
        ],
        # By incidents, then alerts: db-down (i1, i2; 5 + 3), slow-query (i3, i5; 1 + 2), then
        # disk (i4 alone) although its 10 alerts are the most.
        "noisiest_dedup_keys": [
            {"service_id": checkout, "dedup_key": "db-down", "incidents": 2, "alerts": 8},
            {"service_id": search, "dedup_key": "slow-query", "incidents": 2, "alerts": 3},
            {"service_id": checkout, "dedup_key": "disk", "incidents": 1, "alerts": 10},
        ],
    }


async def test_one_service(user_client, world):
    checkout, ana = world["checkout"].id, world["ana"].id
    answer = (await user_client.get(URL, params={**RANGE, "service_id": checkout})).json()
    assert answer == {
        "start": "2026-01-01T00:00:00Z",
        "end": "2026-01-04T00:00:00Z",
        "service_id": checkout,
        "incidents": {"total": 3, "by_severity": {**ZERO, "critical": 2, "high": 1}},
        "opened_by_day": [
            day("2026-01-01", critical=1, high=1),  # i1, i2
            day("2026-01-02", critical=1),  # i4
            day("2026-01-03"),
        ],
        # i1 60, i2 120.5: mean 90.25; p90 rank ceil(1.8) = 2 → 120.5.
        "time_to_acknowledge": {"count": 2, "mean_seconds": 90.25, "p90_seconds": 120.5},
        # i1 600, i2 1200, i4 1800: mean 1200; p90 rank ceil(2.7) = 3 → 1800.
        "time_to_resolve": {"count": 3, "mean_seconds": 1200.0, "p90_seconds": 1800.0},
        "escalation_steps": {"fired": 3, "executed": 1, "failed": 1, "skipped": 1},  # i1 ×2, i4
        "pages_by_user": [  # Ana's two pages for i1; i3's and i8's are search's
            {"user_id": ana, "full_name": "Ana Oncall", "pages": 2, "incidents": 1}
        ],
        "noisiest_services": [
            {"service_id": checkout, "name": "checkout", "incidents": 3, "alerts": 18}
        ],
        "noisiest_dedup_keys": [
            {"service_id": checkout, "dedup_key": "db-down", "incidents": 2, "alerts": 8},
            {"service_id": checkout, "dedup_key": "disk", "incidents": 1, "alerts": 10},
        ],
    }


def empty(start: str, end: str, dates: list[str], service_id: int | None = None) -> object:
    nothing = {"count": 0, "mean_seconds": None, "p90_seconds": None}
    return {
        "start": start, "end": end, "service_id": service_id,
        "incidents": {"total": 0, "by_severity": ZERO},
        "opened_by_day": [day(d) for d in dates],
        "time_to_acknowledge": nothing, "time_to_resolve": nothing,
        "escalation_steps": {"fired": 0, "executed": 0, "failed": 0, "skipped": 0},
        "pages_by_user": [], "noisiest_services": [], "noisiest_dedup_keys": [],
    }  # fmt: skip


async def test_an_unknown_service_is_an_empty_report_as_for_the_incident_list(user_client, world):
    answer = await user_client.get(URL, params={**RANGE, "service_id": 999_999})
    assert answer.status_code == 200
    dates = ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert answer.json() == empty(RANGE["start"], RANGE["end"], dates, 999_999)
    listed = await user_client.get("/v1/incidents/", params={"service_id": 999_999})
    assert listed.json()["items"] == []


async def test_a_range_with_nothing_in_it_still_has_every_day(user_client, world):
    params = {"start": "2025-06-01T00:00:00Z", "end": "2025-06-03T12:00:00Z"}
    answer = (await user_client.get(URL, params=params)).json()
    dates = ["2025-06-01", "2025-06-02", "2025-06-03"]
    assert answer == empty("2025-06-01T00:00:00Z", "2025-06-03T12:00:00Z", dates)


async def test_start_is_inclusive_and_end_exclusive(user_client, world):
    async def totals(start: str, end: str) -> tuple[int, list[tuple[str, int]]]:
        answer = (await user_client.get(URL, params={"start": start, "end": end})).json()
        days = [(d["date"], d["total"]) for d in answer["opened_by_day"]]
        return answer["incidents"]["total"], days

    # i6 at 11:00 is in [11:00, Jan 4); i7 at Jan 4 00:00 is not.
    assert await totals("2026-01-03T11:00:00Z", "2026-01-04T00:00:00Z") == (
        1, [("2026-01-03", 1)],
    )  # fmt: skip
    # i7 is in [Jan 4, Jan 4 00:00:01): one second, one day.
    assert await totals("2026-01-04T00:00:00Z", "2026-01-04T00:00:01Z") == (
        1, [("2026-01-04", 1)],
    )  # fmt: skip
    # i8 is the last microsecond of Dec 31, outside [Jan 1, …) and inside […, Jan 1).
    assert (await totals("2025-12-31T23:00:00Z", "2026-01-01T00:00:00Z"))[0] == 1
    # An offset is turned into UTC: 01:00+01:00 is midnight UTC, so i1 is in.
    answer = await user_client.get(
        URL, params={"start": "2026-01-01T01:00:00+01:00", "end": "2026-01-01T00:00:01Z"}
    )
    assert answer.json()["start"] == "2026-01-01T00:00:00Z"
    assert answer.json()["incidents"]["total"] == 1


async def test_days_are_utc_dates(user_client, factory):
    # 23:30 UTC on Jan 1 is Jan 2 in Berlin; the report counts it on Jan 1.
    await factory.incident(created_at=at(1, 23, 30))
    params = {"start": "2026-01-01T22:00:00+01:00", "end": "2026-01-02T02:00:00+01:00"}
    answer = (await user_client.get(URL, params=params)).json()
    assert [(d["date"], d["total"]) for d in answer["opened_by_day"]] == [
        ("2026-01-01", 1), ("2026-01-02", 0),
    ]  # fmt: skip


async def test_default_range_is_the_30_days_ending_now(user_client, harness, world):
    now = harness.clock.now()  # 2026-01-05T09:00Z
    answer = (await user_client.get(URL)).json()
    assert (answer["start"], answer["end"]) == ("2025-12-06T09:00:00Z", "2026-01-05T09:00:00Z")
    assert now == datetime(2026, 1, 5, 9, tzinfo=UTC)
    assert len(answer["opened_by_day"]) == 31  # Dec 6 … Jan 5, both partial
    assert answer["incidents"]["total"] == 8  # i1 … i8
    start_only = (await user_client.get(URL, params={"start": "2026-01-01T00:00:00Z"})).json()
    assert (start_only["end"], start_only["incidents"]["total"]) == ("2026-01-05T09:00:00Z", 7)
    end_only = (await user_client.get(URL, params={"end": "2026-01-01T00:00:00Z"})).json()
    assert (end_only["start"], end_only["incidents"]["total"]) == ("2025-12-02T00:00:00Z", 1)
    # A start after now alone: the 30 days from it.
    later = (await user_client.get(URL, params={"start": "2026-02-01T00:00:00Z"})).json()
    assert later["end"] == "2026-03-03T00:00:00Z"


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "end must be after"),
        ({"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "end must be after"),
        ({"start": "2025-01-01T00:00:00Z", "end": "2026-01-02T00:00:00.000001Z"}, "366 days"),
        ({"start": "2026-01-01T00:00:00"}, "timezone"),  # no offset
        ({"start": "yesterday"}, "datetime"),
        ({"start": "1767225600"}, "ISO 8601"),  # Unix time is refused, as elsewhere
        ({"end": "2300-01-01T00:00:00Z"}, "between 1970 and 2199"),
        ({"service_id": "0"}, "greater than or equal to 1"),
        ({"service_id": "checkout"}, "integer"),
    ],
)
async def test_bad_input_is_422_with_a_reason(user_client, params, words):
    answer = await user_client.get(URL, params=params)
    assert answer.status_code == 422, answer.text
    assert words in str(answer.json()["detail"])


async def test_366_days_is_the_most(user_client):
    params = {"start": "2025-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}
    answer = (await user_client.get(URL, params=params)).json()
    assert len(answer["opened_by_day"]) == 366


async def test_who_may_ask(client, factory, harness):
    assert (await client.get(URL)).status_code == 401
    someone = await factory.user()  # a plain user, as for reading incidents
    async with harness.make_client(factory.token(someone)) as theirs:
        assert (await theirs.get(URL)).status_code == 200
        assert (await theirs.get(URL + "/")).status_code == 200  # both forms of the path


async def test_mean_and_p90_agree_with_the_python_definition(user_client, factory):
    """On either database, with durations to the microsecond and no ties to hide behind."""
    rng = random.Random(11)
    acks, resolves = [], []
    for n in range(37):
        ack = rng.randrange(1, 7_200_000_000) / 1e6  # up to 2 h, microseconds
        res = ack + rng.randrange(1, 86_400_000_000) / 1e6
        acks.append(ack)
        resolves.append(res if n % 3 else None)  # a third never resolved
        created = at(2, 0, 0, rng.uniform(0, 3600))
        await factory.incident(
            created_at=created, status="resolved" if n % 3 else "acknowledged",
            acknowledged_at=created + timedelta(seconds=ack),
            resolved_at=created + timedelta(seconds=res) if n % 3 else None,
        )  # fmt: skip
    answer = (await user_client.get(URL, params=RANGE)).json()
    for key, values in (("time_to_acknowledge", acks), ("time_to_resolve", resolves)):
        measured = [v for v in values if v is not None]
        # Python on the stored values: microseconds, as the database keeps them.
        micros = [round(v * 1e6) for v in measured]
        expected = {
            "count": len(micros),
            "mean_seconds": round(sum(micros) / len(micros) / 1e6, 3),
            "p90_seconds": round(sorted(micros)[-(-9 * len(micros) // 10) - 1] / 1e6, 3),
        }
        assert answer[key] == expected, key


def test_nearest_rank():
    assert nearest_rank([]) is None
    assert nearest_rank([5.0]) == 5.0
    assert nearest_rank(list(range(1, 11))) == 9  # ceil(9.0) = 9th
    assert nearest_rank(list(range(1, 12))) == 10  # ceil(9.9) = 10th
    assert nearest_rank(list(range(1, 101))) == 90
    assert nearest_rank([3, 1, 2]) == 3  # ceil(2.7) = 3rd; order of input does not matter


async def test_postgresql_percentile_disc_is_the_same_nearest_rank(harness, postgres_only):
    """The PostgreSQL path uses percentile_disc(0.9); the SQLite path nearest_rank in Python.
    For every n from 1 to 300 they pick the same element."""
    async with harness.app.state.engine.connect() as connection:
        found = await connection.execute(
            text(
                "SELECT n, percentile_disc(0.9) WITHIN GROUP (ORDER BY x) "
                "FROM generate_series(1, 300) AS n, generate_series(1, n) AS x GROUP BY n"
            )
        )
        by_n = dict(found.all())
    assert by_n == {n: nearest_rank(list(range(1, n + 1))) for n in range(1, 301)}
