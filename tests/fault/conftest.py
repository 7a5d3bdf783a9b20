"""Fixtures of the fault tests: PostgreSQL only (they run in `pytest --backend postgresql`; on
SQLite they are skipped like every PostgreSQL-only test), each with its own database and its
own processes, all ended by PID when the test ends, whatever its outcome."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.fault.harness import PrivatePostgres, Processes, create_database, drop_database


@pytest.fixture
def processes(postgres_only: None, tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.end_all()
        for process in started.started:  # shown when the test fails
            print(f"==== {process.name} (last lines of {process.log_path})\n{process.tail(40)}")


@pytest.fixture
async def fault_database(postgres_only: None) -> AsyncIterator[str]:
    """A new database on the suite's PostgreSQL server (TEST_DATABASE_URL), dropped at the end."""
    server = (
        make_url(os.environ["TEST_DATABASE_URL"])
        .set(drivername="postgresql", database="postgres")
        .render_as_string(False)
    )
    name = f"ims_fault_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    url = await create_database(server, name)
    try:
        yield url
    finally:
        await drop_database(server, name)


@pytest.fixture
def private_postgres(postgres_only: None) -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of its own that the test may stop and start (never the shared one)."""
    cluster = PrivatePostgres()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.close()
