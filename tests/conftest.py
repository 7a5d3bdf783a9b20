"""Shared fixtures: one database per backend per run, a clean database per test, the app over ASGI.

SQLite always runs. PostgreSQL runs when TEST_DATABASE_URL is set (each run creates its own
database on that server and drops it at the end, so parallel runs cannot collide); otherwise its
tests are skipped with the reason shown. `--backend` picks one backend.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.core.clock import FrozenClock
from app.core.config import Settings, to_async_url
from app.core.db import create_engine
from app.core.migrations import upgrade_connection
from app.main import create_app
from app.models import Base
from tests.factories import Factory

BACKENDS = ("sqlite", "postgresql")
TEST_SECRET = "test-secret-key-long-enough-for-every-hmac-algorithm-0123456789abcdef"


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


class postgres_database:
    """Create a uniquely named database on the server of `server_url`; drop it on exit."""

    def __init__(self, server_url: str) -> None:
        self.server_url = to_async_url(server_url)
        self.name = f"ims_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> str:
        import asyncio

        asyncio.run(self._execute(f'CREATE DATABASE "{self.name}"'))
        return make_url(self.server_url).set(database=self.name).render_as_string(False)

    def __exit__(self, *exc: object) -> None:
        import asyncio

        asyncio.run(self._execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))

    async def _execute(self, statement: str) -> None:
        engine = create_async_engine(self.server_url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as connection:
                await connection.execute(text(statement))
        finally:
            await engine.dispose()


@pytest.fixture
def fresh_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of the backend under test, apart from the suite's shared one."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    with postgres_database(os.environ["TEST_DATABASE_URL"]) as url:
        yield url


def make_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "environment": "test",
        "secret_key": TEST_SECRET,
        "smtp_host": None,
        "signup_enabled": None,
        "database_pool_size": 5,
        # Tests run the worker's jobs themselves (harness.run_jobs) after moving the clock.
        "worker_in_process": False,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


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


@dataclass
class Harness:
    """The running app and what tests need around it."""

    app: object
    settings: Settings
    clock: FrozenClock
    factory: Factory
    make_client: Callable[..., httpx.AsyncClient]

    async def run_jobs(self) -> dict[str, int]:
        """One pass of every worker job at the clock's current time."""
        result: dict[str, int] = await self.app.state.worker.run_once()  # type: ignore[attr-defined]
        return result


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


class SMTPInbox:
    """A real SMTP server on loopback (aiosmtpd) that keeps what it receives."""

    def __init__(self) -> None:
        from email import message_from_bytes, policy
        from email.message import EmailMessage

        self.messages: list[EmailMessage] = []
        self.recipients: list[list[str]] = []  # the envelope's RCPT TO of each message
        self.refuse: set[str] = set()  # addresses answered with 550
        self.greylist: set[str] = set()  # addresses answered with 450 (try again later)
        self._parse = lambda raw: message_from_bytes(raw, policy=policy.default)

    async def handle_RCPT(
        self, server: object, session: object, envelope: Any, address: str, options: object
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 No such mailbox"
        if address in self.greylist:
            return "450 4.2.0 Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        self.messages.append(self._parse(envelope.content))
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server() -> Iterator[tuple[SMTPInbox, int]]:
    from aiosmtpd.controller import Controller

    inbox = SMTPInbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class HTTPReceiver:
    """A real HTTP server on loopback that records every request (webhooks, Slack, Twilio).

    It answers `status` with body `b"ok"`, or, while `script` holds answers, the next of them:
    `(status, body, delay_seconds)`.
    """

    def __init__(self) -> None:
        import threading
        import time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[dict[str, object]] = []
        self.status = 200
        self.script: list[tuple[int, bytes, float]] = []
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                with lock:
                    receiver.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body}
                    )
                    answer = receiver.script.pop(0) if receiver.script else (
                        receiver.status, b"ok", 0.0
                    )  # fmt: skip
                status, content, delay = answer
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)
                except OSError:
                    pass  # the client gave up waiting

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256  # the default (5) resets bursts of concurrent deliveries

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_receiver() -> Iterator[HTTPReceiver]:
    receiver = HTTPReceiver()
    try:
        yield receiver
    finally:
        receiver.close()
