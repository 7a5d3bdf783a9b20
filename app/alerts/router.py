"""Alerts in: one endpoint per alert source (app/alerts/sources/), authenticated by an
integration key, not a user token.

The key comes as `Authorization: Bearer KEY`, `X-Integration-Key: KEY` or `?key=KEY` (or in the
body, for a source that says so: PagerDuty's routing_key). A key works only on the endpoint of
its integration's kind. Bodies are at most 64 KiB (413 above, before parsing). Requests that
arrive together are ingested in one transaction (app.core.batching, app.flows.ingest).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from app.alerts.alert import Alert
from app.alerts.source import Responses, Source
from app.alerts.sources import SOURCES
from app.core.body_guard import check_json
from app.core.errors import BadRequest, DomainError, Unprocessable
from app.flows.ingest import AlertBatcher

KEYED: Responses = {
    400: {"description": "Malformed JSON"},
    401: {"description": "No key, or an unknown one"},
    403: {"description": "The key belongs to another kind of integration"},
    413: {"description": "Body over 64 KiB"},
    422: {"description": "The body does not fit the source's format (the detail says where)"},
    429: {"description": "Over the integration key's rate limit: wait the `Retry-After` seconds"},
}


def _decoded(body: bytes) -> Any:
    problem = check_json(body) if body else "The body is empty"
    if problem:
        raise BadRequest(problem)
    try:
        return json.loads(body)
    except ValueError as exc:
        raise BadRequest(f"Malformed JSON: {exc}") from exc


def _parsed(source: Source, body: Any) -> list[Alert]:
    """The source's alerts; a body that does not fit is a 422 saying where."""
    try:
        return source.parse(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise Unprocessable(f"{where}: {first['msg']}") from exc


def _key(request: Request) -> str:
    authorization = request.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("x-integration-key") or request.query_params.get("key") or ""


def _batcher(request: Request) -> AlertBatcher:
    batcher: AlertBatcher = request.app.state.alert_batcher
    return batcher


def endpoint(source: Source) -> Any:
    """The endpoint of one source: authenticate, read, parse (a body that does not fit is a
    422), ingest every alert, answer in the source's shape."""

    async def receive(request: Request) -> JSONResponse:
        raw = await request.body()
        try:
            if source.key_in_body is not None:
                # The key is in the body: the body is read and checked first.
                body = _decoded(raw)
                try:
                    alerts = source.parse(body)
                except ValueError as exc:
                    refused = source.answer.refuse(exc)
                    if refused is None:
                        raise Unprocessable(str(exc)) from exc
                    return refused
                key, parse = source.key_in_body(body), lambda: alerts
            else:

                def parse() -> list[Alert]:
                    try:
                        return _parsed(source, _decoded(raw))
                    except ValueError as exc:
                        raise Unprocessable(str(exc)) from exc

                key = _key(request)
            results = await _batcher(request).alerts(key, source.kind, parse)
        except DomainError as exc:
            refused = source.answer.refuse(exc)
            if refused is None:
                raise
            return refused
        return source.answer.answer(results)

    receive.__name__ = f"{source.kind}_alerts"
    receive.__doc__ = source.summary
    return receive


def install(app: FastAPI) -> None:
    """One POST endpoint per registered source (matched first: they are the busiest routes)."""
    router = APIRouter(tags=["alerts"])
    # Routes are matched one after another, each at a cost: a source with a path of its own
    # (PagerDuty's /v2/enqueue, the busiest sender) first, then /v1/alerts/<kind> by kind.
    for source in sorted(SOURCES.values(), key=lambda s: (s.path is None, s.kind)):
        # A source keyed in the body answers every refusal in its own shape.
        shared = {} if source.key_in_body else KEYED
        responses = shared | source.answer.responses
        router.add_api_route(
            source.endpoint,
            endpoint(source),
            methods=["POST"],
            status_code=source.answer.status_code,
            response_class=JSONResponse,
            responses=responses,
            summary=source.name,
            description=source.summary,
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": source.schema, "example": source.example}
                    },
                }
            },
        )
    app.include_router(router)
