"""Fixtures of the fault tests: PostgreSQL only (they run in `pytest --backend postgresql`; on
SQLite they are skipped like every PostgreSQL-only test), each with its own database and its
own processes, all ended by PID when the test ends, whatever its outcome."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.databases import PostgresDatabase, PrivatePostgres
from tests.support.processes import Processes


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
    async with PostgresDatabase(os.environ["TEST_DATABASE_URL"], prefix="ims_fault") as url:
        yield url


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
