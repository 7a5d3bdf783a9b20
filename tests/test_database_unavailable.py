"""A database that cannot be reached answers 503 with Retry-After, never 500, and the app
recovers by itself when it is back (the live restart under load is tests/fault/)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from app.core.config import to_async_url
from app.core.db import DatabaseUnavailable, create_engine, is_unavailable
from app.core.errors import RETRY_AFTER_SECONDS
from app.core.migrations import upgrade_connection
from app.main import create_app
from tests.factories import Factory
from tests.support.settings import make_settings


class Outage:
    """Takes the backend's database away from the app and gives it back.

    PostgreSQL: the database stops accepting connections and the app's are ended (what a server
    restart does to one database, without touching the shared server). SQLite: the file is
    moved away and a directory stands in its place, so opening it fails; the app's pooled
    connections are dropped as a restarted server would drop them.
    """

    def __init__(self, url: str, app: Any) -> None:
        self.url, self.app = url, app
        self.database = make_url(url).database or ""
        self.sqlite = url.startswith("sqlite")
        self.down = False

    async def _admin(self, *statements: str) -> None:
        server = make_url(to_async_url(self.url)).set(database="postgres")
        engine = create_engine(make_settings(server.render_as_string(False)))
        try:
            async with engine.connect() as connection:
                connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
                for statement in statements:
                    await connection.execute(text(statement))
        finally:
            await engine.dispose()

    async def begin(self) -> None:
        self.down = True
        if self.sqlite:
            path = Path(self.database)
            path.rename(path.with_suffix(".away"))
            path.mkdir()
            await self.app.state.engine.dispose()
            return
        await self._admin(
            f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS false',
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{self.database}' AND pid <> pg_backend_pid()",
        )

    async def end(self) -> None:
        self.down = False
        if self.sqlite:
            path = Path(self.database)
            shutil.rmtree(path)
            path.with_suffix(".away").rename(path)
            return
        await self._admin(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS true')


@pytest.fixture
async def live(
    fresh_database_url: str,
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str], Outage]]:
    """An app on a database of its own; an admin's client, a generic and a pagerduty key."""
    engine = create_engine(make_settings(fresh_database_url))
    async with engine.begin() as connection:
        await upgrade_connection(connection)
    await engine.dispose()
    settings = make_settings(fresh_database_url)
    app = create_app(settings)
    outage = Outage(fresh_database_url, app)
    async with app.router.lifespan_context(app):
        factory = Factory(app.state.sessionmaker, settings, app.state.clock)
        admin = await factory.user(email="admin@example.com", role="admin")
        headers = {"Authorization": f"Bearer {factory.token(admin)}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=headers
        ) as client:
            service = (await client.post("/v1/services/", json={"name": "svc"})).json()
            keys = {}
            for kind in ("generic", "pagerduty"):
                answer = await client.post(
                    f"/v1/services/{service['id']}/integrations/", json={"name": kind, "kind": kind}
                )
                keys[kind] = answer.json()["key"]
            try:
                yield client, keys, outage
            finally:
                if outage.down:
                    await outage.end()


Call = Callable[[httpx.AsyncClient, dict[str, str], int], Awaitable[httpx.Response]]
CALLS: dict[str, Call] = {
    "read incidents": lambda c, key, n: c.get("/v1/incidents/"),
    "open an incident": lambda c, key, n: c.post("/v1/incidents/", json={"title": f"t{n}"}),
    "generic alert": lambda c, key, n: c.post(
        "/v1/alerts/generic",
        json={"summary": "s", "dedup_key": f"g{n}"},
        headers={"Authorization": f"Bearer {key['generic']}"},
    ),
    "several generic alerts": lambda c, key, n: c.post(
        "/v1/alerts/generic",
        json={"alerts": [{"summary": "s", "dedup_key": f"m{n}"}]},
        headers={"Authorization": f"Bearer {key['generic']}"},
    ),
    "pagerduty event": lambda c, key, n: c.post(
        "/v2/enqueue",
        json={
            "routing_key": key["pagerduty"],
            "event_action": "trigger",
            "dedup_key": f"p{n}",
            "payload": {"summary": "s", "source": "s", "severity": "info"},
        },
    ),
}


async def test_an_unreachable_database_is_a_503_and_the_app_recovers_by_itself(live):
    client, keys, outage = live
    await outage.begin()
    for name, call in CALLS.items():
        answer = await call(client, keys, 1)
        assert answer.status_code == 503, (name, answer.status_code, answer.text)
        assert answer.headers["Retry-After"] == str(RETRY_AFTER_SECONDS), name
        assert answer.json() == {
            "detail": "The database is unavailable right now; try again shortly"
        }, name
    health = await client.get("/health")
    assert health.status_code == 503 and health.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)

    await outage.end()
    assert (await client.get("/health")).status_code == 200
    for name, call in CALLS.items():
        answer = await call(client, keys, 2)
        assert answer.status_code in (200, 201, 202), (name, answer.status_code, answer.text)


async def test_other_answers_are_unchanged_while_the_database_is_up(live):
    client, keys, _ = live
    for name, call in CALLS.items():
        answer = await call(client, keys, 0)
        assert answer.status_code in (200, 201, 202), (name, answer.status_code, answer.text)
    answer = await client.post(
        "/v1/alerts/generic", json={"summary": "s"}, headers={"Authorization": "Bearer wrong"}
    )
    assert answer.status_code == 401


class TestIsUnavailable:
    def test_connection_failures_are(self):
        refused = DatabaseUnavailable("cannot connect")
        refused.__cause__ = ConnectionRefusedError(111, "Connection refused")
        assert is_unavailable(refused)

        class Shutdown(Exception):
            sqlstate = "57P01"  # admin_shutdown: the server is restarting

        assert is_unavailable(OperationalError("SELECT 1", {}, Shutdown()))

        class Lost(Exception):
            sqlstate = "08006"

        assert is_unavailable(OperationalError("SELECT 1", {}, Lost()))

    def test_what_was_asked_of_the_database_is_not(self):
        class Duplicate(Exception):
            sqlstate = "23505"

        assert not is_unavailable(IntegrityError("INSERT", {}, Duplicate()))
        assert not is_unavailable(ValueError("a bug"))


async def test_readiness_says_the_in_process_worker_fails_while_the_database_is_away(
    fresh_database_url,
):
    engine = create_engine(make_settings(fresh_database_url))
    async with engine.begin() as connection:
        await upgrade_connection(connection)
    await engine.dispose()
    app = create_app(make_settings(fresh_database_url, worker_in_process=True))
    outage = Outage(fresh_database_url, app)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await app.state.worker.run_once()  # a pass that works
            ready = await client.get("/health/ready")
            await outage.begin()
            try:
                await app.state.worker.run_once()  # a pass that cannot reach the database
                away = await client.get("/health/ready")
            finally:
                await outage.end()
            await app.state.worker.run_once()
            back = await client.get("/health/ready")
    assert (ready.status_code, ready.json()["worker"]) == (200, "ok")
    assert away.status_code == 503
    assert (away.json()["database"], away.json()["worker"]) == ("error", "error")
    assert (back.status_code, back.json()["worker"]) == (200, "ok")
