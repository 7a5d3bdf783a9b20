"""Domain errors carry their HTTP status; one handler renders them as `{"detail": …}`."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc

from app.core.db import DatabaseUnavailable, is_unavailable

logger = logging.getLogger(__name__)


# What a 503 asks clients to wait before trying again (the database is restarting, or failing
# over): long enough not to hammer it, short enough that monitoring's alerts are not held up.
RETRY_AFTER_SECONDS = 5
UNAVAILABLE = "The database is unavailable right now; try again shortly"


class DomainError(Exception):
    status_code = 400
    headers: dict[str, str] | None = None

    def __init__(self, detail: Any) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(DomainError):
    status_code = 400


class Unauthorized(DomainError):
    status_code = 401
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(DomainError):
    status_code = 403


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    status_code = 409


class Gone(DomainError):
    status_code = 410


class Unprocessable(DomainError):
    """A well-formed body that names something that does not exist or cannot be used."""

    status_code = 422


def _safe(value: Any, depth: int = 0) -> Any:
    """A JSON-safe, short rendering of what a client sent, for echoing in a 422."""
    if value is None or isinstance(value, bool | int):
        return value if not isinstance(value, int) or abs(value) < 2**63 else str(value)[:40]
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        text = value.encode("utf-8", "replace").decode("utf-8")
        return text if len(text) <= 200 else text[:200] + "…"
    if depth < 3 and isinstance(value, list | tuple):
        return [_safe(v, depth + 1) for v in value[:10]]
    if depth < 3 and isinstance(value, dict):
        return {_safe(str(k)): _safe(v, depth + 1) for k, v in list(value.items())[:10]}
    return f"<{type(value).__name__}>"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "type": error.get("type"),
                "loc": [_safe(part) for part in error.get("loc", ())],
                "msg": _safe(error.get("msg")),
                **({"input": _safe(error["input"])} if "input" in error else {}),
            }
            for error in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(DomainError)
    async def _domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    # Handlers are chosen by the exception's class: these cover a refused or lost connection
    # (DatabaseUnavailable, a DBAPIError about the connection) and a full pool (TimeoutError);
    # any other database error is a bug, answered like any other.
    @app.exception_handler(DatabaseUnavailable)
    @app.exception_handler(sa_exc.DBAPIError)
    @app.exception_handler(sa_exc.TimeoutError)
    async def _database_error(request: Request, exc: Exception) -> JSONResponse:
        if not is_unavailable(exc):
            return await _unexpected(request, exc)
        logger.warning(
            "database unavailable on %s %s: %s",
            request.method, request.url.path, str(exc).splitlines()[0][:300],
        )  # fmt: skip
        return unavailable_response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return internal_error(request.method, request.url.path)


def internal_error(method: str, path: str) -> JSONResponse:
    """Log the exception being handled (with its traceback) and answer a bare 500: no detail of
    it reaches the client. Called from an `except` block."""
    logger.exception("unhandled error on %s %s", method, path)
    return JSONResponse({"detail": "Internal server error"}, status_code=500)


def unavailable_response() -> JSONResponse:
    return JSONResponse(
        {"detail": UNAVAILABLE},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
