"""How many statements the hottest requests send to PostgreSQL: each round trip costs a lone
request about 0.3–0.5 ms of server CPU on a 2-core machine (docs/performance.md), so these counts
are held here. A change that adds one to a path below must change its number here, knowingly.

Counted with SQLAlchemy's `before_cursor_execute` on every engine (`BEGIN` and `COMMIT` are
not statements there: asyncpg sends them itself)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from app.core.db import session_scope
from app.integrations import service as integration_service

pytestmark = pytest.mark.usefixtures("postgres_only")


@contextmanager
def statements() -> Iterator[list[str]]:
    sent: list[str] = []

    def record(connection, cursor, statement, *args):
        sent.append(statement.split(None, 1)[0].upper() + " " + statement[:120])

    # Every engine: the API's, and ingestion's own (app.main).
    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", record)


async def generic_key(harness, factory) -> str:
    integration = await factory.integration(kind="generic")
    async with session_scope(harness.app.state.sessionmaker) as session:
        stored = await session.get(type(integration), integration.id)
        return await integration_service.rotate(
            session, integration=stored, now=harness.clock.now()
        )


async def test_a_lone_alert_costs_a_handful_of_statements(harness, factory):
    key = await generic_key(harness, factory)
    headers = {"Authorization": f"Bearer {key}"}
    async with harness.make_client() as client:
        alert = {"summary": "disk full", "dedup_key": "disk"}
        with statements() as new:
            answer = await client.post("/v1/alerts/generic", json=alert, headers=headers)
        assert answer.json()["incidents"][0]["status"] == "incident_created", answer.text
        with statements() as repeat:
            answer = await client.post("/v1/alerts/generic", json=alert, headers=headers)
        assert answer.json()["incidents"][0]["status"] == "incident_updated", answer.text
    # The integration, the rate limit (on its own connection: an INSERT … ON CONFLICT), the
    # dedup lock, the open incident, the alert-storm budget (its count: on by default), the
    # policies, the incident, its entries, the audience of new incidents (preferences,
    # subscriptions and Slack channels in one).
    assert len(new) == 9, "\n".join(new)
    assert len(repeat) == 6, "\n".join(repeat)


async def test_a_page_of_the_incident_list_costs_two_statements(harness, factory, admin_client):
    for n in range(3):
        await factory.incident(title=f"incident {n}")
    with statements() as sent:
        answer = await admin_client.get("/v1/incidents/?limit=50")
    assert len(answer.json()["items"]) == 3
    assert len(sent) == 2, "\n".join(sent)  # the user, then the page with its assignees
