"""Log set-up: one JSON object a line in production, readable text in development.

Every line says which request it belongs to. A request's id (its `X-Request-ID`, or one made for
it; see `app.core.observe`) is kept in a context variable for as long as the request is handled, and
is stored with what the request writes: timeline entries, escalation steps, notifications. The
worker, acting later on those rows, logs with the id of the request that caused the work, so one
`request_id` finds the API's line, the timeline entries and the worker's lines of an incident.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from app.core.actors import SYSTEM, Actor
from app.core.config import Settings
from app.core.text import escape_controls

# Secrets may come in the query string (integration keys as `?key=…` for senders that cannot set
# a header; a recovery token and new password in the original API's reset form): the servers'
# access logs print request lines, so they are masked there.
SECRET_IN_QUERY = re.compile(
    r"([?&](?:key|token|routing_key|new_password|password)=)[^&\s\"]+", re.IGNORECASE
)

# Secrets in a path: the signed token of a page email's one-click link (`/v1/actions/<token>`)
# acts as its recipient until it is used or expires.
SECRET_IN_PATH = re.compile(r"(/v1/actions/)[^/?\s\"]+")


def redact(text: str) -> str:
    """`text` (a request line, a path or a URL) with the secrets it may carry masked."""
    return SECRET_IN_PATH.sub(r"\1[redacted]", SECRET_IN_QUERY.sub(r"\1[redacted]", text))


@dataclass
class RequestInfo:
    """What the log lines of one request share; the auth dependency fills in the user (and the
    actor that the audit log names), the middleware the address the request came from."""

    id: str
    user_id: int | None = None
    route: str | None = None
    actor: Actor | None = None
    source: str | None = None


REQUEST: ContextVar[RequestInfo | None] = ContextVar("request", default=None)
# Who acts outside a request (or in a request nobody signed in to): the worker, a CLI command.
ACTING: ContextVar[Actor | None] = ContextVar("acting", default=None)


def current_request_id() -> str | None:
    info = REQUEST.get()
    return info.id if info is not None else None


def current_actor() -> Actor:
    """Who the changes written now are made by: the request's signed-in user, else whoever
    `acting_as` names (the worker, a CLI command), else the system."""
    info = REQUEST.get()
    if info is not None and info.actor is not None:
        return info.actor
    return ACTING.get() or SYSTEM


def current_source() -> str | None:
    """The address the current request came from (None outside a request)."""
    info = REQUEST.get()
    return info.source if info is not None else None


def name_actor(actor: Actor) -> None:
    """Name the request's signed-in user: in its log lines and as the actor of what it changes."""
    info = REQUEST.get()
    if info is not None:
        info.user_id = actor.user_id
        info.actor = actor


@contextmanager
def acting_as(actor: Actor) -> Iterator[None]:
    """Changes made in this block (outside a request's signed-in user) are made by `actor`."""
    token = ACTING.set(actor)
    try:
        yield
    finally:
        ACTING.reset(token)


@contextmanager
def acting_for(request_id: str | None) -> Iterator[None]:
    """Log (and write rows) on behalf of the request `request_id`, e.g. an alert's request while
    a batch ingests it, or the request that scheduled the step the worker fires."""
    token = REQUEST.set(RequestInfo(request_id) if request_id else None)
    try:
        yield
    finally:
        REQUEST.reset(token)


class RequestContext(logging.Filter):
    """Adds the current request's id and user to every record (unless the call gave its own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        info = REQUEST.get()
        if info is not None:
            if getattr(record, "request_id", None) is None:
                record.request_id = info.id
            if getattr(record, "user_id", None) is None and info.user_id is not None:
                record.user_id = info.user_id
        return True


class RedactQuerySecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str) and ("=" in record.msg or "/v1/actions/" in record.msg):
            record.msg = redact(record.msg)
        return True


# Record attributes every LogRecord has: anything else was given with `extra=`. uvicorn gives
# each of its lines a copy of the message with terminal colour codes (`color_message`), for its
# own formatter: never written here.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
# The servers log their start, stop and failures under `uvicorn.error` and `gunicorn.error`
# (their error logs, in their words): written under the server's name, so that
# "Application startup complete" does not read as an error.
SERVER_NAMES = {"uvicorn.error": "uvicorn", "gunicorn.error": "gunicorn"}


def _renamed(record: logging.LogRecord) -> logging.LogRecord:
    """The record with its server's name, as a copy: other handlers see it unchanged."""
    name = SERVER_NAMES.get(record.name)
    if name is None:
        return record
    copy = logging.makeLogRecord(vars(record))
    copy.name = name
    return copy


class Json(JsonFormatter):
    """`{"time", "level", "logger", "message", "pid", "request_id", …extras}`: one object a line."""

    def __init__(self) -> None:
        super().__init__(
            ["levelname", "name", "message", "process"],
            rename_fields={"levelname": "level", "name": "logger", "process": "pid"},
            timestamp="time",
            reserved_attrs=sorted(_STANDARD),
        )

    def format(self, record: logging.LogRecord) -> str:
        return super().format(_renamed(record))

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in log_data.items() if value is not None}


class Text(logging.Formatter):
    """`time [pid] LEVEL logger: message [key=value …]`, the extras sorted: one line a record,
    whatever the message and extras hold (control characters escaped), then the traceback."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return super().format(_renamed(record))

    def formatMessage(self, record: logging.LogRecord) -> str:
        head = escape_controls(super().formatMessage(record))
        extras = sorted(
            (k, v) for k, v in vars(record).items() if k not in _STANDARD and v is not None
        )
        if not extras:
            return head
        return head + " [" + " ".join(f"{k}={escape_controls(str(v))}" for k, v in extras) + "]"


def redact_access_log() -> None:
    """Mask keys in the access log of uvicorn (and of gunicorn with uvicorn workers). Idempotent."""
    for name in ("uvicorn.access", "gunicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactQuerySecrets) for f in logger.filters):
            logger.addFilter(RedactQuerySecrets())


# httpx logs every request's full URL at INFO: a Slack webhook's URL is its secret, and other
# receivers' URLs may carry tokens. Deliveries log their own outcome, without the URL.
# alembic says which dialect it found and each step it runs, dozens of lines on a first start:
# `serve` and `migrate` say the revision reached instead.
QUIET_LOGGERS = ("httpx", "httpcore", "alembic")
# The servers' own loggers: their lines go through the same handler (and format) as ours.
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "gunicorn.error")
# The app writes its own access line (`app.access`: route, status, duration, user, request id).
SERVER_ACCESS_LOGGERS = ("uvicorn.access", "gunicorn.access")


def handler(settings: Settings) -> logging.Handler:
    out = logging.StreamHandler(sys.stderr)
    out.setFormatter(Json() if settings.json_logs else Text())
    out.addFilter(RequestContext())
    out.addFilter(RedactQuerySecrets())
    out._ims = True  # type: ignore[attr-defined]  # ours: replaced, never doubled, on a re-run
    return out


def configure_logging(settings: Settings) -> None:
    """Send every log line (ours, uvicorn's, gunicorn's) through one handler in the chosen format.
    Idempotent: it replaces the handler it added before and leaves others (pytest's) alone."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_ims", False)]:
        root.removeHandler(old)
    root.addHandler(handler(settings))
    root.setLevel(settings.log_level)
    logging.getLogger("app").setLevel(settings.log_level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    for name in SERVER_LOGGERS:
        server = logging.getLogger(name)
        server.handlers.clear()
        server.propagate = True
    for name in SERVER_ACCESS_LOGGERS:
        access = logging.getLogger(name)
        access.handlers.clear()
        access.propagate = False
