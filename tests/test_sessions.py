"""The request's database session: reads without a transaction on PostgreSQL, and pooled
connections the server has closed replaced without a round trip (app.core.db, app.core.deps)."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import Request
from sqlalchemy import text

from app.core.deps import SessionDep, writes_when_reading
from tests.support.databases import fetch

pytestmark = pytest.mark.usefixtures("postgres_only")


def _add_routes(app) -> None:
    """Routes of this test only: what a handler's session does, for each method."""

    async def one_transaction(session: SessionDep) -> dict[str, bool]:
        # Two statements of one transaction see one transaction id; statements on their own,
        # one each.
        first = await session.scalar(text("SELECT txid_current()"))
        second = await session.scalar(text("SELECT txid_current()"))
        return {"one_transaction": first == second}

    async def write(session: SessionDep, request: Request) -> dict[str, str]:
        await session.execute(text("CREATE TABLE IF NOT EXISTS session_probe (id int)"))
        await session.execute(text("INSERT INTO session_probe VALUES (1)"))
        return {"method": request.method}

    app.add_api_route("/_probe/statements", one_transaction, methods=["GET", "POST"])
    app.add_api_route("/_probe/write", write, methods=["GET", "POST"])

    @writes_when_reading
    async def write_marked(session: SessionDep, request: Request) -> dict[str, str]:
        return await write(session, request)

    app.add_api_route("/_probe/write-marked", write_marked, methods=["GET"])


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _probe_rows(url: str) -> int:
    url = _plain(url)
    found = await fetch(url, "SELECT to_regclass('session_probe') IS NOT NULL")
    if not found[0][0]:
        return 0
    [(count,)] = await fetch(url, "SELECT count(*) FROM session_probe")
    return int(count)


async def test_a_get_reads_statement_by_statement_and_may_not_write(harness, database_url, caplog):
    _add_routes(harness.app)
    async with harness.make_client() as client:
        read = await client.get("/_probe/statements")
        posted = await client.post("/_probe/statements")
        assert read.json() == {"one_transaction": False}
        assert posted.json() == {"one_transaction": True}

        refused = await client.get("/_probe/write")
        assert refused.status_code == 500, refused.text  # a bug, never a write
        assert "read-only session was asked to run 'CREATE TABLE" in caplog.text
        assert await _probe_rows(database_url) == 0  # nothing committed piecemeal

        assert (await client.get("/_probe/write-marked")).json() == {"method": "GET"}
        assert (await client.post("/_probe/write")).json() == {"method": "POST"}
    assert await _probe_rows(database_url) == 2
    await fetch(_plain(database_url), "DROP TABLE session_probe")


async def test_connections_the_server_closed_are_replaced_before_use(
    harness, user_client, database_url
):
    """No request fails for a pooled connection that the server ended while it sat idle (a
    restart, `pg_terminate_backend`, an idle timeout), though none is pinged before use."""
    client = user_client
    if True:
        await asyncio.gather(*(client.get("/v1/incidents/") for _ in range(4)))  # fill the pool
        pool = harness.app.state.engine.pool
        assert pool.checkedin() >= 1
        ended = await fetch(
            _plain(database_url),
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        assert ended[0][0] >= pool.checkedin()
        for _ in range(100):  # the server has ended them (bounded: ten seconds)
            left = await fetch(
                _plain(database_url),
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            if left[0][0] == 0:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.1)  # this loop reads their goodbyes
        for _ in range(4):
            answer = await client.get("/v1/incidents/")
            assert answer.status_code == 200, answer.text
