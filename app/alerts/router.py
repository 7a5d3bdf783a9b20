"""Alerts in: one endpoint per source, authenticated by an integration key, not a user token.

The key comes as `Authorization: Bearer KEY`, `X-Integration-Key: KEY` or `?key=KEY`
(PagerDuty's `/v2/enqueue` takes it as the event's `routing_key`). A key works only on the
endpoint of its integration's kind. Bodies are at most 64 KiB (413 above, before parsing).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from app.alerts.batch import Batcher
from app.alerts.ingest import Alert, Result
from app.alerts.sources import alertmanager, elastic, generic, pagerduty
from app.core.body_guard import check_json
from app.core.errors import BadRequest, Forbidden, Unauthorized, Unprocessable
from app.core.ratelimit import TooManyRequests

router = APIRouter(tags=["alerts"])
v2 = APIRouter(prefix="/v2", tags=["alerts"])

Responses = dict[int | str, dict[str, Any]]
KEYED: Responses = {
    400: {"description": "Malformed JSON"},
    401: {"description": "No key, or an unknown one"},
    403: {"description": "The key belongs to another kind of integration"},
    413: {"description": "Body over 64 KiB"},
    422: {"description": "The body does not fit the source's format (the detail says where)"},
    429: {"description": "Over the integration key's rate limit: wait the `Retry-After` seconds"},
}
INCIDENTS_ANSWER = {
    "type": "object",
    "properties": {
        "incidents": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"id": {"type": ["integer", "null"]}, "status": {"type": "string"}},
            },
        }
    },
}


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic model's JSON schema with its `$defs` written in place (OpenAPI has no `$defs`)."""
    definitions = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(definitions[ref.removeprefix("#/$defs/")])
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    result: dict[str, Any] = walk(schema)
    return result


def _body_schema(schema: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema, "example": example}},
        }
    }


def _decoded(body: bytes) -> Any:
    problem = check_json(body) if body else "The body is empty"
    if problem:
        raise BadRequest(problem)
    try:
        return json.loads(body)
    except ValueError as exc:
        raise BadRequest(f"Malformed JSON: {exc}") from exc


def _key(request: Request) -> str:
    authorization = request.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("x-integration-key") or request.query_params.get("key") or ""


def _batcher(request: Request) -> Batcher:
    batcher: Batcher = request.app.state.alert_batcher
    return batcher


async def _receive(
    request: Request, *, kind: str, parse: Callable[[Any], list[Alert]]
) -> list[Result]:
    """Authenticate, read, parse (a body that does not fit is a 422) and ingest every alert,
    in that order; the key is checked and the body parsed in the batch (see `app.alerts.batch`).
    """
    body = await request.body()

    def parsed() -> list[Alert]:
        try:
            return parse(_decoded(body))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise Unprocessable(f"{where}: {first['msg']}") from exc
        except ValueError as exc:
            raise Unprocessable(str(exc)) from exc

    return await _batcher(request).submit(_key(request), kind, parsed)


def _incidents(results: list[Result]) -> dict[str, Any]:
    return {"incidents": [{"id": r.incident_id, "status": r.outcome} for r in results]}


@router.post(
    "/alerts/alertmanager",
    status_code=status.HTTP_202_ACCEPTED,
    responses=KEYED | {202: {"content": {"application/json": {"schema": INCIDENTS_ANSWER}}}},
    openapi_extra=_body_schema(
        {"type": "object", "required": ["alerts"],
         "properties": {"alerts": {"type": "array", "items": {"type": "object"}},
                        "truncatedAlerts": {"type": "integer"}}},
        {"version": "4", "status": "firing", "truncatedAlerts": 0,
         "alerts": [{"status": "firing", "fingerprint": "ceb2e74bf3eee4ae",
                     "labels": {"alertname": "DiskSpaceLow", "severity": "critical"},
                     "annotations": {"summary": "Disk almost full on db-1"}}]},
    ),
)  # fmt: skip
async def alertmanager_webhook(
    request: Request,
) -> object:
    """Prometheus Alertmanager's webhook (version 4): one incident per alert fingerprint."""
    results = await _receive(request, kind="alertmanager", parse=_envelope_alerts)
    return _incidents(results)


