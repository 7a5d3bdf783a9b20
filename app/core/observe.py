"""Every request gets an id, an access log line and its HTTP metrics.

The id is the request's `X-Request-ID` when it is a sensible one (1-64 characters of letters,
digits and `._:+=/@-`; a proxy's or a client's id then follows the request through), or a new
one. It is returned in the response's `X-Request-ID`, carried by every log line written while the
request is handled, and stored with the rows it writes (see `app.core.logging`).

Routes are named by their template (`/v1/incidents/{incident_id}`), so the metrics' label values
are bounded; a path no route matches is `unmatched`.
"""

from __future__ import annotations

import functools
import logging
import re
import time
import uuid
from typing import Any

from fastapi.routing import RouteContext, iter_route_contexts
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import metrics
from app.core.errors import internal_error
from app.core.logging import REQUEST, RequestInfo, redact

access_log = logging.getLogger("app.access")

REQUEST_ID_HEADER = "X-Request-ID"
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+=/@-]{1,64}")
UNMATCHED = "unmatched"
# A label value per method HTTP defines that anyone uses; whatever else a client sends is `other`.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def request_id_of(given: str | None) -> str:
    if given is not None and VALID_REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


class RouteRecorder:
    """Innermost: notes which route template answered.

    The router puts the route it chose in the scope (which an outer middleware may have copied,
    so it is read here). A route of an included router knows only its own part of the path: the
    whole template is the one FastAPI keeps in the scope for the route it chose, or else (another
    FastAPI version) the one of the application's route contexts, listed once (that listing costs
    about 0.1 s per application, which each test's application would pay)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._templates: dict[int, list[RouteContext]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            info = REQUEST.get()
            route = scope.get("route")
            if info is not None and route is not None:
                info.route = self._template(scope, route)

    def _template(self, scope: Scope, route: object) -> str | None:
        chosen = scope.get("fastapi", {})
        chosen = chosen.get("effective_route_context") if isinstance(chosen, dict) else None
        template = getattr(chosen, "path_format", None)
        if isinstance(template, str) and getattr(chosen, "original_route", None) is route:
            return template
        if self._templates is None:
            self._templates = {}
            for context in iter_route_contexts(scope["app"].routes):
                self._templates.setdefault(id(context.original_route), []).append(context)
        contexts = self._templates.get(id(route), [])
        if len(contexts) == 1:
            return contexts[0].path_format
        for context in contexts:  # one route included at several places: the one that matched
            if context.path_regex.match(scope["path"]):
                return context.path_format
        return getattr(route, "path_format", None)


class RequestObserver:
    """Outermost: the request id, the access line, the request count and latency."""

    def __init__(self, app: ASGIApp, *, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        info = RequestInfo(
            request_id_of(Headers(scope=scope).get(REQUEST_ID_HEADER)), source=_client(scope)
        )
        token = REQUEST.set(info)
        began = time.perf_counter()
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = info.id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if started:
                raise  # the answer has begun: nothing else can be sent
            # Answered here, not by Starlette's outermost handler: the 500 gets its request id,
            # and the traceback's log line too (the id is still in context).
            await internal_error(scope["method"], scope["path"])(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - began
            route = info.route or UNMATCHED
            method = scope["method"] if scope["method"] in METHODS else "other"
            count, latency = _series(route, method, status)
            count.inc()
            latency.observe(elapsed)
            if self.access_log and access_log.isEnabledFor(logging.INFO):
                path = redact(scope["path"])
                access_log.info(
                    "%s %s %d %.1f ms", method, path, status, elapsed * 1000,
                    extra={"method": method, "route": route, "path": path,
                           "status": status, "duration_ms": round(elapsed * 1000, 2),
                           "client": _client(scope)},
                )  # fmt: skip
            REQUEST.reset(token)


@functools.cache
def _series(route: str, method: str, status: int) -> tuple[Any, Any]:
    """The request counter and latency histogram of one label set, found once (prometheus-client's
    `labels()` was the largest cost this middleware added to a request). Label sets are few:
    route templates, seven methods and `other`, the statuses the app answers."""
    return (
        metrics.HTTP_REQUESTS.labels(route, method, str(status)),
        metrics.HTTP_LATENCY.labels(route, method),
    )


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None
