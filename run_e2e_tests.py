#!/usr/bin/env python3
"""End-to-end tests of the Incident Management System: the whole API, live, over real HTTP.

Usage (from the repository root, with the project's virtual environment)::

    .venv/bin/python run_e2e_tests.py                      # SQLite, everything started here
    .venv/bin/python run_e2e_tests.py --database-url postgresql://postgres@127.0.0.1:5432
    .venv/bin/python run_e2e_tests.py --base-url http://127.0.0.1:8000   # a server already running
    .venv/bin/python run_e2e_tests.py --verbose --report /tmp/e2e-report.json

By default the script starts everything it needs, on loopback only, and stops it at the end:

- a real SMTP server (aiosmtpd) that keeps every mail it receives;
- an HTTP receiver (a ThreadingHTTPServer) that records every webhook delivery and answers 200;
- the database: a fresh SQLite file in a temporary directory, or, with
  `--database-url postgresql://user@host:port`, a new database `ims_e2e_<pid>_<random>` on that
  PostgreSQL server (created with asyncpg, dropped at the end; a URL that names a database makes
  the script create that one instead, refusing one that already exists);
- the migrations (`incident-management migrate`), then the API (`python -m uvicorn app.main:app`)
  with its in-process worker, SMTP and webhook signing pointed at the local peers.

Then it walks the product as its users would: signup, login, users, services, integrations, every
alert source with real payloads, incidents through every transition, an escalation policy whose
steps really fire (a page mailed to the SMTP server, a signed webhook action received), notification
preferences, the delivery log, outgoing webhook subscriptions (deliveries verified with their
secret), on-call schedules and their iCal feeds, health, and deleting what it made. Every check
asserts what the answer says, not only its status; a failed check is recorded and the walk goes on
(checks that need what it would have made are reported as blocked).

Coverage by construction: every request goes through one httpx client whose response hook records
(method, OpenAPI path template) for each request the script sent. At the end each operation of
`/v1/openapi.json` must have been called, or the run fails naming the ones that were not.

With `--base-url` nothing is started, and checks that need the local SMTP server or webhook
receiver are reported as "skipped (external server)". On a database that is not empty the first
signup is no admin: give `--admin-email` and `--admin-password` (or E2E_ADMIN_EMAIL and
E2E_ADMIN_PASSWORD).

The JSON report (default `e2e-report.json` in the current directory) lists every check (name,
group, status, error, duration), the totals per group and the coverage. Exit status: 0 when every
check passed and every operation was called; 1 otherwise; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import hashlib
import hmac
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import httpx
from icalendar import Calendar

REPO_ROOT = Path(__file__).resolve().parent
FIXTURES = REPO_ROOT / "tests" / "alerts" / "fixtures"
PROJECT_NAME = "Incident Management System"  # the default PROJECT_NAME
WAIT_SECONDS = 20.0  # the longest a poll waits for the worker, a mail or a delivery
HEALTH_WAIT_SECONDS = 30.0  # the longest the server may take to answer /health
REQUEST_TIMEOUT = 15.0
BERLIN = ZoneInfo("Europe/Berlin")
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
INCIDENT_FIELDS = {
    *("id", "title", "description", "status", "severity", "service_id", "source", "dedup_key"),
    *("alert_count", "labels", "custom_fields", "assignees", "escalation_policy_id"),
    *("escalation_level", "acknowledged_at", "acknowledged_by", "resolved_at", "resolved_by"),
    *("snoozed_until", "created_at", "updated_at", "version"),
}
USER_FIELDS = {"id", "email", "full_name", "role", "is_active", "phone", "timezone", "created_at"}

# Check groups: the OpenAPI tags, plus the script's own set-up and the docs pages.
SETUP, DOCS, HEALTH, AUTH, USERS = "setup", "docs", "health", "auth", "users"
SERVICES, INTEGRATIONS, ALERTS, INCIDENTS = "services", "integrations", "alerts", "incidents"
ESCALATION, NOTIFICATIONS = "escalation", "notifications"
WEBHOOKS, SCHEDULES, LOGS = "webhooks", "schedules", "logs"
ANALYTICS = "analytics"
# Request and answer fields whose values are secrets: none may appear in the server's log.
SECRET_FIELDS = {"password", "new_password", "current_password", "access_token", "key",
                 "secret", "token", "routing_key"}  # fmt: skip
PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
EXTERNAL = "skipped (external server)"

T = TypeVar("T")


# ---- checks --------------------------------------------------------------------------------------


class CheckFailed(Exception):
    """An expectation of a check did not hold."""


class Blocked(Exception):
    """A check cannot run because an earlier check it depends on failed."""


class Skipped(Exception):
    """A check does not apply to this run."""


def expect(condition: object, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def expect_eq(actual: object, expected: object, what: str) -> None:
    if actual != expected:
        raise CheckFailed(f"{what}: expected {expected!r}, got {actual!r}")


_MISSING = object()


def expect_fields(actual: Mapping[str, Any], expected: Mapping[str, Any], what: str) -> None:
    """Each key of `expected` has its value in `actual` (other keys are not compared)."""
    wrong = [
        f"{key} is {actual.get(key, '<missing>')!r}, expected {value!r}"
        for key, value in expected.items()
        if actual.get(key, _MISSING) != value
    ]
    if wrong:
        raise CheckFailed(f"{what}: " + "; ".join(wrong))


def expect_detail(answer: Mapping[str, Any], *words: str) -> None:
    """An error answer's `detail` says each of `words`."""
    detail = str(answer.get("detail"))
    missing = [w for w in words if w not in detail]
    expect(not missing, f"detail {detail!r} does not mention {missing}")


def need(value: T | None, what: str) -> T:
    """The value an earlier check produced, or Blocked naming what is missing."""
    if value is None:
        raise Blocked(f"needs {what}, which an earlier check did not provide")
    return value


def poll(
    what: str,
    probe: Callable[[], T | None],
    *,
    timeout: float = WAIT_SECONDS,
    interval: float = 0.1,
    last: Callable[[], object] | None = None,
) -> T:
    """Call `probe` until it answers something other than None, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            seen = f"; last seen: {last()!r}"[:600] if last is not None else ""
            raise CheckFailed(f"timed out after {timeout:g} s waiting for {what}{seen}")
        time.sleep(interval)


@dataclass
class CheckResult:
    name: str
    group: str
    status: str
    error: str | None
    duration: float


class Runner:
    """Runs checks: `with runner.check(name, group): ...` records the outcome and goes on."""

    def __init__(self, *, verbose: bool) -> None:
        self.verbose = verbose
        self.results: list[CheckResult] = []

    @contextlib.contextmanager
    def check(self, name: str, group: str) -> Iterator[None]:
        started = time.perf_counter()
        status, error = PASSED, None
        try:
            yield
        except Skipped as exc:
            status, error = SKIPPED, str(exc)
        except Blocked as exc:
            status, error = FAILED, f"blocked: {exc}"
        except CheckFailed as exc:
            status, error = FAILED, str(exc)
        except Exception as exc:  # an unexpected error fails the check, not the run
            status, error = FAILED, f"{type(exc).__name__}: {exc}"
        result = CheckResult(name, group, status, error, time.perf_counter() - started)
        self.results.append(result)
        if self.verbose or status == FAILED:
            label = {PASSED: "PASS", FAILED: "FAIL", SKIPPED: "SKIP"}[status]
            detail = f": {error}" if error else ""
            print(f"  {label}  [{group}] {name} ({result.duration:.2f} s){detail}", flush=True)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)


# ---- coverage ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    group: str


def _normalise(path: str) -> str:
    """`/path/` and `/path` are the same endpoint."""
    return path.rstrip("/") or "/"


def _group_of(template: str) -> str:
    parts = [p for p in template.split("/") if p]
    if parts and parts[0] == "v1":
        parts = parts[1:]
    return parts[0] if parts else "root"


class Coverage:
    """The operations of the OpenAPI document, and which of them the script's requests reached."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.operations: dict[tuple[str, str], Operation] = {}
        patterns: dict[str, re.Pattern[str]] = {}
        for template, item in (spec.get("paths") or {}).items():
            for method, operation in item.items():
                if method not in HTTP_METHODS:
                    continue
                tags = operation.get("tags") or []
                group = str(tags[0]) if tags else _group_of(template)
                key = (method.upper(), template)
                self.operations[key] = Operation(method.upper(), template, group)
            literal = re.split(r"\{[^}/]+\}", _normalise(template))
            patterns[template] = re.compile("[^/]+".join(re.escape(p) for p in literal) + r"\Z")
        # Fewer parameters first: `/v1/users/me` wins over `/v1/users/{user_id}`.
        self._patterns = sorted(patterns.items(), key=lambda kv: (kv[0].count("{"), kv[0]))
        self.calls: Counter[tuple[str, str]] = Counter()
        self.outside: Counter[tuple[str, str]] = Counter()  # requests to paths not in the document

    def operation_for(self, method: str, path: str) -> Operation | None:
        wanted = _normalise(path)
        for template, pattern in self._patterns:
            if pattern.match(wanted) and (method, template) in self.operations:
                return self.operations[(method, template)]
        return None

    def record(self, method: str, path: str) -> None:
        operation = self.operation_for(method.upper(), path)
        if operation is None:
            self.outside[(method.upper(), path)] += 1
        else:
            self.calls[(operation.method, operation.template)] += 1

    def missing(self) -> list[Operation]:
        return [op for key, op in self.operations.items() if key not in self.calls]

    def by_group(self) -> dict[str, tuple[int, int]]:
        """group → (operations called, operations in the document)."""
        totals: dict[str, list[int]] = {}
        for key, op in self.operations.items():
            entry = totals.setdefault(op.group, [0, 0])
            entry[0] += key in self.calls
            entry[1] += 1
        return {group: (called, count) for group, (called, count) in totals.items()}


# ---- the HTTP client -----------------------------------------------------------------------------


def snippet(response: httpx.Response, limit: int = 300) -> str:
    text = response.text
    return text if len(text) <= limit else text[:limit] + "…"


def body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        where = f"{response.request.method} {response.request.url.path}"
        raise CheckFailed(f"{where}: not JSON: {snippet(response)}") from None


class Api:
    """The one client every request goes through; each response is recorded for coverage.

    `request` answers the response; `get`, `post`, `put` and `delete` check the status (200
    unless `expect` says otherwise) and answer the decoded JSON body.
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.coverage: Coverage | None = None
        self.secrets: set[str] = set()
        self.client = httpx.Client(
            base_url=self.base_url,
            timeout=REQUEST_TIMEOUT,
            trust_env=False,
            follow_redirects=False,
            event_hooks={"response": [self._observe]},
        )

    def _observe(self, response: httpx.Response) -> None:
        if self.coverage is not None:
            self.coverage.record(response.request.method, response.request.url.path)
        self._remember_secrets(response)

    def _remember_secrets(self, response: httpx.Response) -> None:
        """Every secret this run sent or was given: bearer tokens, passwords, keys, secrets,
        recovery and calendar tokens (in bodies, forms and URLs)."""
        response.read()  # a response hook runs before the body is read
        request = response.request
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            self.secrets.add(credentials)
        for name, value in request.url.params.multi_items():
            if name in SECRET_FIELDS:
                self.secrets.add(value)
        body = request.content or b""
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            form = httpx.QueryParams(body.decode(errors="replace"))
            self.secrets.update(v for k, v in form.multi_items() if k in SECRET_FIELDS)
        for content in (body, response.content):
            with contextlib.suppress(ValueError):
                self._secrets_in(json.loads(content))

    def _secrets_in(self, value: Any) -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                if name in SECRET_FIELDS and isinstance(item, str):
                    self.secrets.add(item)
                elif name == "url" and isinstance(item, str) and "token=" in item:
                    self.secrets.update(httpx.URL(item).params.get_list("token"))
                else:
                    self._secrets_in(item)
        elif isinstance(value, list):
            for item in value:
                self._secrets_in(item)

    def close(self) -> None:
        self.client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        expect: int | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        response = self.client.request(method, path, headers=sent, **kwargs)
        if expect is not None and response.status_code != expect:
            raise CheckFailed(
                f"{method} {path} answered {response.status_code}, expected {expect}: "
                f"{snippet(response)}"
            )
        return response

    def _json(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        response = self.request(method, path, expect=expect, **kwargs)
        return body(response) if response.content else None

    def get(self, path: str, *, expect: int = 200, **kwargs: Any) -> Any:
        return self._json("GET", path, expect, **kwargs)

    def post(self, path: str, *, expect: int = 200, **kwargs: Any) -> Any:
        return self._json("POST", path, expect, **kwargs)

    def put(self, path: str, *, expect: int = 200, **kwargs: Any) -> Any:
        return self._json("PUT", path, expect, **kwargs)

    def delete(self, path: str, *, expect: int = 200, **kwargs: Any) -> Any:
        return self._json("DELETE", path, expect, **kwargs)


# ---- local peers: SMTP server, webhook receiver --------------------------------------------------


def stop_smtp(controller: Any) -> None:
    """Stop an aiosmtpd controller, waiting at most 5 s (its own stop joins without a limit)."""
    if controller is not None:
        stopper = threading.Thread(target=controller.stop, daemon=True)
        stopper.start()
        stopper.join(timeout=5)


class Inbox:
    """A real SMTP server on loopback (aiosmtpd) that keeps every mail it receives."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[tuple[EmailMessage, list[str]]] = []
        self._controller: Any = None
        self.port = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.content if isinstance(envelope.content, bytes) else envelope.content.encode()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        with self._lock:
            self._messages.append((message, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        stop_smtp(controller)

    def find(self, predicate: Callable[[EmailMessage, list[str]], bool]) -> EmailMessage | None:
        with self._lock:
            for message, recipients in self._messages:
                if predicate(message, recipients):
                    return message
        return None

    def wait_for(
        self, what: str, predicate: Callable[[EmailMessage, list[str]], bool]
    ) -> EmailMessage:
        return poll(f"a mail: {what}", lambda: self.find(predicate))


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A local HTTP server recording every request (webhook deliveries) and answering 200."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                payload = self.rfile.read(length) if length else b""
                headers = {name.lower(): value for name, value in self.headers.items()}
                receiver._add(Received(self.command, self.path, headers, payload, time.time()))
                answer = b"ok"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = do_PUT = _record

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the script reports what matters

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )

    def _add(self, request: Received) -> None:
        with self._lock:
            self._requests.append(request)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def find(self, predicate: Callable[[Received], bool]) -> Received | None:
        with self._lock:
            for request in self._requests:
                if predicate(request):
                    return request
        return None

    def wait_for(self, what: str, predicate: Callable[[Received], bool]) -> Received:
        return poll(f"a webhook delivery: {what}", lambda: self.find(predicate))


def json_body_matches(request: Received, check: Callable[[Any], bool]) -> bool:
    try:
        return bool(check(request.json()))
    except (ValueError, KeyError, TypeError):
        return False


def delivery_of(event: str, incident_id: int, path: str) -> Callable[[Received], bool]:
    """Matches the delivery of `event` about one incident to `path`."""

    def matches(request: Received) -> bool:
        return request.path == path and json_body_matches(
            request, lambda b: b["event"] == event and b["incident"]["id"] == incident_id
        )

    return matches


def signature(secret: str, timestamp: str, payload: bytes) -> str:
    """As `sign()` in app/notifications/channels.py: sha256=<hex HMAC-SHA256(secret, ts.body)>."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + payload, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def signed_with(request: Received, secret: str) -> bool:
    """Does X-Signature verify with `secret`, as a receiver checks it?"""
    timestamp = request.headers.get("x-timestamp", "")
    expected = signature(secret, timestamp, request.body)
    return hmac.compare_digest(request.headers.get("x-signature", ""), expected)


def verify_signed(request: Received, secret: str) -> None:
    """The delivery is signed with `secret`, and recently (receivers refuse old timestamps)."""
    timestamp = request.headers.get("x-timestamp", "")
    expect(timestamp.isdigit(), f"no X-Timestamp: headers {sorted(request.headers)}")
    expect(abs(time.time() - int(timestamp)) <= 300, f"X-Timestamp {timestamp} is not recent")
    sent = request.headers.get("x-signature")
    expect(signed_with(request, secret), f"X-Signature {sent} does not verify with the secret")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ---- the database and the server -----------------------------------------------------------------


class PostgresDatabase:
    """A database of its own on a PostgreSQL server: created at the start, dropped at the end."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        named = parts.path.strip("/")
        self.name = named or f"ims_e2e_{os.getpid()}_{secrets.token_hex(3)}"
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", self.name):
            raise ValueError(f"database name {self.name!r}: use letters, digits and underscores")
        netloc, query = parts.netloc, parts.query
        self.maintenance_dsn = urlunsplit(("postgresql", netloc, "/postgres", query, ""))
        self.url = urlunsplit(("postgresql", netloc, f"/{self.name}", query, ""))
        self.created = False

    @staticmethod
    async def _execute(dsn: str, statement: str) -> None:
        import asyncpg  # type: ignore[import-untyped]

        connection = await asyncpg.connect(dsn, timeout=10)
        try:
            await connection.execute(statement, timeout=60)
        finally:
            await connection.close()

    def create(self) -> None:
        try:
            asyncio.run(self._execute(self.maintenance_dsn, f'CREATE DATABASE "{self.name}"'))
        except Exception as exc:
            if "already exists" in str(exc):
                raise CheckFailed(
                    f"database {self.name} already exists: drop it, or pass a server URL "
                    "without a database name and the script makes its own"
                ) from None
            raise
        self.created = True

    def drop(self) -> None:
        if self.created:
            statement = f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'
            asyncio.run(self._execute(self.maintenance_dsn, statement))
            self.created = False


def console_command(name: str) -> list[str]:
    """The venv's console script, or the module behind it."""
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]