@router.post(
    "/alerts/grafana",
    status_code=status.HTTP_202_ACCEPTED,
    responses=KEYED | {202: {"content": {"application/json": {"schema": INCIDENTS_ANSWER}}}},
    openapi_extra=_body_schema(
        {"type": "object", "required": ["alerts"],
         "properties": {"alerts": {"type": "array", "items": {"type": "object"}}}},
        {"version": "1", "status": "firing",
         "alerts": [{"status": "firing", "fingerprint": "a1b2c3", "labels": {"alertname": "CPU"},
                     "annotations": {"summary": "CPU high"}}]},
    ),
)  # fmt: skip
async def grafana_webhook(
    request: Request,
) -> object:
    """Grafana unified alerting's webhook contact point: one incident per alert fingerprint."""
    results = await _receive(request, kind="grafana", parse=_envelope_alerts)
    return _incidents(results)


def _envelope_alerts(body: Any) -> list[Alert]:
    """Alertmanager's (and Grafana's) alerts, each noting how many the sender left out."""
    alerts, truncated = alertmanager.parse(body)
    if truncated:
        for alert in alerts:
            alert.raw = {**alert.raw, "truncated_alerts": truncated}
    return alerts


@router.post(
    "/alerts/generic",
    status_code=status.HTTP_202_ACCEPTED,
    responses=KEYED | {202: {"content": {"application/json": {"schema": INCIDENTS_ANSWER}}}},
    openapi_extra=_body_schema(
        _inline(generic.GenericAlert.model_json_schema()),
        {"summary": "Queue backlog over 10,000", "severity": "high", "dedup_key": "queue-backlog",
         "status": "firing", "labels": {"queue": "emails"}, "details": {"depth": 12000}},
    ),
)  # fmt: skip
async def generic_alert(
    request: Request,
) -> object:
    """A simple JSON alert (or `{"alerts": [...]}`); `status: resolved` resolves its incident."""
    results = await _receive(request, kind="generic", parse=generic.parse)
    return _incidents(results)


ELASTIC_ANSWER = {
    "type": "object",
    "properties": {
        "status": {"type": "string"},
        "incident_id": {"type": ["integer", "null"]},
        "message": {"type": "string"},
    },
}
MESSAGES = {
    "incident_created": "Incident created",
    "incident_updated": "Alert added to the open incident",
    "incident_reopened": "Incident reopened",
    "incident_resolved": "Incident resolved",
    "incident_acknowledged": "Incident acknowledged",
    "no_changes": "No open incident for this alert; nothing to do",
}


@router.post(
    "/alerts/elastic",
    responses=KEYED
    | {
        200: {"description": "An existing incident changed, or nothing to do",
              "content": {"application/json": {"schema": ELASTIC_ANSWER}}},
        201: {"description": "An incident was opened",
              "content": {"application/json": {"schema": ELASTIC_ANSWER}}},
    },
    openapi_extra=_body_schema(
        _inline(elastic.ElasticAlert.model_json_schema()),
        {"alert_name": "High error rate", "message": "checkout 5xx at 12%", "severity": "critical",
         "service": {"name": "checkout-api", "environment": "production"},
         "alert_id": "apm-rule-42-checkout", "state": {"state": "active"}},
    ),
)  # fmt: skip
async def elastic_alert(
    request: Request,
) -> JSONResponse:
    """Elastic APM / Kibana rule actions (webhook connector); the dedup key is `alert_id`."""
    [result] = await _receive(request, kind="elastic", parse=lambda body: [elastic.parse(body)])
    code = status.HTTP_201_CREATED if result.outcome == "incident_created" else status.HTTP_200_OK
    # The contract's four names: a reopen or acknowledge is an update.
    renamed = {"incident_reopened": "incident_updated", "incident_acknowledged": "incident_updated"}
    status_name = renamed.get(result.outcome, result.outcome)
    return JSONResponse(
        {"status": status_name, "incident_id": result.incident_id,
         "message": MESSAGES[result.outcome]},
        status_code=code,
    )  # fmt: skip


