"""PostgreSQL for tests: databases made and dropped on a server, clusters of their own, the
schema migrated in process, and one-off queries.

Every database made here is dropped `WITH (FORCE)` by the code that made it, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]

from app.core.config import to_async_url
from app.core.db import create_engine
from app.core.migrations import upgrade_connection
from tests.support.ports import free_port
from tests.support.settings import make_settings


class PostgresDatabase:
    """A new database on the PostgreSQL server of `server_url` (whichever database that URL
    names, it is not touched): `name`, or `<prefix>_<pid>_<random>`. `create` makes it (a name
    that exists already is refused: it is someone's), `drop` drops it if `create` made it.

    `url` is its `postgresql://` URL. As a context manager (plain or async) it is created on
    entering, dropped on leaving, and answers `url`.
    """

    def __init__(self, server_url: str, *, name: str | None = None, prefix: str = "ims_test"):
        self.name = name or f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", self.name):
            raise ValueError(f"database name {self.name!r}: use letters, digits and underscores")
        parts = urlsplit(server_url)
        netloc, query = parts.netloc, parts.query
        self.maintenance_url = urlunsplit(("postgresql", netloc, "/postgres", query, ""))
        self.url = urlunsplit(("postgresql", netloc, f"/{self.name}", query, ""))
        self.created = False

    async def _execute(self, statement: str) -> None:
        connection = await asyncpg.connect(self.maintenance_url, timeout=10)
        try:
            await connection.execute(statement, timeout=60)
        finally:
            await connection.close()

    async def create(self) -> str:
        try:
            await self._execute(f'CREATE DATABASE "{self.name}"')
        except Exception as exc:
            if "already exists" in str(exc):
                raise AssertionError(
                    f"database {self.name} already exists: drop it, or give a server URL "
                    "without a database name and a new one is made"
                ) from None
            raise
        self.created = True
        return self.url

    async def drop(self) -> None:
        if self.created:
            await self._execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            self.created = False

    def __enter__(self) -> str:
        return asyncio.run(self.create())

    def __exit__(self, *exc: object) -> None:
        asyncio.run(self.drop())

    async def __aenter__(self) -> str:
        return await self.create()

    async def __aexit__(self, *exc: object) -> None:
        await self.drop()


@contextlib.contextmanager
def postgres_database(server_url: str) -> Iterator[str]:
    """A database of the suite's own on that server: its SQLAlchemy (asyncpg) URL; dropped on
    exit."""
    with PostgresDatabase(server_url) as url:
        yield to_async_url(url)


async def migrate(url: str) -> None:
    """The schema at head, in this process."""
    engine = create_engine(make_settings(url))
    async with engine.begin() as connection:
        await upgrade_connection(connection)
    await engine.dispose()


async def fetch(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """The rows of one query, on a connection of its own."""
    connection = await asyncpg.connect(url, timeout=10)
    try:
        rows: list[asyncpg.Record] = await connection.fetch(query, *args, timeout=30)
        return rows
    finally:
        await connection.close()


# ---- a cluster of its own ------------------------------------------------------------------------


def postgres_bin() -> Path:
    """The directory of initdb and pg_ctl: FAULT_PG_BIN, pg_config's, or the newest Debian one."""
    given = os.environ.get("FAULT_PG_BIN")
    if given:
        return Path(given)
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
        if found and (Path(found) / "initdb").exists():
            return Path(found)
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    if not versions:
        raise AssertionError(
            "the fault tests need PostgreSQL's server binaries (initdb, pg_ctl) for a private "
            "cluster: install them or set FAULT_PG_BIN"
        )
    return versions[-1].parent


class PrivatePostgres:
    """A throw-away PostgreSQL cluster of our own, on a free loopback port.

    The shared test server must never be restarted, so the restart scenario runs against this.
    initdb refuses to run as root: as root, the cluster belongs to the `postgres` OS user.
    """

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.root = Path(tempfile.mkdtemp(prefix="ims-fault-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, user="postgres")

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(
            [*self._as, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise AssertionError(f"{args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")

    def init(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "--no-sync", "--no-instructions",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=on -c max_connections=100"
        )
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log),
            "-w", "-t", "30", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop"
        )

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        """Stop the cluster if it runs (by its postmaster's PID as a last resort); remove it."""
        pid = self.postmaster_pid()
        if pid is not None:
            try:
                self.stop("immediate")
            except (AssertionError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)
