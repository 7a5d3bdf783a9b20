"""The server under test, started from a tree of the code (this checkout, or another commit's
worktree for `python -m bench ab`), and its data set up as an operator would: through the
tree's own CLI (`incident-management migrate`, `create-admin`) and its HTTP API.

Nothing here imports `app`: every piece of the service's code that runs is the tree's, in a
process whose working directory and PYTHONPATH are that tree.

Two set-ups of gunicorn with uvicorn workers, on a free loopback port:

- lean (`production=False`), as the benchmarks have always run it: `gunicorn -k
  uvicorn.workers.UvicornWorker -w N`, the in-process escalation worker off, LOG_LEVEL=WARNING,
  development settings;
- production (`production=True`), as `make run-prod` starts it: `gunicorn -c
  python:app.gunicorn_conf app.main:app`, ENVIRONMENT=production with a random SECRET_KEY, the
  in-process worker on, LOG_LEVEL=INFO with one JSON access line per request, /metrics on
  (multiprocess), WEB_CONCURRENCY=N, bound by GUNICORN_BIND to 127.0.0.1.

In both the per-key ingestion limit is on but far above the load. The alert-storm budget is off in
the lean set-up (at thousands of new keys a second from one integration it would, rightly, send
all but the first hundred a minute to one incident) and on, a million a minute, in production's:
its count is part of what production costs.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.support.api import PASSWORD, Admin
from tests.support.ports import free_port
from tests.support.processes import BIN, stop, wait_for_health

ROOT = Path(__file__).resolve().parent.parent
ADMIN_EMAIL = "bench-admin@example.com"
# The service's settings and gunicorn's, never inherited from the caller's shell.
OWN_SETTINGS = ("ENVIRONMENT", "SECRET_KEY", "LOG_", "ACCESS_LOG", "WORKER_", "RATE_LIMIT_",
                "INGEST_", "METRICS_", "GUNICORN_", "WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR",
                "PYTHONPATH", "DATABASE_POOL_SIZE")  # fmt: skip
LIMITS_FAR_ABOVE_THE_LOAD = {
    "RATE_LIMIT_INGEST_PER_SECOND": "1000000", "RATE_LIMIT_INGEST_BURST": "1000000",
}  # fmt: skip


def add_server_arguments(parser: argparse.ArgumentParser, *, profile: bool = True) -> None:
    """The options of every script that starts a server under test: its workers, its tree, its
    log, where the figures go and (`profile`) where py-spy's samples go (bench/profile.py)."""
    parser.add_argument("--gunicorn-workers", type=int, default=2)
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose server runs")
    parser.add_argument("--log", type=Path, default=Path(os.devnull), help="the server's output")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    if profile:
        parser.add_argument(
            "--profile", type=Path, help="sample the server with py-spy into this folder"
        )


def tree_env(tree: Path, database_url: str, **settings: str) -> dict[str, str]:
    """The environment of a process that runs `tree`'s code on `database_url`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(OWN_SETTINGS)}
    return env | {"PYTHONPATH": str(tree), "DATABASE_URL": database_url} | settings


def database_name(url: str) -> str | None:
    """The PostgreSQL database of `url` (its backends' CPU is what is counted), None for SQLite."""
    if not url.startswith("postgres"):
        return None
    return urlsplit(url).path.lstrip("/") or None


def cli(tree: Path, database_url: str, *args: str, timeout: float = 300) -> str:
    """`incident-management <args>` of `tree` (the venv's console script, importing `app` from
    the tree's PYTHONPATH); what it printed. Fails if it fails."""
    command = [str(BIN / "incident-management"), *args]
    done = subprocess.run(  # noqa: S603
        command, env=tree_env(tree, database_url, LOG_LEVEL="WARNING"), cwd=tree,
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout.strip()


def prepare_database(tree: Path, database_url: str) -> None:
    """Migrated by the tree's CLI, with an admin (ADMIN_EMAIL, tests.support.api's PASSWORD)."""
    cli(tree, database_url, "migrate")
    cli(tree, database_url, "create-admin", "--email", ADMIN_EMAIL, "--password", PASSWORD,
        "--full-name", "Bench", "--force")  # fmt: skip


class ServerUnderTest:
    """gunicorn with `workers` uvicorn workers running `tree`'s app on `database_url`, lean or
    as `make run-prod` starts it (see the module's docstring); its output to `log` (never the
    terminal). A context manager: started on entering (once /health answers), stopped by its
    PID on leaving."""

    def __init__(
        self, tree: Path, database_url: str, workers: int, log: Path, *, production: bool = False
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        if production:
            self.command = [str(BIN / "gunicorn"), "-c", "python:app.gunicorn_conf",
                            "app.main:app"]  # fmt: skip
            self.env = tree_env(
                tree, database_url, ENVIRONMENT="production", SECRET_KEY=secrets.token_urlsafe(48),
                LOG_LEVEL="INFO", WEB_CONCURRENCY=str(workers),
                GUNICORN_BIND=f"127.0.0.1:{self.port}", INGEST_NEW_INCIDENTS_PER_MINUTE="1000000",
                **LIMITS_FAR_ABOVE_THE_LOAD,
            )  # fmt: skip
        else:
            self.command = [str(BIN / "gunicorn"), "-k", "uvicorn.workers.UvicornWorker",
                            "-w", str(workers), "-b", f"127.0.0.1:{self.port}",
                            "--log-level", "warning", "app.main:app"]  # fmt: skip
            self.env = tree_env(
                tree, database_url, WORKER_IN_PROCESS="false", LOG_LEVEL="WARNING",
                INGEST_NEW_INCIDENTS_PER_MINUTE="0", **LIMITS_FAR_ABOVE_THE_LOAD,
            )  # fmt: skip
        self.tree = tree
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __enter__(self) -> ServerUnderTest:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603
                self.command, env=self.env, cwd=self.tree, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_for_health(self.base, self.process, seconds=60, log=self.tail)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            stop(self.process, timeout=60)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


async def signed_in(base: str) -> Admin:
    """tests.support.api's admin client, signed in over HTTP as the admin `prepare_database`
    made (its token issued by the server under test)."""
    admin = Admin(base)
    await admin.log_in(ADMIN_EMAIL)
    return admin


async def integration_keys(base: str, kinds: tuple[str, ...]) -> dict[str, Any]:
    """A new service with one integration of each kind, made over the API: kind -> key, and
    `token` (the admin's bearer token) and `service_id` for `POST /v1/incidents/`."""
    admin = await signed_in(base)
    try:
        service = await admin.service(f"bench-{time.time_ns()}")
        keys: dict[str, Any] = {k: await admin.integration(service["id"], k) for k in kinds}
        return keys | {"token": admin.token, "service_id": service["id"]}
    finally:
        await admin.close()