PAGERDUTY_ANSWER = {
    "type": "object",
    "properties": {
        "status": {"type": "string"},
        "message": {"type": "string"},
        "dedup_key": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "string"}},
    },
}


_TEXT = {"type": "string", "pattern": r"\S"}  # not blank
# What `app.alerts.sources.pagerduty.parse` accepts, as JSON Schema: a trigger needs a payload
# (summary, source, severity); acknowledge and resolve need a dedup_key; other actions ignore the
# payload, so its rules live in the trigger's branch only.
PAGERDUTY_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["routing_key", "event_action"],
    "properties": {
        "routing_key": _TEXT,
        "event_action": {"type": "string", "enum": list(pagerduty.ACTIONS)},
        "dedup_key": {"type": ["string", "null"], "maxLength": pagerduty.MAX_DEDUP_KEY},
        "payload": {},
        "links": {"type": "array"},
        "images": {"type": "array"},
    },
    "allOf": [
        {"if": {"properties": {"event_action": {"const": "trigger"}}},
         "then": {"required": ["payload"], "properties": {"payload": {
             "type": "object", "required": ["summary", "source", "severity"],
             "properties": {
                 "summary": _TEXT | {"maxLength": pagerduty.MAX_SUMMARY},
                 "source": _TEXT,
                 "severity": {"type": "string", "enum": list(pagerduty.SEVERITY)},
                 "timestamp": {"type": "string", "description": "ISO 8601"},
                 "component": {"type": "string"}, "group": {"type": "string"},
                 "class": {"type": "string"},
             },
         }}}},
        {"if": {"properties": {"event_action": {"enum": ["acknowledge", "resolve"]}}},
         "then": {"required": ["dedup_key"], "properties": {"dedup_key": _TEXT}}},
    ],
}  # fmt: skip


def pagerduty_invalid(message: str, errors: list[str], code: int = 400) -> JSONResponse:
    return JSONResponse(
        {"status": "invalid event", "message": message, "errors": errors}, status_code=code
    )


@v2.post(
    "/enqueue",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        202: {"content": {"application/json": {"schema": PAGERDUTY_ANSWER}}},
        400: {"description": "Invalid event (PagerDuty's answer: status, message, errors)",
              "content": {"application/json": {"schema": PAGERDUTY_ANSWER}}},
        413: {"description": "Body over 64 KiB"},
        429: {"description": "Over the routing key's rate limit (PagerDuty's `throttle event`): "
                             "wait the `Retry-After` seconds",
              "content": {"application/json": {"schema": PAGERDUTY_ANSWER}}},
    },
    openapi_extra=_body_schema(
        PAGERDUTY_EVENT,
        {"routing_key": "your-integration-key", "event_action": "trigger",
         "payload": {"summary": "Disk almost full on db-1", "source": "db-1",
                     "severity": "critical"}},
    ),
)  # fmt: skip
async def pagerduty_enqueue(
    request: Request,
) -> JSONResponse:
    """PagerDuty Events API v2: trigger, acknowledge or resolve by `dedup_key`."""
    raw = await request.body()
    problem = check_json(raw) if raw else "The body is empty"
    if problem:
        return pagerduty_invalid("Event object is invalid", [problem])
    try:
        event = json.loads(raw)
    except ValueError as exc:
        return pagerduty_invalid("Event object is invalid", [f"Malformed JSON: {exc}"])
    try:
        routing_key, alert = pagerduty.parse(event)
    except pagerduty.InvalidEvent as exc:
        return pagerduty_invalid("Event object is invalid", exc.errors)
    try:
        await _batcher(request).submit(routing_key, "pagerduty", lambda: [alert])
    except (Unauthorized, Forbidden):
        return pagerduty_invalid("Event object is invalid", ["Invalid routing key"])
    except TooManyRequests as exc:
        return JSONResponse(
            {"status": "throttle event", "message": str(exc.detail), "errors": []},
            status_code=status.HTTP_429_TOO_MANY_REQUESTS, headers=exc.headers,
        )  # fmt: skip
    return JSONResponse(
        {"status": "success", "message": "Event processed", "dedup_key": alert.dedup_key},
        status_code=status.HTTP_202_ACCEPTED,
    )
