"""`incident-management`: serve, worker, migrate, create-admin."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated, Any

import typer

from app.core.config import Settings
from app.main import settings_or_exit

cli = typer.Typer(
    help="Incident Management System: the API server, its worker and maintenance commands.",
    no_args_is_help=True,
    add_completion=False,
)


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development)")] = False,
    migrate_first: Annotated[
        bool, typer.Option("--migrate/--no-migrate", help="Upgrade the database first")
    ] = True,
) -> None:
    """Upgrade the database to the latest schema, then serve the API."""
    import uvicorn

    from app import migrations

    settings = settings_or_exit()
    if migrate_first:
        migrations.upgrade()
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
        ),
    ] = None,
    metrics_host: Annotated[
        str | None,
        typer.Option(
            help="Address for the metrics port, unauthenticated: keep it private "
            "[default: WORKER_METRICS_HOST, else 127.0.0.1]",
            show_default=False,
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
    port = metrics_port if metrics_port is not None else settings.worker_metrics_port
    if port is not None:
        from prometheus_client import start_http_server

        start_http_server(port, addr=metrics_host or settings.worker_metrics_host)
    asyncio.run(_run_worker(settings))


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
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
) -> None:
    """Upgrade the database schema (same as `alembic upgrade head`)."""
    from app import migrations

    settings_or_exit()
    migrations.upgrade(revision)
    typer.echo(f"Database at revision {revision}.")


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
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    migrations.upgrade()
    try:
        outcome = asyncio.run(_create_admin(settings, email, full_name, password, force))
    except ValueError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(outcome)


async def _create_admin(
    settings: Settings, email: str, full_name: str, password: str, force: bool
) -> str:
    from pydantic import TypeAdapter, ValidationError

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


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    cli()


if __name__ == "__main__":
    main()
