"""The audit log's retention (the worker's job) and its tamper resistance on PostgreSQL; and the
alert path's cost: nothing (no statement added to a new alert's)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, insert, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from app.audit.models import AuditEntry
from app.core.db import session_scope
from tests.support.data import make_integration


def row(at: datetime, object_id: int) -> dict:
    return {
        "at": at, "actor_type": "system", "actor_id": None, "actor_name": "test",
        "action": "update", "object_type": "service", "object_id": object_id,
        "before": {"name": "a"}, "after": {"name": "b"}, "request_id": None,
        "source_address": None,
    }  # fmt: skip


async def seed(harness, *ages_in_days: int) -> None:
    now = harness.clock.now()
    async with session_scope(harness.app.state.sessionmaker) as session:
        for n, days in enumerate(ages_in_days, start=1):
            await session.execute(insert(AuditEntry), [row(now - timedelta(days=days), n)])


async def kept(harness) -> list[int]:
    async with session_scope(harness.app.state.sessionmaker) as session:
        query = select(AuditEntry.object_id).order_by(AuditEntry.object_id)
        return list(await session.scalars(query))


async def test_the_worker_deletes_entries_older_than_the_retention_only(harness):
    # The database's clock judges too (PostgreSQL): the test's clock reads the real time.
    harness.clock.set(datetime.now(UTC))
    assert harness.settings.audit_retention_days == 365
    await seed(harness, 400, 366, 364, 10)
    assert (await harness.run_jobs())["prune_audit_log"] == 2
    assert await kept(harness) == [3, 4]
    assert (await harness.run_jobs())["prune_audit_log"] == 0


async def test_zero_keeps_everything(harness):
    harness.clock.set(datetime.now(UTC))
    await seed(harness, 4000, 1)
    harness.app.state.worker.settings = harness.settings.model_copy(
        update={"audit_retention_days": 0}
    )
    assert (await harness.run_jobs())["prune_audit_log"] == 0
    assert await kept(harness) == [1, 2]


async def test_postgresql_refuses_updates_and_deletes_but_the_pruning(harness, postgres_only):
    harness.clock.set(datetime.now(UTC))
    await seed(harness, 400, 10)
    engine = harness.app.state.engine

    async def refused(*statements: str) -> None:
        async with engine.connect() as connection:
            with pytest.raises(DBAPIError, match="append-only"):
                async with connection.begin():
                    for statement in statements:
                        await connection.execute(text(statement))

    await refused("UPDATE audit_log SET actor_name = 'someone else'")
    await refused("UPDATE audit_log SET at = at - interval '1000 days'")
    await refused("DELETE FROM audit_log WHERE object_id = 1")  # old, but no retention declared
    await refused("DELETE FROM audit_log WHERE object_id = 2")
    # A retention declared, but a row younger than it: the whole statement is refused.
    await refused("SET LOCAL ims.audit_retention_days = '365'", "DELETE FROM audit_log")
    await refused("SET LOCAL ims.audit_retention_days = '0'", "DELETE FROM audit_log")
    await refused("SET LOCAL ims.audit_retention_days = 'all'", "DELETE FROM audit_log")
    assert await kept(harness) == [1, 2]
    async with engine.begin() as connection:
        await connection.execute(text("SET LOCAL ims.audit_retention_days = '365'"))
        await connection.execute(text("DELETE FROM audit_log WHERE object_id = 1"))
    assert await kept(harness) == [2]


async def test_a_new_alert_costs_no_statement_more(harness, admin_client):
    """The statements of one new alert's request (ingestion, `POST /v1/alerts/generic`): 9
    before the audit log existed and 9 with it (docs/audit.md), none of them about the log."""
    key, _ = await make_integration(admin_client, "generic")
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        response = await admin_client.post(
            "/v1/alerts/generic", json={"summary": "disk full", "dedup_key": "disk"},
            headers={"Authorization": f"Bearer {key}"},
        )  # fmt: skip
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    assert response.status_code == 202, response.text
    assert not [s for s in statements if "audit_log" in s]
    assert len(statements) == ALERT_STATEMENTS[harness.app.state.engine.dialect.name], statements


ALERT_STATEMENTS = {"sqlite": 9, "postgresql": 9}
