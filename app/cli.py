"""`incident-management`: serve, worker, migrate, create-admin."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from app import __version__
from app.core.actors import CLI
from app.core.config import Settings, settings_or_exit
from app.core.logging import acting_as

PROG = "incident-management"

cli = typer.Typer(
    help="Incident Management System: the API server, its worker and maintenance commands.",
    no_args_is_help=True,
    add_completion=False,
    # Plain help and errors: no boxes, no colour codes, no type labels on flags (`<bool>`), and
    # a plain traceback for a bug, which pastes well into an issue.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG} {__version__}")
        raise typer.Exit()


@cli.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    pass


def _port(value: int | None) -> int | None:
    # Checked here: uvicorn would take 99999 modulo 65536 and listen on 34463.
    if value is not None and not 1 <= value <= 65535:
        raise typer.BadParameter(f"{value} is not a port: give one from 1 to 65535")
    return value


@contextmanager
def _explained(settings: Settings, *, revision: str | None = None) -> Iterator[None]:
    """A database that cannot be reached, or a migration that cannot be done: said in one or
    two lines on stderr, exit status 2, no traceback (anything else keeps its traceback)."""
    from app.core.problems import explain

    try:
        yield
    except Exception as exc:
        message = explain(exc, settings, revision=revision)
        if message is None:
            raise
        print(message, file=sys.stderr)
        raise SystemExit(2) from None


@cli.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Address to listen on", metavar="ADDRESS")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="Port to listen on (1-65535)", callback=_port, metavar="PORT")
    ] = 8000,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development)")] = False,
    migrate_first: Annotated[
        bool, typer.Option("--migrate/--no-migrate", help="Upgrade the database first")
    ] = True,
) -> None:
    """Upgrade the database to the latest schema, then serve the API."""
    import uvicorn

    from app import migrations
    from app.core.logging import configure_logging

    settings = settings_or_exit()
    configure_logging(settings)
    if migrate_first:
        with _explained(settings):
            migrations.upgrade()
            revision = asyncio.run(migrations.revision_of(settings))
        logging.getLogger("app.migrations").info("database at revision %s (head)", revision)
    base = f"http://{host}:{port}"
    typer.echo(
        f"\n  {settings.project_name} on {base}  (database: {_describe(settings.database_url)})\n"
        f"  Console:    {base}/ui/\n"
        f"  API docs:   {base}/docs   (ReDoc: {base}/redoc)\n"
        f"  First user: curl -X POST {base}/v1/auth/signup -H 'Content-Type: application/json' \\\n"
        '                 -d \'{"email": "you@example.com", "password": "a long passphrase", '
        '"full_name": "You"}\'\n'
        "              (the first account becomes admin; or: incident-management create-admin)\n"
    )
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": settings.log_level.lower(),
        # uvicorn's lines go through the application's handler and format (configured above),
        # not uvicorn's own coloured one.
        "log_config": None,
        # Requests in flight get this long to finish at shutdown.
        "timeout_graceful_shutdown": 10,
    }
    if reload:
        uvicorn.run("app.main:app", reload=True, **options)
        return
    from app.core.serving import Server

    server = Server(uvicorn.Config("app.main:app", **options))
    server.run()
    if not server.started:
        raise SystemExit(3)  # as uvicorn.run: the app did not start


@cli.command()
def worker(
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve this process's metrics (Prometheus text) on this port "
            "[default: WORKER_METRICS_PORT, else none]",
            show_default=False,
            callback=_port,
            metavar="PORT",
        ),
    ] = None,
    metrics_host: Annotated[
        str | None,
        typer.Option(
            help="Address for the metrics port, unauthenticated: keep it private "
            "[default: WORKER_METRICS_HOST, else 127.0.0.1]",
            show_default=False,
            metavar="ADDRESS",
        ),
    ] = None,
) -> None:
    """Run the background worker alone (scaled deployments: give the API WORKER_IN_PROCESS=false).

    SIGTERM or Ctrl-C finish the batch in hand, then exit. Its escalation and delivery counts are
    its own: scrape them with --metrics-port (the API's /metrics has the queue depths).
    """
    from app.core.logging import configure_logging

    settings = settings_or_exit()
    configure_logging(settings)
    with _explained(settings):
        asyncio.run(_check_database(settings))
    port = metrics_port if metrics_port is not None else settings.worker_metrics_port
    if port is not None:
        from prometheus_client import start_http_server

        address = metrics_host or settings.worker_metrics_host
        try:
            start_http_server(port, addr=address)
        except OSError as exc:
            print(
                f"Cannot serve the worker's metrics on {address}:{port}: {exc.strerror or exc}.\n"
                "Choose another --metrics-port (or WORKER_METRICS_PORT), or stop what uses it.",
                file=sys.stderr,
            )
            raise SystemExit(2) from None
    asyncio.run(_run_worker(settings))


async def _check_database(settings: Settings) -> None:
    """The worker retries a database that goes away while it runs; one that cannot be reached
    at start, or has no schema, is a mistake to say at once."""
    from app.migrations import revision_of

    if await revision_of(settings) is None:
        print(
            "The database has no schema yet.\n"
            f"Run `{PROG} migrate` (or `{PROG} serve`, which migrates) first.",
            file=sys.stderr,
        )
        raise SystemExit(2)


async def _run_worker(settings: Settings) -> None:
    import signal

    from app.core import metrics
    from app.core.clock import SystemClock
    from app.core.db import create_engine, create_sessionmaker
    from app.worker.runner import Worker

    engine = create_engine(settings)
    metrics.instrument_pool(engine, "worker")
    runner = Worker(
        create_sessionmaker(engine),
        SystemClock(),
        poll_interval=settings.worker_poll_interval_seconds,
        batch=settings.worker_batch_size,
        settings=settings,
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, runner.stop)
    try:
        await runner.run()
    finally:
        await engine.dispose()


@cli.command()
def migrate(
    revision: Annotated[
        str, typer.Argument(help="Revision to upgrade to", metavar="[REVISION]")
    ] = "head",
) -> None:
    """Upgrade the database schema (same as `alembic upgrade head`), then say its revision."""
    from app import migrations
    from app.core.migrations import head_revision

    settings = settings_or_exit()
    with _explained(settings, revision=revision):
        before = asyncio.run(migrations.revision_of(settings))
        migrations.upgrade(revision)
        after = asyncio.run(migrations.revision_of(settings))
    head = head_revision()
    where = "(head)" if after == head else f"(head is {head})"
    if after == before:
        typer.echo(f"Database already at revision {after or 'base'} {where}.")
    else:
        typer.echo(f"Database upgraded from {before or 'an empty database'} to {after} {where}.")


@cli.command("create-admin")
def create_admin(
    email: Annotated[str, typer.Option(help="The admin's email address")],
    full_name: Annotated[str, typer.Option(help="Display name")] = "Administrator",
    password: Annotated[
        str | None,
        typer.Option(
            envvar="ADMIN_PASSWORD",
            help="Password (8-128 characters); read from ADMIN_PASSWORD or asked for when omitted",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="If the account exists: make it an active admin, set the password")
    ] = False,
) -> None:
    """Create an admin account (or, with --force, restore admin access to an existing one)."""
    from app import migrations

    settings = settings_or_exit()
    with _explained(settings):  # before the password is asked for
        migrations.upgrade()
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        with _explained(settings), acting_as(CLI):  # the audit log's actor
            outcome = asyncio.run(_create_admin(settings, email, full_name, password, force))
    except ValueError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(outcome)


async def _create_admin(
    settings: Settings, email: str, full_name: str, password: str, force: bool
) -> str:
    from pydantic import TypeAdapter, ValidationError

    from app.audit import recording  # noqa: F401  (the audit log records the change)
    from app.core.clock import SystemClock
    from app.core.db import create_engine, create_sessionmaker, session_scope
    from app.users import service as user_service
    from app.users.models import Role
    from app.users.schemas import Email, FullName, Password

    try:
        email = TypeAdapter(Email).validate_python(email)
        full_name = TypeAdapter(FullName).validate_python(full_name)
        password = TypeAdapter(Password).validate_python(password)
    except ValidationError as exc:
        raise ValueError("; ".join(e["msg"] for e in exc.errors())) from None
    now = SystemClock().now()
    engine = create_engine(settings)
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            existing = await user_service.get_by_email(session, email)
            if existing is None:
                await user_service.create(
                    session,
                    email=email,
                    password=password,
                    full_name=full_name,
                    role=Role.admin,
                    timezone=settings.default_timezone,
                    now=now,
                )
                return f"Admin {email} created."
            if not force:
                raise ValueError(f"{email} already exists; pass --force to make it an admin")
            await user_service.update(
                session,
                user=existing,
                changes={"role": Role.admin, "is_active": True, "password": password},
                now=now,
            )
            return f"{email} is now an active admin with the new password."
    finally:
        await engine.dispose()


def _describe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _click_errors() -> Any:
    """Click's exception classes, as this typer raises them (typer 0.26 and later carry their
    (recent typers carry their own copy of click; older ones use click itself)."""
    try:
        from typer._click import exceptions
    except ImportError:
        import click.exceptions as exceptions  # type: ignore[no-redef]
    return exceptions


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    errors = _click_errors()
    try:
        code = cli(prog_name=PROG, standalone_mode=False)
    except errors.NoArgsIsHelpError as exc:
        exc.show()  # the help, as typer does
        raise SystemExit(exc.exit_code) from None
    except errors.UsageError as exc:
        # One line, where click prints the usage, a hint and the error over four.
        command = exc.ctx.command_path if exc.ctx is not None else PROG
        message = exc.format_message().rstrip(".")
        print(f"{command}: {message}. See '{command} -h'.", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except errors.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        print("Aborted.", file=sys.stderr)
        raise SystemExit(1) from None
    # Without standalone mode a command's return value comes back; an exit (--help, --version,
    # typer.Exit) comes back as its status.
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
