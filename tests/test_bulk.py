"""Many-row writes (`app.core.bulk`): the rows read back exactly as the ORM would have written
them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from app.core import bulk
from app.core.db import session_scope
from app.incidents.models import Incident, TimelineEntry


async def test_insert_rows_round_trip(harness, factory, clock):
    incidents = [await factory.incident() for _ in range(3)]
    now = clock.now()
    rows = [
        {
            "incident_id": incident.id, "type": "note", "actor_type": "system",
            "actor_id": None if i == 1 else 7, "actor_name": f"name {i} ünï 'quoted'",
            "data": {"i": i, "nested": {"list": [1, "two", None]}, "text": "a,b}{\"c"},
            "created_at": now + timedelta(seconds=i),
        }
        for i, incident in enumerate(incidents)
    ]  # fmt: skip
    async with session_scope(harness.app.state.sessionmaker) as session:
        await bulk.insert_rows(session, TimelineEntry.__table__, rows)
    async with session_scope(harness.app.state.sessionmaker) as session:
        stored = list(
            await session.scalars(
                select(TimelineEntry).where(TimelineEntry.type == "note").order_by(TimelineEntry.id)
            )
        )
    assert [(e.incident_id, e.actor_id, e.actor_name, e.data, e.created_at) for e in stored] == [
        (r["incident_id"], r["actor_id"], r["actor_name"], r["data"], r["created_at"]) for r in rows
    ]
    assert all(e.created_at.tzinfo is not None for e in stored)


async def test_update_rows_changes_only_the_given_rows_and_columns(harness, factory, clock):
    a, b, untouched = [await factory.incident(severity="low") for _ in range(3)]
    later = clock.now() + timedelta(minutes=3)
    async with session_scope(harness.app.state.sessionmaker) as session:
        await bulk.update_rows(
            session,
            Incident.__table__,
            [
                {"id": a.id, "severity": "critical", "labels": {"k": "v"}, "updated_at": later},
                {"id": b.id, "severity": "high", "labels": {}, "updated_at": later},
            ],
        )
    async with session_scope(harness.app.state.sessionmaker) as session:
        stored = {
            i.id: i
            for i in await session.scalars(
                select(Incident).where(Incident.id.in_([a.id, b.id, untouched.id]))
            )
        }
    assert (stored[a.id].severity, stored[a.id].labels, stored[a.id].updated_at) == (
        "critical", {"k": "v"}, later,
    )  # fmt: skip
    assert (stored[b.id].severity, stored[b.id].labels) == ("high", {})
    assert stored[a.id].title == a.title  # columns not named are left alone
    assert stored[untouched.id].severity == "low"
    assert stored[untouched.id].updated_at == untouched.updated_at


async def test_naive_datetimes_are_refused_like_the_orm_refuses_them(harness, factory, clock):
    incident = await factory.incident()
    naive = clock.now().replace(tzinfo=None)
    with pytest.raises(Exception, match="naive datetime"):
        async with session_scope(harness.app.state.sessionmaker) as session:
            await bulk.update_rows(
                session, Incident.__table__, [{"id": incident.id, "updated_at": naive}]
            )


async def test_unknown_column_names_are_refused_before_any_sql(harness):
    async with session_scope(harness.app.state.sessionmaker) as session:
        with pytest.raises(KeyError):
            await bulk.insert_rows(
                session, TimelineEntry.__table__, [{"incident_id": 1, "type; DROP TABLE x": 1}]
            )