class ServerProcess:
    """`python -m uvicorn app.main:app` on a loopback port, stopped by its PID."""

    def __init__(self, *, env: dict[str, str], port: int, cwd: Path) -> None:
        self.env, self.port, self.cwd = env, port, cwd
        self.log_path = cwd / "server.log"
        self.base_url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def migrate(self) -> str:
        command = [*console_command("incident-management"), "migrate"]
        done = subprocess.run(  # noqa: S603 - our own venv's command, fixed arguments
            command, env=self.env, cwd=self.cwd, capture_output=True, text=True, timeout=180
        )
        if done.returncode != 0:
            raise CheckFailed(f"{' '.join(command)} exited {done.returncode}: {done.stderr[-800:]}")
        return done.stdout.strip()

    def start(self) -> None:
        address = ["--host", "127.0.0.1", "--port", str(self.port)]
        command = [sys.executable, "-m", "uvicorn", "app.main:app", *address]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 - fixed arguments
                command, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_healthy(self) -> dict[str, Any]:
        process = need(self.process, "a started server")

        def probe() -> dict[str, Any] | None:
            if process.poll() is not None:
                raise CheckFailed(f"the server exited with {process.returncode}: {self.log_tail()}")
            try:
                response = httpx.get(f"{self.base_url}/health", timeout=2, trust_env=False)
            except httpx.TransportError:
                return None
            if response.status_code != 200:
                return None
            found: dict[str, Any] = response.json()
            return found

        return poll("the server's /health", probe, timeout=HEALTH_WAIT_SECONDS, interval=0.2)

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Local:
    """What the script started itself (absent with --base-url)."""

    inbox: Inbox
    receiver: Receiver
    signing_secret: str
    server: ServerProcess


# ---- the walk through the product ----------------------------------------------------------------


@dataclass
class Account:
    key: str
    full_name: str
    email: str
    password: str
    id: int | None = None
    token: str | None = None

    @property
    def bearer(self) -> str:
        return need(self.token, f"{self.key}'s access token")

    @property
    def uid(self) -> int:
        return need(self.id, f"{self.key}'s user id")


def new_password() -> str:
    return "pw-" + secrets.token_urlsafe(12)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def now_utc() -> datetime:
    return datetime.now(UTC)


def close_to(actual: str | None, expected: datetime, tolerance: float, what: str) -> None:
    if actual is None:
        raise CheckFailed(f"{what} is null, expected about {expected}")
    off = abs((parse_time(actual) - expected).total_seconds())
    expect(off <= tolerance, f"{what} is {actual}, {off:.0f} s from the expected {expected}")


def is_subsequence(wanted: Sequence[str], seen: Sequence[str]) -> bool:
    rest = iter(seen)
    return all(any(item == s for s in rest) for item in wanted)


def rotation_user(at: datetime, *, start: datetime, users: Sequence[int]) -> int:
    """Who a layer rotating daily at `start` (Berlin wall-clock time) names at instant `at`."""
    local = at.astimezone(BERLIN)
    turns = (local.date() - start.date()).days
    if local.time() < start.time():
        turns -= 1
    return users[turns % len(users)]


def find_key(data: Any, key: str) -> Any:
    """The value of `key` in nested JSON (the first found), or None."""
    if isinstance(data, dict):
        if key in data:
            return data[key]
        data = list(data.values())
    if isinstance(data, list):
        for item in data:
            found = find_key(item, key)
            if found is not None:
                return found
    return None


def load_fixture(name: str) -> Any:
    path = FIXTURES / name
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise CheckFailed(f"fixture {path} cannot be read: {exc}") from None


def plain_text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    return str(part.get_content()) if isinstance(part, EmailMessage) else ""


