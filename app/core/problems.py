"""What the commands say when the database or the configuration is wrong: one or two lines,
what is wrong and what to do, instead of a traceback.

`explain` recognises the failures a person can fix (no server there, no such database, a wrong
password, an unknown revision, an SQLite file that cannot be opened); anything else is a bug,
and keeps its traceback.
"""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Iterator

from alembic.script.revision import ResolutionError
from alembic.util import CommandError
from sqlalchemy.engine import make_url

from app.core.config import Settings
from app.core.db import DatabaseUnavailable

# PostgreSQL's SQLSTATEs for a connection turned away: no such database, a role or password
# refused (28000 covers pg_hba.conf too), the server starting or stopping, too many clients.
NO_DATABASE = "3D000"
REFUSED_LOGIN = ("28000", "28P01")
NOT_NOW = ("57P01", "57P02", "57P03", "53300")


def causes(error: BaseException) -> Iterator[BaseException]:
    """The error, then what caused it, and so on (each once)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def where(settings: Settings) -> str:
    """DATABASE_URL as it may be printed: no password."""
    return make_url(settings.database_url).render_as_string(hide_password=True)


def explain(error: BaseException, settings: Settings, *, revision: str | None = None) -> str | None:
    """One or two lines for a failure a person can fix, else None (a bug: keep the traceback).
    `revision` is the target a migration was asked for."""
    chain = list(causes(error))
    unknown = next((c for c in chain if isinstance(c, ResolutionError)), None)
    if unknown is not None or any(isinstance(c, CommandError) for c in chain):
        return _migration(chain, unknown, revision)
    # Only a failure to connect (or, for SQLite, to make the file's folder): an error in what
    # was asked of a database that answered is a bug, and keeps its traceback.
    connecting = any(isinstance(c, DatabaseUnavailable) for c in chain)
    if settings.is_sqlite and (connecting or isinstance(error, OSError)):
        explained = _sqlite(chain, settings)
    elif connecting:
        explained = _postgresql(chain, settings)
    else:
        return None
    return explained or (
        f"Cannot connect to the database ({where(settings)}): {chain[-1]}.\n"
        "Check DATABASE_URL and that the database server is running."
    )


def _migration(
    chain: list[BaseException], unknown: ResolutionError | None, revision: str | None
) -> str:
    if unknown is None:
        return f"The migration failed: {chain[0]}."
    if revision is not None and unknown.argument == revision:
        return (
            f"There is no revision {revision!r}.\n"
            "Give `head`, or a revision id from `alembic history` (run in the checkout)."
        )
    return (
        f"The database is at revision {unknown.argument!r}, which this version does not know.\n"
        "It was migrated by a newer version: run that version, or restore a backup taken "
        "before it."
    )


def _postgresql(chain: list[BaseException], settings: Settings) -> str | None:
    url = make_url(settings.async_database_url)
    server = f"{url.host or 'localhost'}:{url.port or 5432}"
    for cause in chain:
        state = getattr(cause, "sqlstate", None)
        if state == NO_DATABASE:
            return (
                f"The database {url.database!r} does not exist on the PostgreSQL server at "
                f"{server}.\nCreate it (createdb -h {url.host or 'localhost'} -p "
                f"{url.port or 5432} -U {url.username or 'postgres'} {url.database}), "
                "or correct DATABASE_URL."
            )
        if state in REFUSED_LOGIN:
            return (
                f"The PostgreSQL server at {server} refused the login: {cause}.\n"
                "Correct the user and password in DATABASE_URL (or the server's pg_hba.conf)."
            )
        if state in NOT_NOW:
            return (
                f"The PostgreSQL server at {server} turned the connection away: {cause}.\n"
                "It is starting, stopping or full: try again in a moment."
            )
    for cause in chain:
        if isinstance(cause, socket.gaierror):
            return (
                f"Cannot find the database host {url.host!r} (DATABASE_URL={where(settings)}): "
                f"{cause.strerror}.\nCorrect the host in DATABASE_URL."
            )
        if isinstance(cause, ConnectionRefusedError):
            return (
                f"Cannot connect to PostgreSQL at {server}: connection refused "
                f"(DATABASE_URL={where(settings)}).\n"
                "Start the server, or correct the host and port in DATABASE_URL."
            )
        if isinstance(cause, TimeoutError | OSError):
            reason = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
            return (
                f"Cannot connect to PostgreSQL at {server}: {reason} "
                f"(DATABASE_URL={where(settings)}).\n"
                "Check that the server is running and reachable from here, and DATABASE_URL."
            )
    return None


def _sqlite(chain: list[BaseException], settings: Settings) -> str | None:
    path = make_url(settings.async_database_url).database or ""
    for cause in chain:
        if isinstance(cause, OSError | sqlite3.Error):
            reason = getattr(cause, "strerror", None) or str(cause)
            return (
                f"Cannot open the SQLite database {path!r}: {reason}.\n"
                "Correct DATABASE_URL, or make its folder exist and writable by this user."
            )
    return None
