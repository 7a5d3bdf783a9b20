"""Shared fixtures: one database per backend per run, a clean database per test, the app over ASGI.

SQLite always runs. PostgreSQL runs when TEST_DATABASE_URL is set (each run creates its own
database on that server and drops it at the end, so parallel runs cannot collide); otherwise its
tests are skipped with the reason shown. `--backend` picks one backend.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.clock import FrozenClock
from app.core.config import Settings
from app.core.db import create_engine
from app.core.migrations import upgrade_connection
from app.main import create_app
from app.models import Base
from tests.factories import Factory
from tests.support.databases import postgres_database
from tests.support.harness import Harness
from tests.support.receivers import HTTPReceiver
from tests.support.settings import make_settings
from tests.support.smtp import SMTPInbox

# The analytics data set (`world`), a fixture of tests/analytics and tests/ui alike.
pytest_plugins = ("tests.support.analytics",)

BACKENDS = ("sqlite", "postgresql")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        choices=(*BACKENDS, "all"),
        default="all",
        help="database backend(s) to run the suite on (PostgreSQL needs TEST_DATABASE_URL)",
    )


def pytest_report_header(config: pytest.Config) -> str:
    if os.environ.get("TEST_DATABASE_URL"):
        chosen = config.getoption("--backend")
        if chosen == "postgresql":
            return "database backend: postgresql (tests that use no database: see make test)"
        return f"database backends: {chosen} (PostgreSQL server given)"
    return "database backends: sqlite only; PostgreSQL tests skipped: TEST_DATABASE_URL is not set"


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--backend") == "postgresql" and not os.environ.get("TEST_DATABASE_URL"):
        raise pytest.UsageError("--backend postgresql needs TEST_DATABASE_URL")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`--backend sqlite`: the tests on SQLite, and those that use no database. `--backend
    postgresql`: the tests on PostgreSQL only; those that use no database run in the other runs
    (`make test`), and would only repeat themselves here."""
    chosen = config.getoption("--backend")
    if chosen == "all":
        return
    keep, drop = [], []
    for item in items:
        backend = getattr(item, "callspec", None) and item.callspec.params.get("backend")
        unwanted = backend != chosen if backend else chosen == "postgresql"
        (drop if unwanted else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "postgresql" and not os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("PostgreSQL: TEST_DATABASE_URL is not set (make test-postgres runs these)")
    return name


@pytest.fixture
def postgres_only(backend: str) -> None:
    """For tests of what only PostgreSQL has: row locks between transactions, server sessions."""
    if backend != "postgresql":
        pytest.skip("a PostgreSQL behaviour (row locks, server connections)")


@pytest.fixture(scope="session")
def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if backend == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "test.db"
        yield f"sqlite+aiosqlite:///{path}"
        return
    with postgres_database(os.environ["TEST_DATABASE_URL"]) as url:
        yield url


@pytest.fixture
def fresh_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of the backend under test, apart from the suite's shared one."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    with postgres_database(os.environ["TEST_DATABASE_URL"]) as url:
        yield url


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(make_settings(database_url))
    async with engine.begin() as connection:
        await upgrade_connection(connection)
    yield engine
    await engine.dispose()


async def wipe(engine: AsyncEngine) -> None:
    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
    async with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            names = ", ".join(f'"{name}"' for name in tables)
            await connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                await connection.execute(text(f'DELETE FROM "{name}"'))
            await connection.execute(text("DELETE FROM sqlite_sequence"))


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
async def harness(
    engine: AsyncEngine, settings: Settings, clock: FrozenClock
) -> AsyncIterator[Harness]:
    await wipe(engine)
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        factory = Factory(app.state.sessionmaker, settings, clock)

        def make_client(token: str | None = None) -> httpx.AsyncClient:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test", headers=headers
            )

        yield Harness(app, settings, clock, factory, make_client)


@pytest.fixture
def factory(harness: Harness) -> Factory:
    return harness.factory


@pytest.fixture
async def client(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    async with harness.make_client() as client:
        yield client


@pytest.fixture
async def admin(factory: Factory) -> object:
    return await factory.user(email="admin@example.com", full_name="Ada Admin", role="admin")


@pytest.fixture
async def user(factory: Factory) -> object:
    return await factory.user(email="user@example.com", full_name="Uma User")


@pytest.fixture
async def admin_client(harness: Harness, admin: object) -> AsyncIterator[httpx.AsyncClient]:
    async with harness.make_client(harness.factory.token(admin)) as client:
        yield client


@pytest.fixture
async def user_client(harness: Harness, user: object) -> AsyncIterator[httpx.AsyncClient]:
    async with harness.make_client(harness.factory.token(user)) as client:
        yield client


@pytest.fixture
def smtp_server() -> Iterator[tuple[SMTPInbox, int]]:
    """A real SMTP server on loopback: (the inbox, its port)."""
    inbox = SMTPInbox()
    inbox.start()
    try:
        yield inbox, inbox.port
    finally:
        inbox.stop()


@pytest.fixture
def http_receiver() -> Iterator[HTTPReceiver]:
    """A real HTTP server on loopback recording every request (webhooks, Slack, Twilio)."""
    receiver = HTTPReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