class Walk:
    """Every endpoint group, in the order a team meets them; each step is a check."""

    def __init__(
        self,
        runner: Runner,
        api: Api,
        *,
        local: Local | None,
        admin_login: tuple[str, str] | None,
    ) -> None:
        self.runner, self.api, self.local = runner, api, local
        self.admin_login = admin_login
        self.run = run = secrets.token_hex(3)  # names and emails unique to this run
        self.ada = Account("ada", "Ada Admin", f"Ada.{run}@Example.com", new_password())
        self.bob = Account("bob", "Bob User", f"bob.{run}@example.com", new_password())
        self.carol = Account("carol", "Carol Oncall", f"carol.{run}@example.com", new_password())
        self.dave = Account("dave", "Dave Oncall", f"dave.{run}@example.com", new_password())
        self.ids: dict[str, int] = {}  # what the walk made, by name
        self.keys: dict[str, str] = {}  # integration keys by kind
        self.texts: dict[str, str] = {}  # secrets, tokens and versions seen on the way
        berlin_today = now_utc().astimezone(BERLIN).date()
        self.layer_start = datetime.combine(berlin_today - timedelta(days=14), clock_time(9))

    # -- helpers -----------------------------------------------------------------------------------

    def check(self, name: str, group: str) -> contextlib.AbstractContextManager[None]:
        return self.runner.check(name, group)

    def needs_local(self) -> Local:
        if self.local is None:
            raise Skipped(EXTERNAL)
        return self.local

    def id_of(self, name: str) -> int:
        return need(self.ids.get(name), f"the id of {name}")

    def text(self, name: str) -> str:
        return need(self.texts.get(name), name)

    def key(self, kind: str) -> str:
        return need(self.keys.get(kind), f"the {kind} integration key")

    def login(self, account: Account, password: str | None = None) -> str:
        form = {"username": account.email, "password": password or account.password}
        token = self.api.post("/v1/auth/login/access-token", data=form)["access_token"]
        expect(isinstance(token, str) and token, f"no access_token for {account.key}")
        return str(token)

    def incident(self, incident_id: int, token: str | None = None) -> dict[str, Any]:
        found: dict[str, Any] = self.api.get(
            f"/v1/incidents/{incident_id}", token=token or self.ada.bearer
        )
        return found

    def act(self, incident_id: int, action: str, **kwargs: Any) -> Any:
        """POST /v1/incidents/{id}/{action}, as ada unless `token` says otherwise."""
        kwargs.setdefault("token", self.ada.bearer)
        return self.api.post(f"/v1/incidents/{incident_id}/{action}", **kwargs)

    def page(self, path: str, token: str, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.api.get(
            path, token=token, params={"limit": 500, **params}
        )["items"]
        return items

    def timeline(self, incident_id: int) -> list[dict[str, Any]]:
        return self.page(f"/v1/incidents/{incident_id}/timeline", self.ada.bearer)

    def events(self, incident_id: int) -> list[dict[str, Any]]:
        return self.page(f"/v1/incidents/{incident_id}/escalation-events", self.ada.bearer)

    def alert(self, kind: str, payload: Any, **kwargs: Any) -> list[dict[str, Any]]:
        """Send to /v1/alerts/{kind} with the integration's key; answers the `incidents`."""
        kwargs.setdefault("headers", {"X-Integration-Key": self.key(kind)})
        answer = self.api.post(f"/v1/alerts/{kind}", json=payload, expect=202, **kwargs)
        incidents: list[dict[str, Any]] = answer["incidents"]
        return incidents

    # -- the walk ----------------------------------------------------------------------------------

    def run_all(self) -> None:
        sections = (
            self.health_and_docs,
            self.auth,
            self.users,
            self.password_recovery,
            self.services,
            self.integrations,
            self.alerts,
            self.pagerduty,
            self.incidents,
            self.lifecycle,
            self.schedules,
            self.calendars,
            self.preferences,
            self.escalation,
            self.delivery_log,
            self.analytics,
            self.webhooks,
            self.snooze_expiry,
            self.metrics,
            self.deletions,
            self.no_secret_in_logs,
        )
        for section in sections:
            section()

    def health_and_docs(self) -> None:
        with self.check("GET /health: the service and its database are up", HEALTH):
            response = self.api.request("GET", "/health", expect=200)
            answer = body(response)
            expect_fields(answer, {"status": "ok", "database": "ok"}, "health")
            expect(isinstance(answer.get("version"), str) and answer["version"], "no version")
            timing = response.headers.get("server-timing", "")
            expect("app;dur=" in timing, f"Server-Timing header is {timing!r}")
            self.texts["version"] = answer["version"]
        with self.check("GET /health/ready: schema current, worker ticking (or elsewhere)", HEALTH):
            answer = body(self.api.request("GET", "/health/ready", expect=200))
            expect_fields(answer, {"status": "ok", "database": "ok", "migrations": "ok"}, "ready")
            expect(answer.get("worker") in ("ok", "off"), f"worker is {answer.get('worker')!r}")
        with self.check("GET /: name, version and documentation links", HEALTH):
            links = {"docs": "/docs", "redoc": "/redoc", "openapi": "/v1/openapi.json"}
            expected: dict[str, Any] = {
                "name": PROJECT_NAME,
                "version": self.text("version"),
                **links,
            }
            expect_fields(self.api.get("/"), {**expected, "health": "/health"}, "root")
        with self.check("GET /docs: Swagger UI on the OpenAPI document", DOCS):
            page = self.api.request("GET", "/docs", expect=200).text
            expect("swagger-ui" in page.lower(), "no Swagger UI in /docs")
            expect("/v1/openapi.json" in page, "/docs does not load /v1/openapi.json")
        with self.check("GET /redoc: ReDoc", DOCS):
            page = self.api.request("GET", "/redoc", expect=200).text
            expect("redoc" in page.lower(), "no ReDoc in /redoc")

    def auth(self) -> None:
        ada, bob = self.ada, self.bob
        with self.check("POST /v1/auth/signup: the first account becomes admin", AUTH):
            signup = {"email": ada.email, "password": ada.password, "full_name": ada.full_name}
            user = self.api.post("/v1/auth/signup", json=signup, expect=201)
            ada.id = user["id"]
            expect(set(user) >= USER_FIELDS, f"user fields missing: {USER_FIELDS - set(user)}")
            expect(not {"password", "hashed_password"} & set(user), "the answer has a password")
            expected: dict[str, Any] = {
                "email": ada.email.lower(),
                "full_name": ada.full_name,
                "is_active": True,
            }
            expect_fields(user, expected, "user (email stored lower-case)")
            if user["role"] != "admin" and self.local is None and self.admin_login is not None:
                ada.email, ada.password = self.admin_login
                ada.id = None
                raise Skipped(f"{EXTERNAL}: the database is not empty; acting as --admin-email")
            expect_eq(user["role"], "admin", "role of the first account")
        with self.check("POST /v1/auth/signup: later accounts are plain users", AUTH):
            signup = {"email": bob.email, "password": bob.password, "full_name": bob.full_name}
            user = self.api.post("/v1/auth/signup", json=signup, expect=201)
            bob.id = user["id"]
            expect_fields(user, {"role": "user", "email": bob.email}, "user")
        with self.check("POST /v1/auth/signup: a taken email (any case) is 409", AUTH):
            taken = {"email": bob.email.upper(), "password": new_password(), "full_name": "Imp"}
            expect_detail(self.api.post("/v1/auth/signup", json=taken, expect=409), "")
        with self.check("POST /v1/auth/signup: a short password is 422", AUTH):
            short = {
                "email": f"short.{self.run}@example.com",
                "password": "short",
                "full_name": "S",
            }
            self.api.post("/v1/auth/signup", json=short, expect=422)
        with self.check("POST /v1/auth/login/access-token: a bearer token", AUTH):
            form = {"username": ada.email, "password": ada.password}
            token = self.api.post("/v1/auth/login/access-token", data=form)
            expect_eq(token.get("token_type"), "bearer", "token_type")
            expect(isinstance(token.get("access_token"), str), "no access_token")
            if self.local is not None:
                expect_eq(token.get("expires_in"), 3600, "expires_in (60 minutes by default)")
            expect(token.get("expires_in", 0) > 0, "expires_in")
            ada.token = token["access_token"]
            bob.token = self.login(bob)
        with self.check("POST /v1/auth/login/access-token: a wrong password is 401", AUTH):
            form = {"username": ada.email, "password": "not-the-password"}
            answer = self.api.post("/v1/auth/login/access-token", data=form, expect=401)
            expect_detail(answer, "Incorrect email or password")
        with self.check("POST /v1/auth/login/test-token: the token's user", AUTH):
            user = self.api.post("/v1/auth/login/test-token", token=ada.bearer)
            if ada.id is None:  # acting as --admin-email: the account is theirs
                ada.id, ada.full_name = user["id"], user["full_name"]
            expect_fields(user, {"id": ada.uid, "role": "admin", "full_name": ada.full_name}, "ada")
            user = self.api.post("/v1/auth/login/test-token", token=bob.bearer)
            expect_fields(user, {"id": bob.uid, "role": "user", "email": bob.email}, "bob")
        with self.check("POST /v1/auth/login/test-token: no token or a forged one is 401", AUTH):
            self.api.post("/v1/auth/login/test-token", expect=401)
            forged = bob.bearer[:-4] + ("AAAA" if not bob.bearer.endswith("AAAA") else "BBBB")
            self.api.post("/v1/auth/login/test-token", token=forged, expect=401)
        with self.check("POST /v1/auth/password-recovery/{email}: one answer for anyone", AUTH):
            known = self.api.post(f"/v1/auth/password-recovery/{bob.email}")
            unknown = self.api.post(f"/v1/auth/password-recovery/nobody.{self.run}@example.com")
            expect(isinstance(known.get("message"), str) and known["message"], "no message")
            expect_eq(unknown, known, "the answer for an unknown email")
        with self.check("POST /v1/auth/reset-password/: a bad token is 400", AUTH):
            reset = {"token": "not-a-real-token", "new_password": new_password()}
            answer = self.api.post("/v1/auth/reset-password/", json=reset, expect=400)
            expect_detail(answer, "Invalid or expired password reset token")

    def users(self) -> None:
        ada, bob, carol, dave, run = self.ada, self.bob, self.carol, self.dave, self.run
        with self.check("GET /v1/users/me: your own account", USERS):
            me = self.api.get("/v1/users/me", token=bob.bearer)
            expect_fields(me, {"id": bob.uid, "email": bob.email, "role": "user"}, "me")
        with self.check("PUT /v1/users/me: only the given fields change", USERS):
            change: dict[str, Any] = {
                "full_name": "Bob Builder",
                "phone": "+4915112345678",
                "timezone": "Asia/Tokyo",
            }
            me = self.api.put("/v1/users/me", token=bob.bearer, json=change)
            expect_fields(me, {**change, "email": bob.email, "role": "user"}, "me")
            bob.full_name = change["full_name"]
        with self.check("PUT /v1/users/me: a new email without current_password is 403", USERS):
            change = {"email": f"bobby.{run}@example.com"}
            self.api.put("/v1/users/me", token=bob.bearer, json=change, expect=403)
            expect_eq(self.api.get("/v1/users/me", token=bob.bearer)["email"], bob.email, "email")
        with self.check("PUT /v1/users/me: a new email with current_password", USERS):
            change = {"email": f"Bobby.{run}@example.com", "current_password": bob.password}
            me = self.api.put("/v1/users/me", token=bob.bearer, json=change)
            expect_eq(me["email"], f"bobby.{run}@example.com", "email (lower-case)")
            bob.email = me["email"]
        with self.check("POST /v1/users/me/password: a wrong current password is 401", USERS):
            change = {"current_password": "wrong-password", "new_password": new_password()}
            self.api.post("/v1/users/me/password", token=bob.bearer, json=change, expect=401)
        with self.check("POST /v1/users/me/password: old tokens stop, the new one works", USERS):
            old_token, password = bob.bearer, new_password()
            change = {"current_password": bob.password, "new_password": password}
            me = self.api.post("/v1/users/me/password", token=old_token, json=change)
            expect_eq(me["id"], bob.uid, "id")
            self.api.get("/v1/users/me", token=old_token, expect=401)
            bob.password, bob.token = password, self.login(bob, password)
            expect_eq(self.api.get("/v1/users/me", token=bob.token)["id"], bob.uid, "me")
        with self.check("admin routes refuse a plain user (403)", USERS):
            self.api.get("/v1/users/", token=bob.bearer, expect=403)
            new: dict[str, Any] = {
                "email": f"x.{run}@example.com",
                "password": new_password(),
                "full_name": "X",
            }
            self.api.post("/v1/users/", token=bob.bearer, json=new, expect=403)
            self.api.get(f"/v1/users/{ada.uid}", token=bob.bearer, expect=403)
            self.api.delete(f"/v1/users/{ada.uid}", token=bob.bearer, expect=403)
        people = [
            (carol, {"phone": "+15555550123", "timezone": "Europe/Berlin"}),
            (dave, {"timezone": "America/New_York"}),
        ]
        for account, extra in people:
            with self.check(f"POST /v1/users/: an admin creates {account.key}", USERS):
                new = {"email": account.email, "password": account.password, "role": "user"}
                new |= {"full_name": account.full_name, **extra}
                user = self.api.post("/v1/users/", token=ada.bearer, json=new, expect=201)
                account.id = user["id"]
                expected: dict[str, Any] = {k: v for k, v in new.items() if k != "password"}
                expect_fields(user, {**expected, "is_active": True}, account.key)
                account.token = self.login(account)
        with self.check("POST /v1/users/: a taken email is 409", USERS):
            new = {"email": carol.email, "password": new_password(), "full_name": "Carol 2"}
            self.api.post("/v1/users/", token=ada.bearer, json=new, expect=409)
        with self.check("GET /v1/users/: search, role filter and cursor paging", USERS):
            found = self.page("/v1/users/", ada.bearer, q=f"carol.{run}")
            expect_eq([u["id"] for u in found], [carol.uid], "users matching q")
            admins = {u["id"] for u in self.page("/v1/users/", ada.bearer, role="admin")}
            expect(ada.uid in admins and bob.uid not in admins, f"role=admin gave {admins}")
            first = self.api.get("/v1/users/", token=ada.bearer, params={"limit": 1})
            expect_eq(len(first["items"]), 1, "items with limit=1")
            cursor = need(first.get("next_cursor"), "a next_cursor with limit=1")
            params = {"limit": 1, "cursor": cursor}
            second = self.api.get("/v1/users/", token=ada.bearer, params=params)["items"]
            expect(second and second[0]["id"] != first["items"][0]["id"], "page 2 repeats page 1")
        with self.check("GET /v1/users/{id}: one user; an unknown id is 404", USERS):
            user = self.api.get(f"/v1/users/{carol.uid}", token=ada.bearer)
            expect_fields(user, {"id": carol.uid, "email": carol.email}, "user")
            self.api.get("/v1/users/999999999", token=ada.bearer, expect=404)
        with self.check("PUT /v1/users/{id}: an admin changes a user", USERS):
            carol.full_name = "Carol On-Call"
            change = {"full_name": carol.full_name}
            user = self.api.put(f"/v1/users/{carol.uid}", token=ada.bearer, json=change)
            expect_fields(user, {"full_name": carol.full_name, "email": carol.email}, "user")
        with self.check("PUT /v1/users/{id}: demoting the last admin is 409", USERS):
            active = self.page("/v1/users/", ada.bearer, role="admin", is_active="true")
            if [u["id"] for u in active] != [ada.uid]:
                # Never risk demoting an admin of someone else's server.
                raise Skipped(f"{EXTERNAL}: {len(active)} active admins, not only ours")
            demote = {"role": "user"}
            answer = self.api.put(f"/v1/users/{ada.uid}", token=ada.bearer, json=demote, expect=409)
            expect_detail(answer, "admin")
            expect_eq(self.api.get("/v1/users/me", token=ada.bearer)["role"], "admin", "role")

    def password_recovery(self) -> None:
        dave = self.dave
        with self.check("password recovery: the mailed token resets the password", AUTH):
            local = self.needs_local()
            old_token = dave.bearer
            answer = self.api.post(f"/v1/auth/password-recovery/{dave.email}")
            expect(answer.get("message"), f"no message: {answer}")
            mail = local.inbox.wait_for(
                f"password recovery for {dave.email}",
                lambda m, rcpt: dave.email in rcpt and "recovery" in str(m["Subject"]).lower(),
            )
            expect_eq(str(mail["From"]), "incidents@localhost", "From (SMTP_FROM)")
            content = plain_text(mail)
            match = re.search(r'"token": "([^"]+)"', content)
            token = need(match.group(1) if match else None, "a token in the recovery mail")
            expect(f"{self.api.base_url}/v1/auth/reset-password/" in content, "no reset link")
            password = new_password()
            reset = {"token": token, "new_password": password}
            answer = self.api.post("/v1/auth/reset-password/", json=reset)
            expect_eq(answer, {"message": "Password updated"}, "answer")
            again = {"token": token, "new_password": new_password()}
            self.api.post("/v1/auth/reset-password/", json=again, expect=400)
            form = {"username": dave.email, "password": dave.password}
            self.api.post("/v1/auth/login/access-token", data=form, expect=401)
            self.api.get("/v1/users/me", token=old_token, expect=401)
            dave.password = password
            dave.token = self.login(dave)

    def services(self) -> None:
        ada, bob, run = self.ada, self.bob, self.run
        checkout = f"e2e-checkout-{run}"
        made = [(checkout, "Payments and checkout"), (f"e2e-alerts-{run}", "Alert sources")]
        for name, description in made:
            with self.check(f"POST /v1/services/: create {name}", SERVICES):
                new: dict[str, Any] = {"name": name, "description": description}
                service = self.api.post("/v1/services/", token=ada.bearer, json=new, expect=201)
                expected: dict[str, Any] = {**new, "is_active": True, "escalation_policy_id": None}
                expect_fields(service, expected, "service")
                self.ids[name] = service["id"]
        with self.check("POST /v1/services/: a taken name (any case) is 409", SERVICES):
            taken = {"name": checkout.upper()}
            self.api.post("/v1/services/", token=ada.bearer, json=taken, expect=409)
        with self.check("POST /v1/services/: a plain user is refused (403)", SERVICES):
            self.api.post("/v1/services/", token=bob.bearer, json={"name": run}, expect=403)
        with self.check("GET /v1/services/: every user reads, q searches", SERVICES):
            found = sorted(s["name"] for s in self.page("/v1/services/", bob.bearer, q=run))
            expect_eq(found, sorted(name for name, _ in made), "services matching q")
        with self.check("GET /v1/services/{id}: one service; unknown is 404", SERVICES):
            service_id = self.id_of(checkout)
            service = self.api.get(f"/v1/services/{service_id}", token=bob.bearer)
            expect_fields(service, {"id": service_id, "name": checkout}, "service")
            self.api.get("/v1/services/999999999", token=bob.bearer, expect=404)
        with self.check("/path and /path/ answer alike (no redirect)", SERVICES):
            service_id = self.id_of(checkout)
            for path in ("/v1/services", f"/v1/services/{service_id}"):
                plain = self.api.request("GET", path, token=bob.bearer, expect=200)
                slashed = self.api.request("GET", path + "/", token=bob.bearer, expect=200)
                expect_eq(body(slashed), body(plain), f"{path}/ and {path}")
        with self.check("PUT /v1/services/{id}: deactivate, then filter by is_active", SERVICES):
            service_id = self.id_of(checkout)
            change: dict[str, Any] = {"description": "Checkout (retired)", "is_active": False}
            service = self.api.put(f"/v1/services/{service_id}", token=ada.bearer, json=change)
            expect_fields(service, {**change, "name": checkout}, "service")
            inactive = self.page("/v1/services/", ada.bearer, is_active="false", q=run)
            expect_eq([s["id"] for s in inactive], [service_id], "inactive services")
            self.api.put(f"/v1/services/{service_id}", token=bob.bearer, json={}, expect=403)

    def integrations(self) -> None:
        ada, bob = self.ada, self.bob
        base = f"/v1/services/{self.ids.get(f'e2e-alerts-{self.run}')}/integrations"
        with self.check("POST …/integrations/: one per kind, each key shown once", INTEGRATIONS):
            service_id = self.id_of(f"e2e-alerts-{self.run}")
            for kind in ("alertmanager", "grafana", "generic", "elastic", "pagerduty"):
                new: dict[str, Any] = {"name": f"e2e {kind}", "kind": kind}
                made = self.api.post(f"{base}/", token=ada.bearer, json=new, expect=201)
                expect_fields(made, {**new, "service_id": service_id}, "integration")
                key = made.get("key")
                if not (isinstance(key, str) and re.fullmatch(r"[A-Za-z0-9_-]{32}", key)):
                    raise CheckFailed(f"{kind}: key {key!r} is not 32 URL-safe characters")
                expect(key.startswith(made["key_prefix"]), f"{kind}: key_prefix is not its start")
                self.keys[kind] = key
                self.ids[f"integration:{kind}"] = made["id"]
        with self.check("GET …/integrations/: keys are never shown again", INTEGRATIONS):
            listed = self.page(f"{base}/", ada.bearer)
            expect_eq(sorted(i["kind"] for i in listed), sorted(self.keys), "kinds")
            for item in listed:
                expect(item["key"] is None, f"the {item['kind']} key is shown in the list")
                expect(self.key(item["kind"]).startswith(item["key_prefix"]), "key_prefix")
            self.api.get(f"{base}/", token=bob.bearer, expect=403)
        with self.check("GET …/integrations/{id}: one, without its key", INTEGRATIONS):
            iid = self.id_of("integration:grafana")
            item = self.api.get(f"{base}/{iid}", token=ada.bearer)
            expect_fields(item, {"id": iid, "kind": "grafana", "key": None}, "integration")
        with self.check("PUT …/integrations/{id}: rename", INTEGRATIONS):
            iid = self.id_of("integration:grafana")
            renamed = self.api.put(f"{base}/{iid}", token=ada.bearer, json={"name": "grafana prod"})
            expect_fields(renamed, {"name": "grafana prod", "kind": "grafana"}, "integration")
        with self.check("POST …/integrations/{id}/rotate: the old key stops at once", INTEGRATIONS):
            iid, old = self.id_of("integration:generic"), self.key("generic")
            rotated = self.api.post(f"{base}/{iid}/rotate", token=ada.bearer)
            new_key = rotated.get("key")
            expect(isinstance(new_key, str) and new_key != old, f"rotate gave key {new_key!r}")
            expect(rotated.get("rotated_at"), "rotated_at is not set")
            self.keys["generic"] = new_key
            alert = {"summary": f"key check {self.run}", "severity": "info"}
            refused = {"X-Integration-Key": old}
            self.api.post("/v1/alerts/generic", json=alert, headers=refused, expect=401)
            expect_eq(self.alert("generic", alert)[0]["status"], "incident_created", "new key")
        with self.check("alert keys: none 401, unknown 401, another kind's 403", INTEGRATIONS):
            payload = load_fixture("alertmanager_webhook_firing.json")
            path = "/v1/alerts/alertmanager"
            self.api.post(path, json=payload, expect=401)
            unknown = {"Authorization": "Bearer " + "x" * 32}
            self.api.post(path, json=payload, headers=unknown, expect=401)
            grafana = {"Authorization": f"Bearer {self.key('grafana')}"}
            self.api.post(path, json=payload, headers=grafana, expect=403)
        with self.check("DELETE …/integrations/{id}: its key stops working", INTEGRATIONS):
            new = {"name": "short-lived", "kind": "generic"}
            made = self.api.post(f"{base}/", token=ada.bearer, json=new, expect=201)
            gone = self.api.delete(f"{base}/{made['id']}", token=ada.bearer)
            expect_fields(gone, {"id": made["id"], "name": "short-lived", "key": None}, "deleted")
            self.api.get(f"{base}/{made['id']}", token=ada.bearer, expect=404)
            headers = {"X-Integration-Key": made["key"]}
            self.api.post("/v1/alerts/generic", json=new, headers=headers, expect=401)

    def alerts(self) -> None:
        service_id = self.ids.get(f"e2e-alerts-{self.run}")
        with self.check("POST /v1/alerts/alertmanager: the firing fixture opens one", ALERTS):
            fixture = load_fixture("alertmanager_webhook_firing.json")
            bearer = {"Authorization": f"Bearer {self.key('alertmanager')}"}
            [result] = self.alert("alertmanager", fixture, headers=bearer)
            expect_eq(result["status"], "incident_created", "status")
            incident = self.incident(result["id"])
            self.ids["incident:alertmanager"] = incident["id"]
            expected: dict[str, Any] = {
                "title": "High 5xx error rate on checkout-api",
                "severity": "critical",
                "source": "alertmanager",
                "dedup_key": "f19dce1b4856bd7d",
                "status": "triggered",
                "service_id": service_id,
                "alert_count": 1,
            }
            expect_fields(incident, expected, "incident")
            expect_eq(incident["labels"].get("alertname"), "HighErrorRate", "alertname label")
            expect("12.5%" in incident["description"], "the description annotation is missing")
            links = incident["custom_fields"].get("links", {})
            runbook = "https://runbooks.example.com/HighErrorRate"
            expect_eq(links.get("runbook_url"), runbook, "custom_fields.links.runbook_url")
        with self.check("dedup: the same alert again adds to it (alert_count 2)", ALERTS):
            incident_id = self.id_of("incident:alertmanager")
            again = self.alert("alertmanager", load_fixture("alertmanager_webhook_firing.json"))
            expect_eq(again, [{"id": incident_id, "status": "incident_updated"}], "incidents")
            incident = self.incident(incident_id)
            expect_fields(incident, {"alert_count": 2, "status": "triggered"}, "incident")
            expect(incident.get("last_alert_at"), "last_alert_at is not set")
            received = [e for e in self.timeline(incident_id) if e["type"] == "alert_received"]
            expect(received, "no alert_received timeline entry")
            expect_eq(received[-1]["actor"]["type"], "integration", "actor of alert_received")
        with self.check("POST /v1/alerts/alertmanager: the resolved fixture resolves it", ALERTS):
            incident_id = self.id_of("incident:alertmanager")
            done = self.alert("alertmanager", load_fixture("alertmanager_webhook_resolved.json"))
            expect_eq(done, [{"id": incident_id, "status": "incident_resolved"}], "incidents")
            incident = self.incident(incident_id)
            expect_eq(incident["status"], "resolved", "status")
            expect(incident["resolved_at"], "resolved_at is not set")
        with self.check("POST /v1/alerts/alertmanager: a group fires, partly resolves", ALERTS):
            fired = self.alert(
                "alertmanager", load_fixture("alertmanager_webhook_group2_firing.json")
            )
            expect_eq([r["status"] for r in fired], ["incident_created"] * 2, "firing")
            db1, db2 = (r["id"] for r in fired)
            partly = load_fixture("alertmanager_webhook_group2_partially_resolved.json")
            statuses = [
                {"id": db1, "status": "incident_resolved"},
                {"id": db2, "status": "incident_updated"},
            ]
            expect_eq(self.alert("alertmanager", partly), statuses, "partially resolved")
            done = load_fixture("alertmanager_webhook_group2_resolved.json")
            resolved = [{"id": db2, "status": "incident_resolved"}]
            expect_eq(self.alert("alertmanager", done), resolved, "resolved")
            expect_eq(self.incident(db2)["title"], "Disk almost full on db-2", "title")
        self.grafana()
        with self.check("POST /v1/alerts/generic: dedup by key, then resolve", ALERTS):
            alert = {
                "summary": "Queue backlog over 10,000",
                "severity": "high",
                "dedup_key": f"queue-backlog-{self.run}",
                "status": "firing",
                "labels": {"queue": "emails"},
                "details": {"depth": 12000},
            }
            [first] = self.alert("generic", alert)
            expect_eq(first["status"], "incident_created", "first")
            again = self.alert("generic", {**alert, "details": {"depth": 13000}})
            expect_eq(again, [{"id": first["id"], "status": "incident_updated"}], "second")
            expected = {
                "alert_count": 2,
                "severity": "high",
                "labels": {"queue": "emails"},
                "source": "generic",
                "dedup_key": alert["dedup_key"],
            }
            expect_fields(self.incident(first["id"]), expected, "incident")
            done = self.alert("generic", {**alert, "status": "resolved"})
            expect_eq(done, [{"id": first["id"], "status": "incident_resolved"}], "resolve")
            expect_eq(self.incident(first["id"])["status"], "resolved", "status")
        with self.check("POST /v1/alerts/generic: several alerts at once", ALERTS):
            batch = [{"summary": f"batch one {self.run}"}, {"summary": f"batch two {self.run}"}]
            batch[1]["severity"] = "low"
            answer = self.alert("generic", {"alerts": batch})
            expect_eq([r["status"] for r in answer], ["incident_created"] * 2, "statuses")
            second = self.incident(answer[1]["id"])
            expect_fields(second, {"title": f"batch two {self.run}", "severity": "low"}, "second")
        with self.check(
            "POST /v1/alerts/generic: bad JSON 400, bad body 422, big body 413", ALERTS
        ):
            headers = {"X-Integration-Key": self.key("generic"), "Content-Type": "application/json"}
            path = "/v1/alerts/generic"
            self.api.post(path, content=b"{not json", headers=headers, expect=400)
            bad = json.dumps({"severity": "critical"}).encode()
            expect_detail(self.api.post(path, content=bad, headers=headers, expect=422), "summary")
            huge = json.dumps({"summary": "x" * (70 * 1024)}).encode()
            self.api.post(path, content=huge, headers=headers, expect=413)
        self.elastic()

    def grafana(self) -> None:
        with self.check("POST /v1/alerts/grafana: a Grafana webhook, key in the URL", ALERTS):
            alert = {
                "status": "firing",
                "labels": {"alertname": "CPU high", "severity": "warning", "instance": "web-1"},
                "annotations": {"summary": "CPU above 90% on web-1"},
                "startsAt": "2026-11-28T06:27:13Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://grafana.example.com/alerting/grafana/abc/view",
                "fingerprint": f"e2e{self.run}",
                "silenceURL": "http://grafana.example.com/alerting/silence/new",
                "dashboardURL": "http://grafana.example.com/d/abc",
                "values": {"A": 93.5},
                "valueString": "[ var='A' value=93.5 ]",
            }
            envelope = {
                "receiver": "incidents",
                "status": "firing",
                "orgId": 1,
                "alerts": [alert],
                "groupLabels": {"alertname": "CPU high"},
                "commonLabels": alert["labels"],
                "commonAnnotations": alert["annotations"],
                "externalURL": "http://grafana.example.com/",
                "version": "1",
                "groupKey": '{}:{alertname="CPU high"}',
                "truncatedAlerts": 0,
                "title": "[FIRING:1] CPU high",
                "state": "alerting",
                "message": "CPU high",
            }
            in_url = {"params": {"key": self.key("grafana")}, "headers": {}}
            [result] = self.alert("grafana", envelope, **in_url)
            expect_eq(result["status"], "incident_created", "status")
            incident = self.incident(result["id"])
            expected: dict[str, Any] = {
                "title": "CPU above 90% on web-1",
                "severity": "medium",
                "source": "grafana",
            }
            expect_fields(incident, expected, "incident")
            links = incident["custom_fields"]["links"]
            expect_eq(links.get("dashboard_url"), alert["dashboardURL"], "dashboard link")
            resolved = {
                **envelope,
                "status": "resolved",
                "alerts": [{**alert, "status": "resolved"}],
            }
            done = self.alert("grafana", resolved, **in_url)
            expect_eq(done, [{"id": incident["id"], "status": "incident_resolved"}], "resolved")

    def elastic(self) -> None:
        alert = {
            "alert_name": f"High error rate {self.run}",
            "message": "checkout 5xx at 12%",
            "severity": "critical",
            "service": {"name": "checkout-api", "environment": "production", "version": "4.2.1"},
            "alert_id": f"apm-rule-42-{self.run}",
            "state": {"state": "active", "timestamp": now_utc().isoformat()},
            "tags": {"rule": "error-rate"},
        }
        with self.check("POST /v1/alerts/elastic: 201 when it opens an incident", ALERTS):
            headers = {"X-Integration-Key": self.key("elastic")}
            answer = self.api.post("/v1/alerts/elastic", json=alert, headers=headers, expect=201)
            expected: dict[str, Any] = {"status": "incident_created", "message": "Incident created"}
            expect_fields(answer, expected, "answer")
            incident = self.incident(need(answer.get("incident_id"), "an incident_id"))
            self.ids["incident:elastic"] = incident["id"]
            expected = {
                "title": alert["alert_name"],
                "description": "checkout 5xx at 12%",
                "severity": "critical",
                "source": "elastic",
                "dedup_key": alert["alert_id"],
                "labels": {
                    "service.name": "checkout-api",
                    "service.environment": "production",
                    "service.version": "4.2.1",
                    "rule": "error-rate",
                },
            }
            expect_fields(incident, expected, "incident")
        with self.check("POST /v1/alerts/elastic: 200 updated, resolved, then no_changes", ALERTS):
            incident_id = self.id_of("incident:elastic")
            headers = {"X-Integration-Key": self.key("elastic")}
            recovered = {**alert, "state": {"state": "recovered"}}
            answers = [
                (alert, "incident_updated", "Alert added to the open incident", incident_id),
                (recovered, "incident_resolved", "Incident resolved", incident_id),
                (recovered, "no_changes", "No open incident for this alert; nothing to do", None),
            ]
            for payload, status, message, answered_id in answers:
                answer = self.api.post("/v1/alerts/elastic", json=payload, headers=headers)
                expected = {"status": status, "incident_id": answered_id, "message": message}
                expect_eq(answer, expected, f"the answer for {status}")
            expect_eq(self.incident(incident_id)["alert_count"], 2, "alert_count")

    def pagerduty(self) -> None:
        trigger = load_fixture("alertmanager_pagerduty_trigger.json")
        dedup_key = trigger["dedup_key"]
        success = {"status": "success", "message": "Event processed", "dedup_key": dedup_key}
        with self.check("POST /v2/enqueue: trigger (Alertmanager's PagerDuty fixture)", ALERTS):
            answer = self.api.post(
                "/v2/enqueue", json={**trigger, "routing_key": self.key("pagerduty")}, expect=202
            )
            expect_eq(answer, success, "answer")
            service_id = self.id_of(f"e2e-alerts-{self.run}")
            found = self.page("/v1/incidents/", self.ada.bearer, q=dedup_key, service_id=service_id)
            expect_eq(len(found), 1, "incidents with the dedup key")
            incident = found[0]
            self.ids["incident:pagerduty"] = incident["id"]
            expected: dict[str, Any] = {
                "title": trigger["payload"]["summary"],
                "severity": "high",
                "source": "pagerduty",
                "labels": {"source": "Alertmanager"},
                "status": "triggered",
            }
            expect_fields(incident, expected, "incident")
            expect("num_firing: 1" in incident["description"], "custom_details not described")
            client = incident["custom_fields"]["pagerduty"]["client"]
            expect_eq(client, "Alertmanager", "custom_fields.pagerduty.client")
        for action, status in (("acknowledge", "acknowledged"), ("resolve", "resolved")):
            with self.check(f"POST /v2/enqueue: {action} by dedup_key", ALERTS):
                incident_id = self.id_of("incident:pagerduty")
                if action == "resolve":
                    event = load_fixture("alertmanager_pagerduty_resolve.json")
                else:
                    event = {"dedup_key": dedup_key, "event_action": action}
                event["routing_key"] = self.key("pagerduty")
                expect_eq(self.api.post("/v2/enqueue", json=event, expect=202), success, "answer")
                expect_eq(self.incident(incident_id)["status"], status, "incident status")
        with self.check("POST /v2/enqueue: a trigger without dedup_key is given one", ALERTS):
            payload = {"summary": f"Disk full {self.run}", "source": "db-9", "severity": "info"}
            event = {"routing_key": self.key("pagerduty"), "event_action": "trigger"}
            answer = self.api.post("/v2/enqueue", json={**event, "payload": payload}, expect=202)
            expect_fields(answer, {"status": "success", "message": "Event processed"}, "answer")
            made = str(answer.get("dedup_key"))
            expect(re.fullmatch(r"[0-9a-f]{32}", made), f"dedup_key {made!r}")
        with self.check("POST /v2/enqueue: an invalid event is 400 in PagerDuty's shape", ALERTS):
            event = {"routing_key": self.key("pagerduty"), "event_action": "trigger"}
            event["payload"] = {"summary": "no source", "severity": "fatal"}
            answer = self.api.post("/v2/enqueue", json=event, expect=400)
            errors = [
                "'payload.source' is missing or blank",
                "'payload.severity' must be one of critical, error, warning, info",
            ]
            expected = {"status": "invalid event", "message": "Event object is invalid"}
            expect_fields(answer, {**expected, "errors": errors}, "answer")
            unknown = {**trigger, "routing_key": "x" * 32}
            answer = self.api.post("/v2/enqueue", json=unknown, expect=400)
            expect_fields(answer, {**expected, "errors": ["Invalid routing key"]}, "unknown key")

    def incidents(self) -> None:
        ada, bob, run = self.ada, self.bob, self.run
        title = f"E2E checkout latency {run}"
        self.texts["title:A"] = title
        request = {
            "title": title,
            "description": "p99 above 2 s",
            "severity": "high",
            "service": f"e2e-incidents-{run}",
            "labels": {"team": f"e2e-{run}"},
            "custom_fields": {"runbook": "https://wiki.example.com/checkout"},
            "dedup_key": f"e2e-a-{run}",
        }
        with self.check("POST /v1/incidents/: open an incident on a new service", INCIDENTS):
            incident = self.api.post("/v1/incidents/", token=ada.bearer, json=request, expect=201)
            missing = INCIDENT_FIELDS - set(incident)
            expect(not missing, f"incident fields missing: {sorted(missing)}")
            expected: dict[str, Any] = {k: v for k, v in request.items() if k != "service"}
            expected |= {"status": "triggered", "source": "api", "alert_count": 1, "version": 1}
            expected |= {"assignees": [], "created_by": ada.uid, "escalation_status": "none"}
            expected |= {"acknowledged_at": None, "resolved_at": None, "snoozed_until": None}
            expect_fields(incident, expected, "incident")
            expect(isinstance(incident["service_id"], int), "the named service was not created")
            self.ids["incident:A"] = incident["id"]
            self.ids[f"e2e-incidents-{run}"] = incident["service_id"]
        with self.check("POST /v1/incidents/: an open incident's dedup_key answers 200", INCIDENTS):
            again = self.api.post("/v1/incidents/", token=bob.bearer, json=request, expect=200)
            expect_eq(again["id"], self.id_of("incident:A"), "id")
        with self.check("GET /v1/incidents/: status, severity, label, service filters", INCIDENTS):
            incident_id = self.id_of("incident:A")
            label = ("label", f"team:e2e-{run}")
            service = ("service_id", str(self.id_of(f"e2e-incidents-{run}")))
            params = [("status", "triggered"), ("severity", "high"), ("severity", "low"), label]
            found = self.api.get("/v1/incidents/", token=bob.bearer, params=[*params, service])
            expect_eq([i["id"] for i in found["items"]], [incident_id], "matching incidents")
            expect("next_cursor" in found, "no next_cursor")
            params = [("status", "resolved"), label]
            none = self.api.get("/v1/incidents/", token=bob.bearer, params=params)["items"]
            expect_eq(none, [], "resolved incidents with the label")
            by_text = self.page("/v1/incidents/", bob.bearer, q=f"latency {run}")
            expect_eq([i["id"] for i in by_text], [incident_id], "incidents matching q")
            mine = self.page("/v1/incidents/", ada.bearer, assignee_id="me", status="triggered")
            expect(incident_id not in [i["id"] for i in mine], "assignee_id=me before assigning")
        with self.check("GET /v1/incidents/{id}: one incident; unknown is 404", INCIDENTS):
            incident_id = self.id_of("incident:A")
            incident = self.incident(incident_id, bob.bearer)
            expect_fields(incident, {"id": incident_id, "title": title}, "incident")
            self.api.get("/v1/incidents/999999999", token=bob.bearer, expect=404)
        with self.check("PUT /v1/incidents/{id}: a stale version is 409; If-Match", INCIDENTS):
            path = f"/v1/incidents/{self.id_of('incident:A')}"
            stale = {"severity": "critical", "version": 99}
            self.api.put(path, token=ada.bearer, json=stale, expect=409)
            change: dict[str, Any] = {"severity": "critical", "title": title + " (p1)"}
            incident = self.api.put(
                path, token=ada.bearer, json=change, headers={"If-Match": '"1"'}
            )
            expect_fields(incident, {**change, "version": 2}, "incident")
            same = self.api.put(path, token=ada.bearer, json={"severity": "critical"})
            expect_eq(same["version"], 2, "version after an update to the same values")

    def lifecycle(self) -> None:
        """Incident A through every transition of the README's table, and its records."""
        ada, bob, carol = self.ada, self.bob, self.carol

        def a() -> int:
            return self.id_of("incident:A")

        with self.check("POST /v1/incidents/{id}/acknowledge: triggered → acknowledged", INCIDENTS):
            incident = self.act(a(), "acknowledge", json={"note": "looking"})
            expected: dict[str, Any] = {
                "status": "acknowledged",
                "acknowledged_by": ada.uid,
                "version": 3,
            }
            expect_fields(incident, expected, "incident")
        with self.check("POST /v1/incidents/{id}/acknowledge: again is a no-op", INCIDENTS):
            expected = {"status": "acknowledged", "version": 3}
            expect_fields(self.act(a(), "acknowledge"), expected, "incident")
        with self.check("POST /v1/incidents/{id}/unacknowledge: → triggered", INCIDENTS):
            expect_eq(self.act(a(), "unacknowledge")["status"], "triggered", "status")
        with self.check("POST /v1/incidents/{id}/snooze: → snoozed (query string)", INCIDENTS):
            incident = self.act(a(), "snooze", params={"minutes": 30})
            expect_eq(incident["status"], "snoozed", "status")
            end = now_utc() + timedelta(minutes=30)
            close_to(incident["snoozed_until"], end, 120, "snoozed_until")
        with self.check("POST /v1/incidents/{id}/acknowledge: 409 when snoozed", INCIDENTS):
            expect_detail(self.act(a(), "acknowledge", expect=409), "snoozed")
        with self.check("POST /v1/incidents/{id}/snooze: again moves the end (body)", INCIDENTS):
            incident = self.act(a(), "snooze", json={"hours": 1, "note": "after the deploy"})
            end = now_utc() + timedelta(hours=1)
            close_to(incident["snoozed_until"], end, 120, "snoozed_until")
        with self.check("POST /v1/incidents/{id}/unsnooze: snoozed → triggered", INCIDENTS):
            expected = {"status": "triggered", "snoozed_until": None}
            expect_fields(self.act(a(), "unsnooze"), expected, "incident")
        with self.check("POST /v1/incidents/{id}/unsnooze and unacknowledge: 409", INCIDENTS):
            expect_detail(self.act(a(), "unsnooze", expect=409), "triggered")
            expect_detail(self.act(a(), "unacknowledge", expect=409), "triggered")
            expect_detail(self.act(a(), "reopen", expect=409), "triggered")
        with self.check("POST /v1/incidents/{id}/assign: add one person with a part", INCIDENTS):
            incident = self.act(a(), "assign", json={"user_id": carol.uid, "role": "commander"})
            assignees = [(p["id"], p["response_role"]) for p in incident["assignees"]]
            expect_eq(assignees, [(carol.uid, "commander")], "assignees")
        with self.check("POST /v1/incidents/{id}/assign: set the whole set", INCIDENTS):
            incident = self.act(a(), "assign", json={"user_ids": [bob.uid, carol.uid]})
            assignee_ids = sorted(p["id"] for p in incident["assignees"])
            expect_eq(assignee_ids, sorted([bob.uid, carol.uid]), "assignees")
            answer = self.act(a(), "assign", json={"user_ids": [999999999]}, expect=422)
            expect_detail(answer, "999999999")
            mine = self.page("/v1/incidents/", bob.bearer, assignee_id="me")
            expect(a() in [i["id"] for i in mine], "assignee_id=me does not list it for bob")
        with self.check("POST /v1/incidents/{id}/comments: a comment by its author", INCIDENTS):
            new: dict[str, Any] = {"content": "Rolled back **4.2.1**"}
            path = f"/v1/incidents/{a()}/comments"
            comment = self.api.post(path, token=bob.bearer, json=new, expect=201)
            author = {"id": bob.uid, "name": bob.full_name}
            expect_fields(comment, {**new, "incident_id": a(), "author": author}, "comment")
            self.ids["comment"] = comment["id"]
        with self.check("GET /v1/incidents/{id}/comments: oldest first", INCIDENTS):
            comments = self.page(f"/v1/incidents/{a()}/comments", carol.bearer)
            expect_eq([c["id"] for c in comments], [self.id_of("comment")], "comments")
        with self.check("POST /v1/incidents/{id}/resolve: open → resolved", INCIDENTS):
            incident = self.act(a(), "resolve", json={"note": "fixed by the rollback"})
            expect_fields(incident, {"status": "resolved", "resolved_by": ada.uid}, "incident")
            expect(incident["resolved_at"], "resolved_at is not set")
            self.ids["version:A"] = incident["version"]
        with self.check("POST /v1/incidents/{id}/resolve: again is a no-op", INCIDENTS):
            expected = {"status": "resolved", "version": self.id_of("version:A")}
            expect_fields(self.act(a(), "resolve"), expected, "incident")
        with self.check(
            "POST /v1/incidents/{id}/acknowledge and snooze: 409 when resolved", INCIDENTS
        ):
            expect_detail(self.act(a(), "acknowledge", expect=409), "resolved")
            expect_detail(self.act(a(), "snooze", params={"minutes": 5}, expect=409), "resolved")
        with self.check("POST /v1/incidents/{id}/reopen: resolved → triggered", INCIDENTS):
            incident = self.act(a(), "reopen", json={"note": "it is back"})
            expect_fields(incident, {"status": "triggered", "resolved_at": None}, "incident")
        with self.check("GET /v1/incidents/{id}/timeline: every change, oldest first", INCIDENTS):
            entries = self.timeline(a())
            types = [e["type"] for e in entries]
            wanted = "created updated acknowledged unacknowledged snoozed snoozed unsnoozed"
            wanted += " assigned assigned commented resolved reopened"
            expect(is_subsequence(wanted.split(), types), f"timeline types {types}")
            expect_eq([e["id"] for e in entries], sorted(e["id"] for e in entries), "order")
            updated = next(e for e in entries if e["type"] == "updated")
            actor = {"type": "user", "id": ada.uid, "name": ada.full_name}
            expect_eq(updated["actor"], actor, "actor of the update")
            change = find_key(updated["data"], "severity")
            expect_eq(change, {"before": "high", "after": "critical"}, "the update's severity")
            counts = Counter(types)
            once = {"acknowledged": 1, "resolved": 1, "updated": 1}
            expect_eq({t: counts[t] for t in once}, once, "entries (no-ops write none)")
            noted = [e for e in entries if e["type"] == "acknowledged"]
            expect("looking" in json.dumps(noted[0]["data"]), "the note is not in the timeline")
        with self.check("POST /v1/incidents/{id}/escalate: 409 without a policy", INCIDENTS):
            expect_detail(self.act(a(), "escalate", expect=409), "no escalation policy")
            expect_eq(self.events(a()), [], "escalation events")
        with self.check("GET /v1/incidents/{id}/notifications: assignees were told", INCIDENTS):
            rows = self.page(f"/v1/incidents/{a()}/notifications", ada.bearer)
            expect(all(r["incident_id"] == a() for r in rows), "another incident's row")
            assigned = {r["user_id"] for r in rows if r["event"] == "assigned"}
            expect({bob.uid, carol.uid} <= assigned, f"assigned rows for users {assigned}")
            expect(ada.uid not in assigned, "the person who assigned was told")
        with self.check("POST /v1/incidents/{id}/snooze: until a time in 2 s", INCIDENTS):
            new = {"title": f"E2E snooze expiry {self.run}", "severity": "low"}
            incident = self.api.post("/v1/incidents/", token=ada.bearer, json=new, expect=201)
            until = now_utc() + timedelta(seconds=2)
            snoozed = self.act(incident["id"], "snooze", json={"until": until.isoformat()})
            expect_eq(snoozed["status"], "snoozed", "status")
            close_to(snoozed["snoozed_until"], until, 1, "snoozed_until")
            self.ids["incident:snoozed"] = incident["id"]

    def snooze_expiry(self) -> None:
        with self.check("the worker ends a due snooze (unsnoozed by system)", INCIDENTS):
            incident_id = self.id_of("incident:snoozed")

            def woken() -> dict[str, Any] | None:
                incident = self.incident(incident_id)
                return incident if incident["status"] == "triggered" else None

            expect_eq(poll("the snooze to end", woken)["snoozed_until"], None, "snoozed_until")
            entries = [e for e in self.timeline(incident_id) if e["type"] == "unsnoozed"]
            expect(entries, "no unsnoozed entry")
            expect_eq(entries[-1]["actor"]["type"], "system", "actor of the unsnooze")

    def on_call_now(self, at: datetime) -> int:
        users = [self.carol.uid, self.dave.uid]
        return rotation_user(at, start=self.layer_start, users=users)

    def schedules(self) -> None:
        ada, bob, carol, dave, run = self.ada, self.bob, self.carol, self.dave, self.run
        name = f"E2E primary {run}"
        self.texts["schedule"] = name

        def sid() -> int:
            return self.id_of("schedule")

        with self.check("POST /v1/schedules/: a daily rotation in Europe/Berlin", SCHEDULES):
            layer = {"name": "daily", "user_ids": [carol.uid, dave.uid], "rotation_length": 1}
            layer |= {"rotation_unit": "days", "start": self.layer_start.isoformat()}
            new: dict[str, Any] = {"name": name, "time_zone": "Europe/Berlin", "description": "e2e"}
            made = self.api.post(
                "/v1/schedules/", token=ada.bearer, json={**new, "layers": [layer]}, expect=201
            )
            expect_fields(made, new, "schedule")
            expect_eq(len(made["layers"]), 1, "layers")
            expect_fields(made["layers"][0], {**layer, "restrictions": []}, "layer")
            self.ids["schedule"] = made["id"]
        with self.check("POST /v1/schedules/: 422 for unknown users, 403 for users", SCHEDULES):
            layer = {"user_ids": [999999999], "rotation_length": 1, "rotation_unit": "days"}
            layer["start"] = "2026-01-01T00:00:00"
            bad: dict[str, Any] = {"name": f"bad {run}", "time_zone": "UTC", "layers": [layer]}
            answer = self.api.post("/v1/schedules/", token=ada.bearer, json=bad, expect=422)
            expect_detail(answer, "999999999")
            empty = {**bad, "layers": []}
            self.api.post("/v1/schedules/", token=bob.bearer, json=empty, expect=403)
        with self.check("GET /v1/schedules/{id}: any user reads it", SCHEDULES):
            schedule = self.api.get(f"/v1/schedules/{sid()}", token=bob.bearer)
            expect_fields(schedule, {"id": sid(), "name": name}, "schedule")
        with self.check("PUT /v1/schedules/{id}: only the given fields change", SCHEDULES):
            change: dict[str, Any] = {"description": "primary rotation"}
            schedule = self.api.put(f"/v1/schedules/{sid()}", token=ada.bearer, json=change)
            expect_fields(schedule, {**change, "name": name}, "schedule")
            users = schedule["layers"][0]["user_ids"]
            expect_eq(users, [carol.uid, dave.uid], "layer users")
        with self.check("GET /v1/schedules/: list and search", SCHEDULES):
            found = self.page("/v1/schedules/", bob.bearer, q=run)
            expect_eq([s["id"] for s in found], [sid()], "schedules")
        with self.check("GET /v1/schedules/{id}/on-call: the rotation's person", SCHEDULES):
            at = now_utc() + timedelta(minutes=5)
            params = {"at": at.isoformat()}
            answer = self.api.get(f"/v1/schedules/{sid()}/on-call", token=bob.bearer, params=params)
            expect_eq([u["id"] for u in answer["users"]], [self.on_call_now(at)], "on call")
            close_to(answer["at"], at, 1, "at")
        with self.check("GET /v1/schedules/{id}/shifts: handoffs at 09:00 Berlin", SCHEDULES):
            start = now_utc().replace(microsecond=0)
            end = start + timedelta(days=3)
            window = {"start": start.isoformat(), "end": end.isoformat()}
            shifts = self.api.get(f"/v1/schedules/{sid()}/shifts", token=bob.bearer, params=window)
            items = shifts["items"]
            expect(3 <= len(items) <= 4, f"{len(items)} shifts in 3 days")
            expect(parse_time(items[0]["start"]) <= start, "the first shift starts late")
            expect(parse_time(items[-1]["end"]) >= end, "the last shift ends early")
            for before, after in itertools.pairwise(items):
                expect_eq(after["start"], before["end"], "shifts are contiguous")
                handoff = parse_time(before["end"]).astimezone(BERLIN)
                expect_eq(handoff.time(), clock_time(9), "handoff time in Berlin")
            for item in items:
                middle = max(parse_time(item["start"]), start) + timedelta(minutes=1)
                expected = self.on_call_now(middle)
                expect_eq(item["user"]["id"], expected, f"on call from {item['start']}")
        with self.check("POST /v1/schedules/{id}/overrides: an override wins", SCHEDULES):
            begin, end = now_utc() - timedelta(minutes=1), now_utc() + timedelta(hours=1)
            new = {"user_id": bob.uid, "start": begin.isoformat(), "end": end.isoformat()}
            path = f"/v1/schedules/{sid()}/overrides"
            override = self.api.post(path, token=ada.bearer, json=new, expect=201)
            expect_fields(override, {"schedule_id": sid()}, "override")
            expect_eq(override["user"]["id"], bob.uid, "override user")
            close_to(override["end"], end, 1, "end")
            self.ids["override"] = override["id"]
            query = {"at": (now_utc() + timedelta(minutes=5)).isoformat()}
            answer = self.api.get(f"/v1/schedules/{sid()}/on-call", token=bob.bearer, params=query)
            expect_eq([u["id"] for u in answer["users"]], [bob.uid], "on call during it")
        with self.check("GET /v1/schedules/{id}/overrides: the next 7 days", SCHEDULES):
            found = self.api.get(f"/v1/schedules/{sid()}/overrides", token=bob.bearer)
            overrides = [(o["id"], o["user"]["id"]) for o in found]
            expect_eq(overrides, [(self.id_of("override"), bob.uid)], "overrides")
        with self.check("GET /v1/oncall: every schedule and who is on call", SCHEDULES):
            query = {"at": (now_utc() + timedelta(minutes=5)).isoformat()}
            answer = self.api.get("/v1/oncall", token=carol.bearer, params=query)
            mine = [i for i in answer["items"] if i["schedule"]["id"] == sid()]
            expect_eq([[u["id"] for u in i["users"]] for i in mine], [[bob.uid]], "on call")
            expect_eq(mine[0]["schedule"]["name"], name, "schedule name")
        with self.check("DELETE /v1/schedules/{id}/overrides/{id}: 204, gone", SCHEDULES):
            path = f"/v1/schedules/{sid()}/overrides/{self.id_of('override')}"
            response = self.api.request("DELETE", path, token=ada.bearer, expect=204)
            expect_eq(response.content, b"", "the body of a 204")
            found = self.api.get(f"/v1/schedules/{sid()}/overrides", token=bob.bearer)
            expect_eq(found, [], "overrides")
            self.api.delete(path, token=ada.bearer, expect=404)
        with self.check("GET /v1/schedules/{id}/history: every change, oldest first", SCHEDULES):
            history = self.api.get(f"/v1/schedules/{sid()}/history", token=bob.bearer)
            types = [h["type"] for h in history]
            expect_eq(types, ["created", "updated", "override_added", "override_removed"], "types")
            actor = {"actor_id": ada.uid, "actor_name": ada.full_name}
            expect_fields(history[0], actor, "actor")
        with self.check("GET /v1/users/me/shifts: your shifts in every schedule", SCHEDULES):
            start = now_utc()
            window = {"start": start.isoformat(), "end": (start + timedelta(days=4)).isoformat()}
            items = self.api.get("/v1/users/me/shifts", token=carol.bearer, params=window)["items"]
            expect(items, "carol has no shifts in 4 days of a two-person daily rotation")
            expect(all(i["schedule"]["id"] == sid() for i in items), "another schedule's shift")
            for item in items:
                middle = max(parse_time(item["start"]), start) + timedelta(minutes=1)
                expect_eq(self.on_call_now(middle), carol.uid, f"on call from {item['start']}")

    def calendars(self) -> None:
        ada, bob, carol, dave = self.ada, self.bob, self.carol, self.dave

        def sid() -> int:
            return self.id_of("schedule")

        with self.check("POST /v1/schedules/{id}/calendar-url: a secret feed URL", SCHEDULES):
            self.api.post(f"/v1/schedules/{sid()}/calendar-url", token=bob.bearer, expect=403)
            url = self.api.post(f"/v1/schedules/{sid()}/calendar-url", token=ada.bearer)["url"]
            parts = urlsplit(url)
            expect_eq(f"{parts.scheme}://{parts.netloc}", self.api.base_url, "feed origin")
            expect_eq(parts.path, f"/v1/schedules/{sid()}/calendar.ics", "feed path")
            expect(parts.query.startswith("token="), f"feed URL {url}")
            self.texts["calendar token"] = parts.query.removeprefix("token=")
        with self.check("GET /v1/schedules/{id}/calendar.ics: an iCal feed of shifts", SCHEDULES):
            token = {"token": self.text("calendar token")}
            path = f"/v1/schedules/{sid()}/calendar.ics"
            feed = self.api.request("GET", path, params=token, expect=200)
            kind = feed.headers.get("content-type", "")
            expect(kind.startswith("text/calendar"), f"content type {kind}")
            calendar = Calendar.from_ical(feed.content)
            expect_eq(str(calendar.get("X-WR-CALNAME")), self.text("schedule"), "X-WR-CALNAME")
            events = list(calendar.walk("VEVENT"))
            expect(len(events) >= 60, f"{len(events)} daily shifts in 67 days")
            names = {str(e.get("SUMMARY")) for e in events}
            wanted = {f"On call: {carol.full_name}", f"On call: {dave.full_name}"}
            expect_eq(names, wanted, "summaries")
            ordered = all(e.decoded("DTSTART") < e.decoded("DTEND") for e in events)
            expect(ordered, "an event ends before it starts")
        with self.check("GET …/calendar.ics: no token or a retired one is 401", SCHEDULES):
            path = f"/v1/schedules/{sid()}/calendar.ics"
            old = self.text("calendar token")
            self.api.request("GET", path, expect=401)
            url = self.api.post(f"/v1/schedules/{sid()}/calendar-url", token=ada.bearer)["url"]
            self.api.request("GET", path, params={"token": old}, expect=401)
            self.texts["calendar token"] = new = urlsplit(url).query.removeprefix("token=")
            self.api.request("GET", path, params={"token": new}, expect=200)
        with self.check("POST /v1/users/me/calendar-url: your own feed", SCHEDULES):
            url = self.api.post("/v1/users/me/calendar-url", token=carol.bearer)["url"]
            parts = urlsplit(url)
            expect_eq(parts.path, f"/v1/users/{carol.uid}/calendar.ics", "feed path")
            self.texts["my calendar"] = f"{parts.path}?{parts.query}"
        with self.check("GET /v1/users/{id}/calendar.ics: your shifts as iCal", SCHEDULES):
            feed = self.api.request("GET", self.text("my calendar"), expect=200)
            calendar = Calendar.from_ical(feed.content)
            expect_eq(str(calendar.get("X-WR-CALNAME")), "My on-call shifts", "X-WR-CALNAME")
            summaries = {str(e.get("SUMMARY")) for e in calendar.walk("VEVENT")}
            expect_eq(summaries, {f"On call: {self.text('schedule')}"}, "summaries")
            path = f"/v1/users/{carol.uid}/calendar.ics"
            self.api.request("GET", path, params={"token": "nope"}, expect=401)

    def preferences(self) -> None:
        ada, bob, carol = self.ada, self.bob, self.carol
        mine = "/v1/notification-preferences/me"
        with self.check(
            "GET /v1/notification-preferences/me: a default per channel", NOTIFICATIONS
        ):
            answer = self.api.get(mine, token=carol.bearer)
            by_channel = {p["channel"]: p for p in answer["items"]}
            expect_eq(list(by_channel), ["email", "sms", "slack", "webhook"], "channels")
            expected: dict[str, Any] = {
                "enabled": True,
                "is_default": True,
                "effective_address": carol.email,
            }
            expected["events"] = ["escalated", "assigned"]
            expect_fields(by_channel["email"], expected, "email default")
            expected = {"enabled": False, "effective_address": "+15555550123"}
            expect_fields(by_channel["sms"], expected, "sms default (the profile's phone)")
            expect_eq(answer["next_cursor"], None, "next_cursor")
        with self.check("PUT /v1/notification-preferences/me/{channel}: store one", NOTIFICATIONS):
            change: dict[str, Any] = {
                "enabled": True,
                "address": "+1 (555) 123-4567",
                "min_severity": "critical",
            }
            change["events"] = ["escalated"]
            preference = self.api.put(f"{mine}/sms", token=carol.bearer, json=change)
            expected = {**change, "channel": "sms", "address": "+15551234567", "is_default": False}
            expect_fields(preference, expected, "preference (number normalised)")
        with self.check(
            "PUT …/me/{channel}: an address unfit for the channel is 422", NOTIFICATIONS
        ):
            bad_email = {"enabled": True, "address": "not-an-email"}
            self.api.put(f"{mine}/email", token=carol.bearer, json=bad_email, expect=422)
            no_url = {"enabled": True}
            self.api.put(f"{mine}/slack", token=carol.bearer, json=no_url, expect=422)
        with self.check("GET /v1/notification-preferences/{user_id}: admins only", NOTIFICATIONS):
            path = f"/v1/notification-preferences/{carol.uid}"
            items = self.api.get(path, token=ada.bearer)["items"]
            sms = next(p for p in items if p["channel"] == "sms")
            expect_fields(sms, {"address": "+15551234567", "is_default": False}, "carol's sms")
            self.api.get(path, token=bob.bearer, expect=403)
            self.api.get(f"/v1/notification-preferences/{bob.uid}", token=bob.bearer)
            self.api.get("/v1/notification-preferences/999999999", token=ada.bearer, expect=404)
        with self.check("PUT /v1/notification-preferences/{user_id}/{channel}", NOTIFICATIONS):
            path = f"/v1/notification-preferences/{carol.uid}/email"
            change = {"enabled": True, "address": None, "min_severity": "high"}
            change["events"] = ["escalated", "assigned", "acknowledged"]
            preference = self.api.put(path, token=ada.bearer, json=change)
            expected = {**change, "effective_address": carol.email, "is_default": False}
            expect_fields(preference, expected, "carol's email preference")
            self.api.put(path, token=bob.bearer, json={"enabled": False}, expect=403)

    def escalation(self) -> None:
        ada, bob, carol, run = self.ada, self.bob, self.carol, self.run
        label = {"e2e": f"escalate-{run}"}
        title = f"E2E checkout down {run}"
        policies = "/v1/escalation/policies"

        def pid() -> int:
            return self.id_of("policy")

        def p() -> int:
            return self.id_of("incident:P")

        with self.check(
            "POST /v1/escalation/policies/: two steps, the first after 1.2 s", ESCALATION
        ):
            first: list[dict[str, Any]] = [{"type": "notify"}, {"type": "assign"}]
            if self.local is not None:
                hook = self.local.receiver.url("/hooks/policy-step")
                first.append({"type": "webhook", "url": hook})
            second = [{"type": "notify"}, {"type": "set_severity", "severity": "critical"}]
            steps = [
                {"delay_minutes": 0.02, "targets": [{"type": "user", "id": carol.uid}]},
                {
                    "delay_minutes": 30,
                    "targets": [{"type": "schedule", "id": self.id_of("schedule")}],
                },
            ]
            steps[0]["actions"], steps[1]["actions"] = first, second
            conditions = {"labels": label, "severities": ["critical", "high"]}
            new: dict[str, Any] = {"name": f"E2E page {run}", "priority": 1, "repeat_count": 0}
            new |= {"conditions": conditions, "steps": steps}
            policy = self.api.post(f"{policies}/", token=ada.bearer, json=new, expect=201)
            expected: dict[str, Any] = {k: new[k] for k in ("name", "priority", "repeat_count")}
            expect_fields(policy, {**expected, "is_active": True}, "policy")
            expect_fields(policy["conditions"], conditions, "conditions")
            expect_eq(
                [s["targets"] for s in policy["steps"]], [s["targets"] for s in steps], "targets"
            )
            expect_eq([s["delay_minutes"] for s in policy["steps"]], [0.02, 30], "delays")
            self.ids["policy"] = policy["id"]
        with self.check("POST /v1/escalation/policies/: 422 naming what is wrong", ESCALATION):
            step = {"targets": [{"type": "user", "id": 999999999}]}
            bad: dict[str, Any] = {"name": f"bad {run}", "steps": [step]}
            expect_detail(
                self.api.post(f"{policies}/", token=ada.bearer, json=bad, expect=422), "999999999"
            )
            empty = {"name": f"empty {run}", "steps": []}
            self.api.post(f"{policies}/", token=ada.bearer, json=empty, expect=422)
            self.api.get(f"{policies}/", token=bob.bearer, expect=403)
        with self.check("GET /v1/escalation/policies/ and /{id}", ESCALATION):
            active = self.page(f"{policies}/", ada.bearer, is_active="true")
            expect(pid() in [x["id"] for x in active], "the policy is not listed")
            policy = self.api.get(f"{policies}/{pid()}", token=ada.bearer)
            expect_fields(policy, {"id": pid(), "name": f"E2E page {run}"}, "policy")
        with self.check(
            "PUT /v1/escalation/policies/{id}: only the given fields change", ESCALATION
        ):
            change: dict[str, Any] = {"description": "pages carol, then whoever is on call"}
            policy = self.api.put(f"{policies}/{pid()}", token=ada.bearer, json=change)
            expect_fields(policy, {**change, "priority": 1}, "policy")
            expect_eq(len(policy["steps"]), 2, "steps")
        with self.check("a matching incident starts the policy: step 1 scheduled", ESCALATION):
            policy_id, service_id = pid(), self.id_of(f"e2e-incidents-{run}")
            new = {"title": title, "severity": "high", "labels": label, "service_id": service_id}
            incident = self.api.post("/v1/incidents/", token=ada.bearer, json=new, expect=201)
            self.ids["incident:P"] = incident["id"]
            expected = {"escalation_policy_id": policy_id, "escalation_status": "active"}
            expect_fields(incident, expected, "incident")
            [event] = self.events(incident["id"])
            target = [{"type": "user", "id": carol.uid}]
            expected = {"step": 1, "cycle": 1, "policy_id": policy_id, "targets": target}
            expect_fields(event, expected, "escalation event")
            expect(event["status"] in ("scheduled", "executed"), f"status {event['status']}")
            delay = parse_time(event["due_at"]) - parse_time(incident["created_at"])
            expect(abs(delay.total_seconds() - 1.2) < 0.2, f"step 1 due {delay} after creation")
            types = [e["type"] for e in self.timeline(incident["id"])]
            expect("policy_applied" in types, f"timeline {types}")
        with self.check("the worker fires step 1 on time: carol paged and assigned", ESCALATION):

            def executed() -> dict[str, Any] | None:
                done = [e for e in self.events(p()) if e["step"] == 1]
                return done[0] if done and done[0]["status"] == "executed" else None

            event = poll("step 1 to be executed", executed, last=lambda: self.events(p()))
            expect_eq(event["notified_user_ids"], [carol.uid], "notified_user_ids")
            late = parse_time(event["executed_at"]) - parse_time(event["due_at"])
            expect(0 <= late.total_seconds() < 1.0, f"step 1 fired {late} after it was due")
            incident = self.incident(p())
            expect_eq(incident["escalation_level"], 1, "escalation_level")
            expect(carol.uid in [a["id"] for a in incident["assignees"]], "carol is not assigned")
            [step2] = [e for e in self.events(p()) if e["step"] == 2]
            expect_eq(step2["status"], "scheduled", "step 2")
            gap = parse_time(step2["due_at"]) - parse_time(event["due_at"])
            expect(abs(gap.total_seconds() - 1800) < 5, f"step 2 due {gap} after step 1")
            types = [e["type"] for e in self.timeline(p())]
            expect("escalated" in types, f"timeline {types}")
        with self.check("the page is in the delivery log, sent", NOTIFICATIONS):

            def page_row() -> dict[str, Any] | None:
                rows = self.page("/v1/notifications/", ada.bearer, incident_id=p(), channel="email")
                pages = [r for r in rows if r["user_id"] == carol.uid and r["event"] == "escalated"]
                final = ("sent", "failed", "cancelled") if self.local else ("pending", "sent")
                return pages[0] if pages and pages[0]["status"] in final else None

            row = poll("carol's page to be sent", page_row)
            self.ids["notification:page"] = row["id"]
            expect_fields(row, {"address": carol.email, "channel": "email"}, "page")
            expect(row["escalation_event_id"], "no escalation_event_id")
            one = self.api.get(f"/v1/notifications/{row['id']}", token=ada.bearer)
            expect_eq(one["id"], row["id"], "id")
            expect(f"#{p()}" in one["subject"] and title in one["subject"], one["subject"])
            if self.local is not None:
                expected = {"status": "sent", "last_error": None, "attempts": 1}
                expect_fields(one, expected, "delivery")
                expect(one["provider_message_id"] and one["sent_at"], "no message id or sent_at")
        with self.check("the page email reaches the SMTP server", NOTIFICATIONS):
            local = self.needs_local()
            mail = local.inbox.wait_for(
                f"carol's page for incident {p()}",
                lambda m, rcpt: carol.email in rcpt and f"PAGE #{p()}" in str(m["Subject"]),
            )
            expect_eq(str(mail["Subject"]), f"[HIGH] PAGE #{p()}: {title}", "Subject")
            expect_eq(str(mail["To"]), carol.email, "To")
            row = self.api.get(
                f"/v1/notifications/{self.id_of('notification:page')}", token=ada.bearer
            )
            expect_eq(str(mail["X-Notification-Id"]), str(row["id"]), "X-Notification-Id")
            message_id = str(mail["Message-ID"]).strip("<>")
            expect_eq(message_id, row["provider_message_id"], "Message-ID, kept as provider id")
            content = plain_text(mail)
            ack_url = f"{self.api.base_url}/v1/incidents/{p()}/acknowledge"
            expect(ack_url in content, f"no acknowledge link in the mail: {content[:300]}")
            expect(mail.get_body(preferencelist=("html",)) is not None, "no HTML part")
        with self.check("the step's webhook action is received, signed", ESCALATION):
            local = self.needs_local()
            request = local.receiver.wait_for(
                f"the policy step for incident {p()}",
                delivery_of("incident.escalated", p(), "/hooks/policy-step"),
            )
            payload = request.json()
            expect_fields(payload["incident"], {"title": title, "status": "triggered"}, "incident")
            expect_fields(payload["data"], {"step": 1, "policy_id": pid()}, "data")
            expect_eq(request.headers.get("x-event-id"), payload["id"], "X-Event-Id")
            verify_signed(request, local.signing_secret)
        with self.check(
            "POST /v1/incidents/{id}/escalate: step 2 now, to who is on call", INCIDENTS
        ):
            incident = self.act(p(), "escalate", token=bob.bearer)
            expected = {"escalation_level": 2, "severity": "critical"}
            expect_fields(incident, expected, "incident (step 2 sets the severity)")
            [step2] = [e for e in self.events(p()) if e["step"] == 2]
            expect_eq(step2["status"], "executed", "step 2")
            on_call = self.on_call_now(parse_time(step2["executed_at"]))
            expect_eq(step2["notified_user_ids"], [on_call], "paged on-call user")
            expect_detail(self.act(p(), "escalate", expect=409), "no step left")

    def delivery_log(self) -> None:
        ada, carol = self.ada, self.carol

        def p() -> int:
            return self.id_of("incident:P")

        with self.check(
            "GET /v1/notifications/: filter by status, channel, incident, user", NOTIFICATIONS
        ):
            rows = self.page("/v1/notifications/", ada.bearer, incident_id=p())
            expect(rows, "no notifications for the escalated incident")
            expect_eq([r["id"] for r in rows], sorted(r["id"] for r in rows), "oldest first")
            wanted = {
                "incident_id": p(),
                "channel": "email",
                "status": "sent",
                "user_id": carol.uid,
            }
            filtered = self.page("/v1/notifications/", ada.bearer, **wanted)
            expect(filtered, f"no row for {wanted}")
            for row in filtered:
                expect_fields(row, wanted, "a filtered row")
            if self.local is not None:
                hooks = [r for r in rows if r["channel"] == "webhook" and r["user_id"] is None]
                states = [(r["id"], r["status"]) for r in hooks]
                expect(hooks and all(r["status"] == "sent" for r in hooks), f"webhooks {states}")
        with self.check("a user sees only their own notifications", NOTIFICATIONS):
            # Bob joins the response, so the incident's log has a row of someone else's.
            self.act(p(), "assign", json={"user_id": self.bob.uid})
            own = self.page("/v1/notifications/", carol.bearer)
            expect(own and all(r["user_id"] == carol.uid for r in own), "someone else's row")
            params = {"user_id": ada.uid}
            self.api.get("/v1/notifications/", token=carol.bearer, params=params, expect=403)
            rows = self.page("/v1/notifications/", ada.bearer, incident_id=p())
            others = [r for r in rows if r["user_id"] == self.bob.uid]
            expect(others, "no notification to bob about the assignment")
            path = f"/v1/notifications/{others[0]['id']}"
            self.api.get(path, token=carol.bearer, expect=404)
        with self.check("GET /v1/incidents/{id}/notifications: a user's own rows", INCIDENTS):
            path = f"/v1/incidents/{p()}/notifications"
            visible = self.page(path, carol.bearer)
            expect(visible and all(r["user_id"] == carol.uid for r in visible), "others' rows")
            everything = self.page(path, ada.bearer)
            expect(len(everything) > len(visible), "an admin does not see every row")

    def analytics(self) -> None:
        """The report over this run's service, checked against what the API says of each of its
        incidents, their escalation steps and their pages."""
        ada, bob, carol, run = self.ada, self.bob, self.carol, self.run
        path = "/v1/analytics/incidents"

        def sid() -> int:
            return self.id_of(f"e2e-incidents-{run}")

        def expected(start: datetime, end: datetime) -> dict[str, Any]:
            """The figures worked out from the incidents, steps and pages themselves."""
            incidents = self.page("/v1/incidents/", ada.bearer, service_id=sid())
            incidents = [i for i in incidents if start <= parse_time(i["created_at"]) < end]
            severities = ("critical", "high", "medium", "low", "info")
            by_severity = {s: sum(i["severity"] == s for i in incidents) for s in severities}

            def times(field: str) -> dict[str, Any]:
                micros = sorted(
                    (parse_time(i[field]) - parse_time(i["created_at"]))
                    // timedelta(microseconds=1)
                    for i in incidents
                    if i[field]
                )
                if not micros:
                    return {"count": 0, "mean_seconds": None, "p90_seconds": None}
                rank = -(-9 * len(micros) // 10)  # nearest rank: ceil(0.9 × n)
                mean = round(sum(micros) / len(micros) / 1e6, 3)
                return {"count": len(micros), "mean_seconds": mean,
                        "p90_seconds": round(micros[rank - 1] / 1e6, 3)}  # fmt: skip

            steps = dict.fromkeys(("executed", "failed", "skipped"), 0)
            pages: dict[int, set[int]] = {}
            counts: dict[int, int] = {}
            for incident in incidents:
                for event in self.events(incident["id"]):
                    fired = event["executed_at"] and start <= parse_time(event["executed_at"]) < end
                    if fired and event["status"] in steps:
                        steps[event["status"]] += 1
                for row in self.page("/v1/notifications/", ada.bearer, incident_id=incident["id"]):
                    sent = row["sent_at"] and start <= parse_time(row["sent_at"]) < end
                    page = row["event"] == "escalated" and row["webhook_id"] is None
                    if sent and page and row["status"] == "sent" and row["user_id"] is not None:
                        counts[row["user_id"]] = counts.get(row["user_id"], 0) + 1
                        pages.setdefault(row["user_id"], set()).add(incident["id"])
            keys: dict[str, list[int]] = {}
            for incident in incidents:
                if incident["dedup_key"] is not None:
                    keys.setdefault(incident["dedup_key"], []).append(incident["alert_count"])
            alerts = sum(i["alert_count"] for i in incidents)
            ranked = sorted(keys.items(), key=lambda kv: (-len(kv[1]), -sum(kv[1]), kv[0]))
            return {
                "service_id": sid(),
                "incidents": {"total": len(incidents), "by_severity": by_severity},
                "time_to_acknowledge": times("acknowledged_at"),
                "time_to_resolve": times("resolved_at"),
                "escalation_steps": {"fired": sum(steps.values()), **steps},
                "pages": sorted(((-n, user), len(pages[user])) for user, n in counts.items()),
                "noisiest_services": [
                    {"service_id": sid(), "name": f"e2e-incidents-{run}",
                     "incidents": len(incidents), "alerts": alerts}
                ] if incidents else [],
                "noisiest_dedup_keys": [
                    {"service_id": sid(), "dedup_key": k, "incidents": len(v), "alerts": sum(v)}
                    for k, v in ranked[:10]
                ],
            }  # fmt: skip

        with self.check(
            "GET /v1/analytics/incidents: this run's service, figure by figure", ANALYTICS
        ):
            first = min(
                parse_time(i["created_at"])
                for i in self.page("/v1/incidents/", ada.bearer, service_id=sid())
            )
            start = first.replace(microsecond=0) - timedelta(minutes=1)
            end = now_utc().replace(microsecond=0) + timedelta(minutes=1)
            params = {"start": start.isoformat(), "end": end.isoformat(), "service_id": sid()}

            def agreed() -> tuple[dict[str, Any], dict[str, Any]] | None:
                # Step 2's page may still be on its way: ask until both sides have settled.
                report = self.api.get(path, token=bob.bearer, params=params)
                wanted = expected(start, end)
                users = report["pages_by_user"]
                seen = sorted(((-u["pages"], u["user_id"]), u["incidents"]) for u in users)
                return (report, wanted) if seen == wanted["pages"] else None

            report, wanted = poll("the report's pages to match the delivery log", agreed)
            expect_eq(parse_time(report["start"]), start, "start")
            expect_eq(parse_time(report["end"]), end, "end")
            for field in ("service_id", "incidents", "time_to_acknowledge", "time_to_resolve"):
                expect_eq(report[field], wanted[field], field)
            for field in ("escalation_steps", "noisiest_services", "noisiest_dedup_keys"):
                expect_eq(report[field], wanted[field], field)
            expect(report["incidents"]["total"] >= 2, "incidents A and P are not counted")
            expect(report["escalation_steps"]["executed"] >= 2, "P's two steps are not counted")
            names = {u["user_id"]: u["full_name"] for u in report["pages_by_user"]}
            expect_eq(names.get(carol.uid), carol.full_name, "carol's page, under her name")
            days = report["opened_by_day"]
            expect_eq(days[0]["date"], start.date().isoformat(), "first day")
            expect_eq(days[-1]["date"], (end - timedelta(microseconds=1)).date().isoformat(),
                      "last day")  # fmt: skip
            expect_eq(sum(d["total"] for d in days), report["incidents"]["total"], "days' sum")
        with self.check(
            "GET /v1/analytics/incidents: last 30 days by default; 422, 401", ANALYTICS
        ):
            report = self.api.get(path, token=bob.bearer)
            span = parse_time(report["end"]) - parse_time(report["start"])
            expect_eq(span, timedelta(days=30), "default range")
            expect(len(report["opened_by_day"]) in (30, 31), "a day per date of the range")
            backwards = {"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}
            answer = self.api.get(path, token=bob.bearer, params=backwards, expect=422)
            expect_detail(answer, "end must be after start")
            too_long = {"start": "2024-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}
            expect_detail(
                self.api.get(path, token=bob.bearer, params=too_long, expect=422), "366 days"
            )
            self.api.get(path, expect=401)

    def webhooks(self) -> None:
        ada, bob, run = self.ada, self.bob, self.run
        local = self.local
        url = local.receiver.url("/hooks/subscription") if local else None
        url = url or "http://127.0.0.1:9/hooks/subscription"  # loopback, even for a remote server

        def wid() -> int:
            return self.id_of("webhook")

        with self.check("POST /v1/webhooks/: subscribe; the secret is shown once", WEBHOOKS):
            new: dict[str, Any] = {
                "name": f"status page {run}",
                "url": url,
                "description": "e2e receiver",
            }
            new |= {"events": ["triggered", "acknowledged"], "enabled": True}
            hook = self.api.post("/v1/webhooks/", token=ada.bearer, json=new, expect=201)
            expect_fields(hook, new, "webhook")
            secret = str(hook.get("secret"))
            expect(secret.startswith("whsec_") and len(secret) > 40, f"secret {secret[:10]}…")
            expect(secret.startswith(hook["secret_prefix"]), "secret_prefix is not its start")
            self.ids["webhook"] = hook["id"]
            self.texts["secret"] = secret
        with self.check("POST /v1/webhooks/: a bad URL is 422; users are refused", WEBHOOKS):
            bad: dict[str, Any] = {
                "name": "bad",
                "url": "ftp://example.com/x",
                "events": ["triggered"],
            }
            expect_detail(
                self.api.post("/v1/webhooks/", token=ada.bearer, json=bad, expect=422), "url"
            )
            new = {**bad, "url": url}
            self.api.post("/v1/webhooks/", token=bob.bearer, json=new, expect=403)
            self.api.get("/v1/webhooks/", token=bob.bearer, expect=403)
        with self.check("GET /v1/webhooks/ and /{id}: only the secret's prefix", WEBHOOKS):
            listed = [h for h in self.page("/v1/webhooks/", ada.bearer) if h["id"] == wid()]
            expect(listed and "secret" not in listed[0], f"the list shows {listed}")
            hook = self.api.get(f"/v1/webhooks/{wid()}", token=ada.bearer)
            expect("secret" not in hook, "the secret is shown again")
            expect(self.text("secret").startswith(hook["secret_prefix"]), "secret_prefix")
        with self.check("POST /v1/webhooks/{id}/test: a signed ping is delivered", WEBHOOKS):
            queued = self.api.post(f"/v1/webhooks/{wid()}/test", token=ada.bearer, expect=202)
            expected: dict[str, Any] = {
                "channel": "webhook",
                "webhook_id": wid(),
                "event": "test",
                "address": url,
            }
            expect_fields(queued, expected, "queued delivery")
            local = self.needs_local()
            request = local.receiver.wait_for(
                "the ping",
                lambda r: json_body_matches(r, lambda b: b["event"] == "ping"),
            )
            payload = request.json()
            self.texts["ping"] = payload["id"]
            expected = {
                "incident": None,
                "data": {"webhook_id": wid(), "name": f"status page {run}"},
            }
            expect_fields(payload, expected, "ping")
            expect_eq(payload["actor"]["id"], ada.uid, "actor")
            expect_eq(request.headers.get("x-event-id"), payload["id"], "X-Event-Id")
            expect_eq(request.headers.get("content-type"), "application/json", "Content-Type")
            verify_signed(request, self.text("secret"))

            def logged() -> dict[str, Any] | None:
                row: dict[str, Any] = self.api.get(
                    f"/v1/notifications/{queued['id']}", token=ada.bearer
                )
                return row if row["status"] == "sent" else None

            expect_eq(poll("the ping to be logged as sent", logged)["last_error"], None, "error")
        with self.check("POST /v1/webhooks/{id}/rotate-secret: a new secret signs", WEBHOOKS):
            old = self.text("secret")
            rotated = self.api.post(f"/v1/webhooks/{wid()}/rotate-secret", token=ada.bearer)
            new_secret = str(rotated.get("secret"))
            expect(new_secret.startswith("whsec_") and new_secret != old, "the same secret")
            expect(new_secret.startswith(rotated["secret_prefix"]), "secret_prefix")
            self.texts["secret"] = new_secret
            self.api.post(f"/v1/webhooks/{wid()}/test", token=ada.bearer, expect=202)
            local = self.needs_local()
            first = self.text("ping")
            request = local.receiver.wait_for(
                "the second ping",
                lambda r: json_body_matches(r, lambda b: b["event"] == "ping" and b["id"] != first),
            )
            verify_signed(request, new_secret)
            expect(not signed_with(request, old), "the delivery verifies with the old secret")
        with self.check("incident events reach the subscription, signed", WEBHOOKS):
            local = self.needs_local()
            new = {"title": f"E2E webhook subscriber {run}", "severity": "low"}
            incident = self.api.post("/v1/incidents/", token=ada.bearer, json=new, expect=201)
            self.act(incident["id"], "acknowledge")
            actor = {"type": "user", "id": ada.uid, "name": ada.full_name}
            for event in ("incident.triggered", "incident.acknowledged"):
                matches = delivery_of(event, incident["id"], "/hooks/subscription")
                request = local.receiver.wait_for(f"{event} for {incident['id']}", matches)
                payload = request.json()
                expect_fields(payload["incident"], new, f"{event} incident")
                expect_eq(payload["actor"], actor, f"{event} actor")
                verify_signed(request, self.text("secret"))
        with self.check("PUT /v1/webhooks/{id}: only the given fields change", WEBHOOKS):
            change: dict[str, Any] = {
                "events": ["resolved"],
                "enabled": False,
                "name": f"status page v2 {run}",
            }
            hook = self.api.put(f"/v1/webhooks/{wid()}", token=ada.bearer, json=change)
            expect_fields(hook, {**change, "url": url}, "webhook")
        with self.check("DELETE /v1/webhooks/{id}: answers the subscription, then 404", WEBHOOKS):
            gone = self.api.delete(f"/v1/webhooks/{wid()}", token=ada.bearer)
            expect_eq(gone["id"], wid(), "deleted webhook")
            expect("secret" not in gone, "the deleted webhook shows its secret")
            self.api.get(f"/v1/webhooks/{wid()}", token=ada.bearer, expect=404)

    def metrics(self) -> None:
        with self.check("GET /metrics: the run's requests, incidents, steps and pages", HEALTH):
            response = self.api.request("GET", "/metrics", expect=200)
            expect(response.headers.get("content-type", "").startswith("text/plain"),
                   f"content type {response.headers.get('content-type')!r}")  # fmt: skip
            expect(response.headers.get("x-request-id"), "no X-Request-ID on the answer")
            totals: dict[str, float] = {}
            for line in response.text.splitlines():
                if line and not line.startswith("#"):
                    series, _, value = line.rpartition(" ")
                    name = series.partition("{")[0]
                    totals[name] = totals.get(name, 0.0) + float(value)
                    totals[series] = float(value)
            for name in ("ims_incidents_total", "ims_alerts_received_total",
                         "ims_escalation_steps_total", "ims_notifications_total",
                         "ims_escalation_step_lateness_seconds_count",
                         "ims_notification_delivery_seconds_count"):  # fmt: skip
                expect(totals.get(name, 0) > 0, f"{name} did not move")
            ack = (
                'ims_http_requests_total{method="POST",'
                'route="/v1/incidents/{incident_id}/acknowledge",status="200"}'
            )
            expect(totals.get(ack, 0) > 0, "no acknowledgement counted by its route template")
            expect('ims_worker_queue_depth{queue="escalation"}' in totals, "no queue depth")

    def no_secret_in_logs(self) -> None:
        with self.check("the server's log holds none of the run's secrets", LOGS):
            local = self.needs_local()
            log = local.server.log_path.read_text(errors="replace")
            expect(len(log.splitlines()) > 100, "the server's log is nearly empty")
            wanted = {secret for secret in self.api.secrets if len(secret) >= 8}
            expect(len(wanted) >= 10, f"only {len(wanted)} secrets were seen")
            leaked = sorted(secret[:6] + "…" for secret in wanted if secret in log)
            expect(not leaked, f"secrets in the log: {', '.join(leaked)}")

    def deletions(self) -> None:
        ada, bob, carol, dave, run = self.ada, self.bob, self.carol, self.dave, self.run

        def sid() -> int:
            return self.id_of("schedule")

        def pid() -> int:
            return self.id_of("policy")

        with self.check("DELETE /v1/escalation/policies/{id}: 409 while in use", ESCALATION):
            path = f"/v1/escalation/policies/{pid()}"
            incident_id = self.id_of("incident:P")
            answer = self.api.delete(path, token=ada.bearer, expect=409)
            expect_detail(answer, f"open incidents {incident_id}")
            self.act(incident_id, "resolve")
        with self.check("DELETE /v1/schedules/{id}: 409 while a policy pages it", SCHEDULES):
            answer = self.api.delete(f"/v1/schedules/{sid()}", token=ada.bearer, expect=409)
            expect_detail(answer, f"E2E page {run}")
        with self.check("DELETE /v1/users/{id}: 409 while in a schedule, then force", USERS):
            answer = self.api.delete(f"/v1/users/{carol.uid}", token=ada.bearer, expect=409)
            expect_detail(answer, f"schedule {sid()}", f"escalation policy {pid()}")
            forced = {"force": "true"}
            gone = self.api.delete(f"/v1/users/{carol.uid}", token=ada.bearer, params=forced)
            expect_fields(gone, {"id": carol.uid, "email": carol.email}, "deleted user")
            self.api.get(f"/v1/users/{carol.uid}", token=ada.bearer, expect=404)
            self.api.get("/v1/users/me", token=carol.bearer, expect=401)
            schedule = self.api.get(f"/v1/schedules/{sid()}", token=ada.bearer)
            expect_eq(schedule["layers"][0]["user_ids"], [dave.uid], "the layer after the removal")
            last = self.api.get(f"/v1/schedules/{sid()}/history", token=ada.bearer)[-1]
            expect_eq(
                (last["type"], last["data"].get("user_id")), ("user_removed", carol.uid), "history"
            )
            policy = self.api.get(f"/v1/escalation/policies/{pid()}", token=ada.bearer)
            expect_eq(policy["steps"][0]["targets"], [], "step 1 targets after the removal")
        with self.check("DELETE /v1/escalation/policies/{id}: the deleted policy", ESCALATION):
            gone = self.api.delete(f"/v1/escalation/policies/{pid()}", token=ada.bearer)
            expect_fields(gone, {"id": pid(), "name": f"E2E page {run}"}, "deleted policy")
            self.api.get(f"/v1/escalation/policies/{pid()}", token=ada.bearer, expect=404)
        with self.check(
            "DELETE /v1/schedules/{id}: the deleted schedule, its feed ends", SCHEDULES
        ):
            gone = self.api.delete(f"/v1/schedules/{sid()}", token=ada.bearer)
            expect_fields(gone, {"id": sid(), "name": self.text("schedule")}, "deleted schedule")
            self.api.get(f"/v1/schedules/{sid()}", token=ada.bearer, expect=404)
            token = {"token": self.texts.get("calendar token", "x")}
            self.api.request("GET", f"/v1/schedules/{sid()}/calendar.ics", params=token, expect=401)
        with self.check("DELETE /v1/services/{id}: 409 while incidents belong to it", SERVICES):
            service_id = self.id_of(f"e2e-incidents-{run}")
            self.api.delete(f"/v1/services/{service_id}", token=ada.bearer, expect=409)
            self.api.get(f"/v1/services/{service_id}", token=ada.bearer)
        with self.check("DELETE /v1/services/{id}: the deleted service, then 404", SERVICES):
            service_id = self.id_of(f"e2e-checkout-{run}")
            self.api.delete(f"/v1/services/{service_id}", token=bob.bearer, expect=403)
            gone = self.api.delete(f"/v1/services/{service_id}", token=ada.bearer)
            expect_fields(gone, {"id": service_id, "name": f"e2e-checkout-{run}"}, "deleted")
            self.api.get(f"/v1/services/{service_id}", token=ada.bearer, expect=404)
        with self.check("DELETE /v1/users/{id}: the deleted user; their token stops", USERS):
            gone = self.api.delete(f"/v1/users/{bob.uid}", token=ada.bearer)
            expect_fields(gone, {"id": bob.uid, "email": bob.email}, "deleted user")
            self.api.get("/v1/users/me", token=bob.bearer, expect=401)
            form = {"username": bob.email, "password": bob.password}
            self.api.post("/v1/auth/login/access-token", data=form, expect=401)
            expect_eq(
                self.api.delete(f"/v1/users/{dave.uid}", token=ada.bearer)["id"], dave.uid, "dave"
            )


# ---- orchestration -------------------------------------------------------------------------------


class Session:
    """Starts what the run needs (each step a `setup` check) and registers its teardown."""

    def __init__(
        self, args: argparse.Namespace, runner: Runner, stack: contextlib.ExitStack
    ) -> None:
        self.args, self.runner, self.stack = args, runner, stack
        self.tmp: Path | None = None
        self.server: ServerProcess | None = None
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
        inbox, receiver = Inbox(), Receiver()
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
                database = PostgresDatabase(requested)
                database.create()
                self.stack.callback(database.drop)
                database_url, self.database = database.url, f"PostgreSQL, {database.name}"
        else:
            database_url = requested or f"sqlite+aiosqlite:///{tmp / 'e2e.db'}"
            self.database = "SQLite" + ("" if requested else ", a temporary file")
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        signing_secret = secrets.token_urlsafe(32)
        env = {
            # A clean environment: nothing from the caller's shell (or a .env: the server runs in
            # the temporary directory) changes the settings under test.
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", str(tmp)),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "TMPDIR": str(tmp),
            "PYTHONPATH": str(REPO_ROOT),
            "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": database_url or "",
            "ENVIRONMENT": "development",  # signup open: the first account becomes admin
            "SECRET_KEY": secrets.token_urlsafe(48),
            "LOG_LEVEL": "INFO",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(inbox.port),
            "WORKER_IN_PROCESS": "true",
            "WORKER_POLL_INTERVAL_SECONDS": "0.2",
            "OUTBOUND_ALLOW_PRIVATE_NETWORKS": "true",
            "WEBHOOK_SIGNING_SECRET": signing_secret,
            "PUBLIC_BASE_URL": base_url,
        }
        self.server = server = ServerProcess(env=env, port=port, cwd=tmp)
        migrated = healthy = False
        with check("migrations: incident-management migrate", SETUP):
            need(database_url, "a database")
            output = server.migrate()
            expect("head" in output, f"migrate printed {output!r}")
            migrated = True
        with check("the server (uvicorn app.main:app) answers /health", SETUP):
            if not migrated:
                raise Blocked("the migrations did not run")
            if not inbox.port:
                raise Blocked("the SMTP server did not start")
            server.start()
            self.stack.callback(server.stop)
            expect_eq(server.wait_healthy().get("database"), "ok", "database")
            healthy = True
        if not healthy:
            return None
        self.local = Local(inbox, receiver, signing_secret, server)
        return base_url


def fetch_coverage(runner: Runner, api: Api) -> Coverage | None:
    """The operations to cover, from the server's own OpenAPI document."""
    coverage: Coverage | None = None
    with runner.check("GET /v1/openapi.json: the API's operations", DOCS):
        spec = api.get("/v1/openapi.json")
        expect(str(spec.get("openapi")).startswith("3."), f"openapi {spec.get('openapi')}")
        expect_eq(spec.get("info", {}).get("title"), PROJECT_NAME, "title")
        flows = spec["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]
        expect_eq(flows["password"]["tokenUrl"], "/v1/auth/login/access-token", "tokenUrl")
        coverage = Coverage(spec)
        expect(len(coverage.operations) > 50, f"only {len(coverage.operations)} operations")
    api.coverage = coverage
    return coverage


def summarise(
    runner: Runner,
    coverage: Coverage | None,
    duration: float,
    *,
    base_url: str | None,
    database: str,
) -> dict[str, Any]:
    """Print the summary; answer the JSON report."""
    passed, failed, skipped = (runner.count(s) for s in (PASSED, FAILED, SKIPPED))
    total = len(runner.results)
    rate = 100.0 * passed / (passed + failed) if passed + failed else 0.0
    groups: dict[str, dict[str, int]] = {}
    for result in runner.results:
        counts = groups.setdefault(result.group, {PASSED: 0, FAILED: 0, SKIPPED: 0})
        counts[result.status] += 1
    covered = coverage.by_group() if coverage else {}
    missing = coverage.missing() if coverage else []
    operations = len(coverage.operations) if coverage else 0
    called = operations - len(missing)
    percent = 100.0 * called / operations if operations else 0.0
    complete = coverage is not None and not missing
    ok = not failed and complete

    rule = "=" * 70
    lines = [
        "",
        rule,
        "END-TO-END TEST SUMMARY".center(70),
        rule,
        f"Target:        {base_url or 'not started'} ({database})",
        f"Total checks:  {total}",
        f"Passed:        {passed}",
        f"Failed:        {failed}",
        *([f"Skipped:       {skipped}"] if skipped else []),
        f"Duration:      {duration:.1f} s",
        f"Success rate:  {rate:.1f}%  (passed / (passed + failed))",
        "",
        "Checks per endpoint group:",
        f"  {'group':<15}{'checks':>7}{'passed':>8}{'failed':>8}{'skipped':>9}  operations called",
    ]
    for group in [*groups, *(g for g in covered if g not in groups)]:
        counts = groups.get(group, {PASSED: 0, FAILED: 0, SKIPPED: 0})
        calls = "{}/{}".format(*covered[group]) if group in covered else "-"
        lines.append(
            f"  {group:<15}{sum(counts.values()):>7}{counts[PASSED]:>8}{counts[FAILED]:>8}"
            f"{counts[SKIPPED]:>9}  {calls}"
        )
    lines.append("")
    if coverage is None:
        lines.append("Endpoint coverage: unknown (the OpenAPI document could not be read)")
    else:
        shown = f"{percent:.0f}" if complete or not called else f"{percent:.1f}"
        lines.append(f"Endpoint coverage: {called}/{operations} operations ({shown}%)")
        lines += [f"  NOT CALLED: {op.method} {op.template}  [{op.group}]" for op in missing]
    failures = [r for r in runner.results if r.status == FAILED]
    if failures:
        lines.append("\nFailed checks:")
        lines += [f"  [{r.group}] {r.name}\n      {r.error}" for r in failures]
    lines += ["", ("PASSED" if ok else "FAILED").center(70), rule]
    print("\n".join(lines), flush=True)

    counts_by_call = (
        {f"{m} {t}": n for (m, t), n in sorted(coverage.calls.items())} if coverage else {}
    )
    outside = coverage.outside.items() if coverage else []
    return {
        "ok": ok,
        "base_url": base_url,
        "database": database,
        "finished_at": now_utc().isoformat(),
        "totals": {
            "checks": total,
            "passed": passed,
            "failed": failed,
            "skipped": skipped,
            "duration_seconds": round(duration, 3),
            "success_rate_percent": round(rate, 2),
        },
        "groups": groups,
        "coverage": {
            "operations": operations,
            "called": called,
            "percent": round(percent, 2),
            "complete": complete,
            "missing": [f"{op.method} {op.template}" for op in missing],
            "calls": counts_by_call,
            "requests_outside_the_document": {f"{m} {p}": n for (m, p), n in sorted(outside)},
        },
        "checks": [
            {
                "name": r.name,
                "group": r.group,
                "status": r.status,
                "ok": r.status != FAILED,
                "error": r.error,
                "duration_seconds": round(r.duration, 4),
            }
            for r in runner.results
        ],
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="End-to-end tests of the Incident Management System over real HTTP. By "
        "default it starts an SMTP server, a webhook receiver and the API (after its "
        "migrations) on 127.0.0.1 with a fresh database, and stops them all at the end.",
        epilog="Exit status: 0 only when every check passed and every operation of "
        "/v1/openapi.json was called; 1 otherwise; 2 for bad arguments.",
    )
    parser.add_argument(
        "--base-url",
        help="test a server that is already running: nothing is started, and checks that need "
        "the local SMTP server or webhook receiver are reported as skipped (external server)",
    )
    parser.add_argument(
        "--database-url",
        help="default: a fresh SQLite file in a temporary directory. A PostgreSQL server URL "
        "such as postgresql://postgres@127.0.0.1:5432 gets a new database "
        "ims_e2e_<pid>_<random>, dropped at the end; a URL naming a database creates that one "
        "(it must not exist) and drops it at the end. Any other URL is used as it is.",
    )
    parser.add_argument(
        "--report",
        default="e2e-report.json",
        help="where to write the JSON report (default: e2e-report.json in the current directory)",
    )
    parser.add_argument(
        "--admin-email",
        default=os.environ.get("E2E_ADMIN_EMAIL"),
        help="with --base-url on a database that is not empty: an admin account to act as "
        "(default: $E2E_ADMIN_EMAIL)",
    )
    parser.add_argument(
        "--admin-password",
        default=os.environ.get("E2E_ADMIN_PASSWORD"),
        help="that admin's password (default: $E2E_ADMIN_PASSWORD)",
    )
    parser.add_argument(
        "--keep-temp",
        action="store_true",
        help="keep the temporary directory (SQLite file, server.log) for inspection",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="print every check")
    args = parser.parse_args(argv)
    if args.base_url and args.database_url:
        parser.error("--database-url applies only when the script starts the server")
    if args.base_url and urlsplit(args.base_url).scheme not in ("http", "https"):
        parser.error("--base-url must be an http(s) URL")
    if bool(args.admin_email) != bool(args.admin_password):
        parser.error("--admin-email and --admin-password go together")
    return args


def terminate_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every cleanup


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, terminate_on_signal)
    runner = Runner(verbose=args.verbose)
    started = time.monotonic()
    coverage: Coverage | None = None
    print("Incident Management System: end-to-end tests", flush=True)
    with contextlib.ExitStack() as stack:
        session = Session(args, runner, stack)
        base_url = session.start()
        if session.tmp is not None and (args.verbose or args.keep_temp):
            print(f"  temporary directory: {session.tmp}", flush=True)
        if base_url is not None:
            print(f"  target: {base_url} ({session.database})", flush=True)
            api = Api(base_url)
            stack.callback(api.close)
            coverage = fetch_coverage(runner, api)
            admin = (args.admin_email, args.admin_password) if args.admin_email else None
            Walk(runner, api, local=session.local, admin_login=admin).run_all()
        if runner.count(FAILED) and session.server is not None:
            print("\n--- the end of the server's log ---", file=sys.stderr)
            print(session.server.log_tail(), file=sys.stderr, flush=True)
    duration = time.monotonic() - started
    report = summarise(runner, coverage, duration, base_url=base_url, database=session.database)
    path = Path(args.report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"Report: {path.resolve()}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # everything started was stopped on the way out
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
