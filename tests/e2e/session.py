"""What the run starts on loopback before it walks (each step a `setup` check), and stops at the
end: the SMTP server, the webhook receiver, the database, the migrations and the API server."""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tests.e2e.checks import SETUP, Blocked, Runner, expect, expect_eq, need
from tests.support.databases import PostgresDatabase
from tests.support.ports import free_port
from tests.support.processes import Server, run_migrations
from tests.support.receivers import HTTPReceiver
from tests.support.settings import clean_environment
from tests.support.smtp import SMTPInbox


@dataclass
class Local:
    """What the run started itself (absent with --base-url)."""

    inbox: SMTPInbox
    receiver: HTTPReceiver
    signing_secret: str
    server: Server


class Session:
    """Starts what the run needs (each step a `setup` check) and registers its teardown."""

    def __init__(
        self, args: argparse.Namespace, runner: Runner, stack: contextlib.ExitStack
    ) -> None:
        self.args, self.runner, self.stack = args, runner, stack
        self.tmp: Path | None = None
        self.server: Server | None = None
        self.local: Local | None = None
        self.database = "external server"

    def start(self) -> str | None:
        """The base URL to test, or None when the server could not be started."""
        if self.args.base_url:
            return str(self.args.base_url).rstrip("/")
        check = self.runner.check
        self.tmp = tmp = Path(tempfile.mkdtemp(prefix="ims-e2e-"))
        if not self.args.keep_temp:
            self.stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        inbox, receiver = SMTPInbox(), HTTPReceiver()
        with check("an SMTP server (aiosmtpd) listens on 127.0.0.1", SETUP):
            inbox.start()
            self.stack.callback(inbox.stop)
        with check("a webhook receiver listens on 127.0.0.1", SETUP):
            receiver.start()
            self.stack.callback(receiver.stop)
        database_url: str | None = None
        requested: str | None = self.args.database_url
        if requested and requested.split(":", 1)[0].startswith("postgres"):
            with check("a fresh PostgreSQL database", SETUP):
                named = urlsplit(requested).path.strip("/") or None
                database = PostgresDatabase(requested, name=named, prefix="ims_e2e")
                database_url = self.stack.enter_context(database)
                self.database = f"PostgreSQL, {database.name}"
        else:
            database_url = requested or f"sqlite+aiosqlite:///{tmp / 'e2e.db'}"
            self.database = "SQLite" + ("" if requested else ", a temporary file")
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        signing_secret = secrets.token_urlsafe(32)
        # A clean environment: nothing from the caller's shell (or a .env: the server runs in the
        # temporary directory) changes the settings under test.
        env = clean_environment(
            tmp,
            DATABASE_URL=database_url or "",
            ENVIRONMENT="development",  # signup open: the first account becomes admin
            LOG_LEVEL="INFO",
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=str(inbox.port),
            WORKER_IN_PROCESS="true",
            WORKER_POLL_INTERVAL_SECONDS="0.2",
            OUTBOUND_ALLOW_PRIVATE_NETWORKS="true",
            WEBHOOK_SIGNING_SECRET=signing_secret,
            PUBLIC_BASE_URL=base_url,
        )
        self.server = server = Server("server", env, tmp, cwd=tmp, port=port)
        migrated = healthy = False
        with check("migrations: incident-management migrate", SETUP):
            need(database_url, "a database")
            output = run_migrations(env, tmp)
            expect("head" in output, f"migrate printed {output!r}")
            migrated = True
        with check("the server (uvicorn app.main:app) answers /health", SETUP):
            if not migrated:
                raise Blocked("the migrations did not run")
            if not inbox.running:
                raise Blocked("the SMTP server did not start")
            server.start()
            self.stack.callback(server.stop)
            expect_eq(server.wait_healthy().get("database"), "ok", "database")
            healthy = True
        if not healthy:
            return None
        self.local = Local(inbox, receiver, signing_secret, server)
        return base_url
