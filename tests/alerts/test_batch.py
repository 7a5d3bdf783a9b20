"""Alerts ingested as a batch come out as one at a time would, and one job's problem is its own."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest
from sqlalchemy import event, select, text

from app.alerts.alert import Alert
from app.core.db import create_engine, create_sessionmaker, session_scope
from app.core.errors import Forbidden, Unauthorized, Unprocessable
from app.core.ratelimit import Limit, RateLimitState
from app.escalation.models import EscalationEvent
from app.flows.ingest import AlertBatcher, ingest, ingest_many
from app.incidents.models import Incident, Severity, TimelineEntry
from app.notifications.models import Notification, NotificationPreference
from tests.support.data import keyed_integration as _keyed_integration

KEYS = ("disk", "cpu", "queue")
HANDMADE = [
    [("trigger", "disk")] * 3,
    [("trigger", "disk"), ("resolve", "disk"), ("trigger", "disk"), ("trigger", "disk")],
    [("trigger", "disk"), ("acknowledge", "disk"), ("trigger", "disk"), ("resolve", "disk")],
    [("resolve", "cpu"), ("acknowledge", "cpu"), ("trigger", "cpu"), ("trigger", "queue")],
    [("trigger", "disk"), ("trigger", "cpu"), ("resolve", "disk"), ("trigger", "disk"),
     ("acknowledge", "cpu"), ("trigger", "cpu"), ("resolve", "cpu"), ("trigger", "cpu")],
]  # fmt: skip


def sequences(count: int, seed: int) -> list[list[tuple[str, str]]]:
    rng = random.Random(seed)
    actions = ("trigger", "trigger", "trigger", "acknowledge", "resolve")
    return HANDMADE + [
        [(rng.choice(actions), rng.choice(KEYS)) for _ in range(rng.randint(1, 14))]
        for _ in range(count)
    ]


def alerts_of(sequence: list[tuple[str, str]]) -> list[Alert]:
    return [
        Alert(action=action, dedup_key=key, title=f"{key} #{n}",  # type: ignore[arg-type]
              severity=Severity.high, labels={"n": str(n)}, raw={"n": n})
        for n, (action, key) in enumerate(sequence)
    ]  # fmt: skip


async def state(harness, service_id: int) -> list[tuple]:
    """Everything ingestion wrote for a service, with ids replaced by their order of creation."""
    async with session_scope(harness.app.state.sessionmaker) as session:
        found = list(
            await session.scalars(
                select(Incident).where(Incident.service_id == service_id).order_by(Incident.id)
            )
        )
        ordinal = {incident.id: n for n, incident in enumerate(found)}
        described = []
        for incident in found:
            entries = await session.scalars(
                select(TimelineEntry)
                .where(TimelineEntry.incident_id == incident.id)
                .order_by(TimelineEntry.id)
            )
            steps = await session.execute(
                select(EscalationEvent.run, EscalationEvent.step, EscalationEvent.status)
                .where(EscalationEvent.incident_id == incident.id)
                .order_by(EscalationEvent.id)
            )
            told = await session.execute(
                select(Notification.event, Notification.channel, Notification.user_id)
                .where(Notification.incident_id == incident.id)
                .order_by(Notification.id)
            )
            described.append((
                ordinal[incident.id], incident.dedup_key, incident.status, incident.alert_count,
                incident.version, incident.title, incident.labels, incident.escalation_status,
                incident.escalation_run, incident.source,
                [(e.type, e.actor_type, e.data.get("action"), e.data.get("raw")) for e in entries],
                [tuple(row) for row in steps], [tuple(row) for row in told],
            ))  # fmt: skip
        return described


@pytest.mark.parametrize("window", [0, 10], ids=["no-reopen", "reopen-window"])
async def test_a_batch_writes_what_one_alert_at_a_time_writes(harness, factory, window):
    """Random and hand-made sequences of triggers, acknowledgements and resolutions, over three
    keys, give the same incidents, counts, versions, timelines, escalation steps and
    notifications through `ingest_many` in one transaction as through `ingest` one by one."""
    watcher = await factory.user(email="watcher@example.com")
    await factory.policy(
        steps=[{"delay_minutes": 0, "targets": [{"type": "user", "id": watcher.id}],
                "actions": []}]
    )  # fmt: skip
    await factory.webhook()
    async with session_scope(harness.app.state.sessionmaker) as session:
        session.add(NotificationPreference(
            user_id=watcher.id, channel="email", enabled=True, address=None,
            min_severity="info", events=["triggered", "resolved"],
            created_at=harness.clock.now(), updated_at=harness.clock.now(),
        ))  # fmt: skip
    reopen = timedelta(minutes=window)
    now = harness.clock.now()
    for number, sequence in enumerate(sequences(25, seed=window)):
        singly = await factory.integration(name=f"singly {number}")
        batched = await factory.integration(name=f"batched {number}")
        for alert in alerts_of(sequence):
            async with session_scope(harness.app.state.sessionmaker) as session:
                await ingest(
                    session, integration=singly, alert=alert, now=now, reopen_window=reopen
                )
        async with session_scope(harness.app.state.sessionmaker) as session:
            items = [(batched, alert) for alert in alerts_of(sequence)]
            results = await ingest_many(session, items, now=now, reopen_window=reopen)
        expected = await state(harness, singly.service_id)
        assert await state(harness, batched.service_id) == expected, sequence
        # The answers name the incidents the alerts went to, in order.
        assert [r.dedup_key for r in results] == [key for _, key in sequence]
        ids = [i for i in await _incident_ids(harness, batched.service_id)]
        assert {r.incident_id for r in results if r.incident_id is not None} <= set(ids)
        assert len(results) == len(sequence)
    # The comparison saw real work: steps scheduled and people and hooks told.
    assert any(row[11] for row in expected) and any(row[12] for row in expected)


async def _incident_ids(harness, service_id: int) -> list[int]:
    async with session_scope(harness.app.state.sessionmaker) as session:
        return list(
            await session.scalars(select(Incident.id).where(Incident.service_id == service_id))
        )


async def test_the_batcher_answers_each_job_alone_in_one_transaction(harness, factory):
    key = await _keyed_integration(harness, factory)
    commits = []
    engine = harness.app.state.engine

    def count(connection):
        commits.append(connection)

    event.listen(engine.sync_engine, "commit", count)
    batcher = AlertBatcher(
        harness.app.state.sessionmaker, harness.clock, reopen_window=timedelta(0)
    )

    def firing(dedup_key):
        return lambda: [Alert(action="trigger", dedup_key=dedup_key, title=dedup_key)]

    def unparsable():
        raise Unprocessable("alerts.0.labels: Input should be a valid dictionary")

    try:
        answers = await asyncio.gather(
            batcher.alerts(key, "alertmanager", firing("one")),
            batcher.alerts("not-a-key", "alertmanager", firing("two")),
            batcher.alerts(key, "generic", firing("three")),
            batcher.alerts(key, "alertmanager", unparsable),
            batcher.alerts(key, "alertmanager", firing("one")),
            return_exceptions=True,
        )
    finally:
        event.remove(engine.sync_engine, "commit", count)
    first, unknown, wrong_kind, bad_body, repeat = answers
    assert [r.outcome for r in first] == ["incident_created"]
    assert [(r.incident_id, r.outcome) for r in repeat] == [(first[0].incident_id,
                                                             "incident_updated")]  # fmt: skip
    assert isinstance(unknown, Unauthorized) and isinstance(wrong_kind, Forbidden)
    assert isinstance(bad_body, Unprocessable)
    assert len(commits) == 1  # five requests, one transaction
    [incident] = await _incidents(harness)
    assert (incident.dedup_key, incident.alert_count) == ("one", 2)


async def test_a_failing_batch_is_retried_job_by_job(harness, factory):
    key = await _keyed_integration(harness, factory)
    batcher = AlertBatcher(
        harness.app.state.sessionmaker, harness.clock, reopen_window=timedelta(0)
    )

    def broken():
        raise RuntimeError("a bug in one source's parser")

    good, bad, other = await asyncio.gather(
        batcher.alerts(key, "alertmanager", lambda: [Alert(action="trigger", dedup_key="a")]),
        batcher.alerts(key, "alertmanager", broken),
        batcher.alerts(key, "alertmanager", lambda: [Alert(action="trigger", dedup_key="b")]),
        return_exceptions=True,
    )
    assert isinstance(bad, RuntimeError)
    assert [r.outcome for r in good] == [r.outcome for r in other] == ["incident_created"]
    assert sorted(i.dedup_key for i in await _incidents(harness)) == ["a", "b"]


async def _incidents(harness) -> list[Incident]:
    async with session_scope(harness.app.state.sessionmaker) as session:
        return list(await session.scalars(select(Incident).order_by(Incident.id)))


async def test_a_failed_commit_is_not_retried(harness, factory):
    """A commit that fails may have been applied: its requests get the error, nothing is
    written twice by a retry, and the batcher goes on with the next batch."""
    key = await _keyed_integration(harness, factory)
    engine = create_engine(harness.settings, pool_pre_ping=False)
    batcher = AlertBatcher(create_sessionmaker(engine), harness.clock, reopen_window=timedelta(0))
    parsed = []

    def firing(dedup_key):
        def parse():
            parsed.append(dedup_key)
            return [Alert(action="trigger", dedup_key=dedup_key)]

        return parse

    def refuse(connection):
        raise OSError("the connection broke during COMMIT")

    event.listen(engine.sync_engine, "commit", refuse)
    try:
        answers = await asyncio.gather(
            batcher.alerts(key, "alertmanager", firing("a")),
            batcher.alerts(key, "alertmanager", firing("b")),
            return_exceptions=True,
        )
        assert [type(a) for a in answers] == [OSError, OSError]
        assert sorted(parsed) == ["a", "b"]  # parsed once each: not retried
    finally:
        event.remove(engine.sync_engine, "commit", refuse)
    [result] = await batcher.alerts(key, "alertmanager", firing("c"))
    assert result.outcome == "incident_created"
    # Whether the failed commit was applied depends on where it failed (on PostgreSQL here it
    # was, on SQLite it was not): either way nothing is counted twice.
    stored = {i.dedup_key: i.alert_count for i in await _incidents(harness)}
    assert stored in ({"c": 1}, {"a": 1, "b": 1, "c": 1})
    await engine.dispose()


async def test_a_lost_connection_costs_a_retry_not_an_error(harness, factory, postgres_only):
    """The batcher does not ping its connections before use; when the server has dropped one
    (a restart), the batch runs again on a new connection and the request succeeds."""
    key = await _keyed_integration(harness, factory)
    engine = create_engine(harness.settings, pool_pre_ping=False)
    batcher = AlertBatcher(create_sessionmaker(engine), harness.clock, reopen_window=timedelta(0))
    firing = [Alert(action="trigger", dedup_key="disk")]
    await batcher.alerts(key, "alertmanager", lambda: firing)
    async with engine.connect() as connection:  # the pool's one connection
        pid = await connection.scalar(text("SELECT pg_backend_pid()"))
    async with harness.app.state.engine.connect() as other:
        assert await other.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    [result] = await batcher.alerts(key, "alertmanager", lambda: firing)
    assert result.outcome == "incident_updated"
    [incident] = await _incidents(harness)
    assert incident.alert_count == 2
    await engine.dispose()


async def test_ingestion_plans_each_statement_afresh(harness, postgres_only):
    """A generic plan cached while the tables were small would keep scanning them as they grow
    (measured: the database's CPU per alert grew fivefold over 100,000 alerts)."""
    async with session_scope(harness.app.state.alert_batcher.sessionmaker) as session:
        assert await session.scalar(text("SHOW plan_cache_mode")) == "force_custom_plan"
    async with session_scope(harness.app.state.sessionmaker) as session:
        assert await session.scalar(text("SHOW plan_cache_mode")) == "auto"


async def test_a_batch_whose_buckets_cannot_be_taken_from_is_refused_whole(harness, factory):
    """The rate-limit statement fails: every request gets the error, nothing is stored, and the
    next batch goes through (taking from the bucket once). Bodies are parsed before the bucket
    is taken from (their alerts are what it counts), once each."""
    key = await _keyed_integration(harness, factory)
    engine = create_engine(harness.settings, pool_pre_ping=False)
    batcher = AlertBatcher(
        create_sessionmaker(engine), harness.clock, reopen_window=timedelta(0),
        limit=Limit(capacity=100, interval=1.0),
    )  # fmt: skip
    parsed = []

    def firing(dedup_key):
        return lambda: parsed.append(dedup_key) or [Alert(action="trigger", dedup_key=dedup_key)]

    def refuse(connection, cursor, statement, *args):
        if statement.startswith("INSERT INTO rate_limits"):
            raise OSError("the database went away")

    event.listen(engine.sync_engine, "before_cursor_execute", refuse)
    try:
        answers = await asyncio.gather(
            batcher.alerts(key, "alertmanager", firing("a")),
            batcher.alerts(key, "alertmanager", firing("b")),
            return_exceptions=True,
        )
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", refuse)
    assert [type(a) for a in answers] == [OSError, OSError] and parsed == ["a", "b"]
    [result] = await batcher.alerts(key, "alertmanager", firing("c"))
    assert result.outcome == "incident_created"
    assert [i.dedup_key for i in await _incidents(harness)] == ["c"]
    async with session_scope(harness.app.state.sessionmaker) as session:
        [(admitted, requested)] = (
            await session.execute(select(RateLimitState.admitted, RateLimitState.requested))
        ).all()
    assert (admitted, requested) == (1, 1)
    await engine.dispose()
