"""The published OpenAPI document, every field described, and its two readers: Swagger UI at
/docs and ReDoc at /redoc, served with their files from the app itself (no CDN).

Field meanings are written once here, by field name (with a few per-schema overrides), and filled
into any schema property that has no description of its own. FastAPI's own schemas (validation
errors, the OAuth2 form) keep theirs.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.dependencies.models import Dependant
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.responses import FileResponse, HTMLResponse, Response
from swagger_ui_bundle import swagger_ui_path

from app.alerts.sources import KINDS, SOURCES
from app.auth.dependencies import get_admin_user
from app.core.security_headers import docs_policy
from app.escalation.enums import EscalationStatus
from app.incidents.timeline import EntryType

FIELDS: dict[str, str] = {
    "id": "Numeric id",
    "access_token": "Bearer token to send as `Authorization: Bearer …`",
    "token_type": "Always `bearer`",
    "email": "Email address (unique, case-insensitive; stored lower-case)",
    "full_name": "Display name",
    "password": "Password, 8–128 characters",
    "current_password": "Your current password, to confirm the change",
    "new_password": "The new password, 8–128 characters",
    "token": "The password reset token from the recovery email",
    "role": "Account role: `admin` or `user`",
    "is_active": "Inactive accounts (or services, policies) are kept but not used",
    "phone": "Phone number in E.164 form, e.g. +4915112345678",
    "timezone": "IANA time zone, e.g. Europe/Berlin",
    "created_at": "When it was created (ISO 8601, UTC)",
    "updated_at": "When it last changed (ISO 8601, UTC)",
    "message": "A human-readable outcome",
    "items": "This page of results",
    "name": "Name",
    "description": "Free text",
    "escalation_policy_id": "Escalation policy id (for a service: its default policy)",
    "title": "Short summary, 1–500 characters",
    "status": "Current status",
    "severity": "`critical`, `high`, `medium`, `low` or `info`",
    "service_id": "The service it belongs to, or null",
    "service": "A service name; the service is created if none has it",
    "source": "Where it came from: `api` or an alert source",
    "dedup_key": "Deduplication key: an open incident with the same key and service is reused",
    "alert_count": "How many alerts were folded into it",
    "labels": "String labels, at most 64 pairs",
    "custom_fields": "Any JSON object up to 16 KiB",
    "assignees": "The people assigned, with their part in the response",
    "escalation_level": "The last escalation step fired (0 before the first)",
    "created_by": "Id of the user who opened it (null for alerts and the system)",
    "acknowledged_at": "When it was acknowledged, or null",
    "acknowledged_by": "Id of the user who acknowledged it, or null",
    "resolved_at": "When it was resolved, or null",
    "resolved_by": "Id of the user who resolved it, or null",
    "snoozed_until": "When a snooze ends (then it is triggered again), or null",
    "version": "Change counter; send it back (or `If-Match`) to update only what you read",
    "assigned_at": "When the person was assigned",
    "note": "A note kept in the timeline entry",
    "minutes": "Snooze length in minutes (1–10,080)",
    "hours": "Snooze length in hours (1–168)",
    "until": "End of the snooze: an ISO 8601 time with offset, within 7 days",
    "user_ids": "The whole set of assignees (user ids); [] unassigns everyone",
    "user_id": "A user id",
    "content": "Comment text (Markdown), 1–10,000 characters",
    "author": "Who wrote it: id (null once the account is deleted) and name",
    "incident_id": "The incident it belongs to",
    "type": "Kind",
    "actor": "Who did it: `user`, `integration` or `system`, with id and name",
    "data": "Details of the change (for `updated`: each field's before and after)",
    "priority": "Among matching policies the lowest priority wins",
    "repeat_count": "How many more times the steps run after the first pass (0–10)",
    "repeat_delay_minutes": "Minutes after the last step before a repeat starts at step 1",
    "conditions": "Which incidents the policy applies to; empty matches every incident",
    "steps": "Ordered steps (1–20)",
    "severities": "Matches incidents with any of these severities",
    "service_ids": "Matches incidents of any of these services",
    "title_contains": "Matches incidents whose title contains this text (any case)",
    "delay_minutes": "Minutes after the previous step (fractions allowed: 0.05 is 3 s)",
    "targets": "Whom the step pages: users (schedules later)",
    "actions": "What the step does: notify, assign, webhook, set_severity",
    "url": "http(s) URL that receives a JSON POST",
    "policy_id": "The policy the step came from",
    "run": "Which escalation run: each return to triggered starts a new one",
    "step": "Step number, from 1",
    "cycle": "Pass through the steps, from 1 (repeats add passes)",
    "due_at": "When the step is (or was) due",
    "executed_at": "When it fired (or failed), or null",
    "notified_user_ids": "The users it paged",
    "detail": "How late it fired, what it skipped, or why it was cancelled or failed",
    "escalation_status": ", ".join(f"`{status.value}`" for status in EscalationStatus),
    "response_role": "Their part in the response (the `role` given when assigning)",
    "expires_in": "Seconds until the token expires",
    "next_cursor": "Pass as `cursor` for the next page; null on the last page",
    "database": "`ok`, or `error` when the database cannot be reached",
    "docs": "Path of the interactive API docs",
    "redoc": "Path of the ReDoc API docs",
    "openapi": "Path of this OpenAPI document",
    "health": "Path of the health check",
    "webhook_id": "The webhook subscription it was sent for, or null",
    "escalation_event_id": "The escalation step that sent it, or null",
    "channel": "`email`, `sms`, `slack`, `webhook` (or `log` in development)",
    "address": "Where it goes: email address, phone number or URL",
    "event": "What it is about: triggered, escalated, acknowledged, resolved, …",
    "subject": "Subject line (or a one-line summary for channels without one)",
    "attempts": "Delivery attempts so far",
    "next_attempt_at": "When the next attempt is due (while pending)",
    "last_error": "The last attempt's error, or null",
    "provider_message_id": "The provider's message id (SMTP Message-ID, Twilio SID), or null",
    "sent_at": "When the provider accepted it, or null",
    "enabled": "Off: nothing is sent",
    "events": "The incident events it is for",
    "kind": "The alert source: " + ", ".join(f"`{kind}` ({SOURCES[kind].name})" for kind in KINDS),
    "key_prefix": "The key's first characters, to tell keys apart",
    "rotated_at": "When the key was last replaced, or null",
    "at": "The instant asked about (ISO 8601, UTC)",
    "rotation_length": "How many units each turn lasts",
    "rotation_unit": "`hours`, `days` or `weeks` (wall-clock: a daily 09:00 handoff stays 09:00)",
    "restrictions": "When the layer is on duty (days and a local time window); empty: always",
    "start": "Start (ISO 8601, UTC)",
    "end": "End, exclusive (ISO 8601, UTC)",
    "schedule": "The schedule (id and name)",
    "schedule_id": "The schedule it belongs to",
    "user": "The user",
    "users": "Whoever is on call (empty: nobody)",
    "time_zone": "IANA time zone of the schedule's wall-clock times, e.g. Europe/Berlin",
    "layers": "Rotations in order; later layers win where they have someone",
    "actor_id": "The user who made the change, or null",
    "actor_name": "Who made the change",
    # The analytics report (app/analytics).
    "critical": "Incidents of severity `critical`",
    "high": "Incidents of severity `high`",
    "medium": "Incidents of severity `medium`",
    "low": "Incidents of severity `low`",
    "info": "Incidents of severity `info`",
    "by_severity": "Incidents per severity (the severity each has now)",
    "date": "The UTC date",
    "mean_seconds": "Mean duration in seconds (to the millisecond), or null when count is 0",
    "p90_seconds": "90th percentile in seconds, nearest-rank: the ceil(0.9 × count)-th smallest "
    "duration; null when count is 0",
    "opened_by_day": "Incidents created on each UTC date the range touches, oldest first, "
    "zeros included",
    "time_to_acknowledge": "acknowledged_at − created_at over the incidents that have been "
    "acknowledged",
    "time_to_resolve": "resolved_at − created_at over the incidents that are resolved",
    "escalation_steps": "Escalation steps that fired in the range (by executed_at), by outcome",
    "fired": "Every step that fired: executed + failed + skipped",
    "executed": "Steps that ran",
    "failed": "Steps that failed",
    "skipped": "Steps that fired but had nothing to do (e.g. nobody on call)",
    "pages_by_user": "Pages sent in the range (by sent_at) per user, most first (at most 100)",
    "pages": "Pages sent to the user (one per message: two channels make two)",
    "noisiest_services": "The 10 services with the most incidents (then alerts)",
    "noisiest_dedup_keys": "The 10 (service, dedup key) pairs with the most incidents "
    "(then alerts)",
}

# Where a name means something more specific in one schema.
OVERRIDES: dict[tuple[str, str], str] = {
    ("LayerRead", "start"): "Local wall-clock time of the first handoff, in the schedule's zone",
    ("IncidentRead", "status"): "`triggered`, `acknowledged`, `snoozed` or `resolved`",
    (
        "EscalationEventRead",
        "status",
    ): "`scheduled`, `executed`, `cancelled`, `failed` or `skipped`",
    ("Health", "status"): "`ok`, or `error` when the database cannot be reached",
    ("Readiness", "status"): "`ok` when every check below is `ok` (or the worker `off`)",
    ("Readiness", "migrations"): "`ok`: the schema is this code's newest migration; `behind`: "
    "run `incident-management migrate`; `unknown`: a revision this code does not know, or the "
    "database cannot be asked",
    ("Readiness", "worker"): "`ok`: the in-process worker finished a pass in the last 30 s; "
    "`stalled`: it has not; `off`: it runs elsewhere (`incident-management worker`)",
    ("Root", "name"): "Name of the service",
    ("Root", "version"): "Version of the running service",
    ("Health", "version"): "Version of the running service",
    ("Target", "type"): "`user`, or `schedule` (whoever is on call when the step fires)",
    ("Target", "id"): "The user's (or schedule's) id",
    ("TimelineEntryRead", "type"): "What happened: "
    + "; ".join(f"`{kind.value}`: {kind.description}" for kind in EntryType),
    ("TimelineEntryRead", "request_id"): "The `X-Request-ID` of the API request that caused this "
    "entry (for the worker's entries, the request that started the escalation run); null for "
    "entries older than request ids",
    ("Actor", "type"): "`user`, `integration` or `system`",
    ("Actor", "id"): "The user's id, or null for the system",
    ("Actor", "name"): "Name shown for the actor",
    ("Author", "id"): "The author's user id, or null once the account is deleted",
    ("Author", "name"): "The author's name when they wrote it",
    ("UserRead", "role"): "Account role: `admin` or `user`",
    ("AssigneeRead", "role"): "Account role: `admin` or `user`",
    ("AssignBody", "role"): "With `user_id`: their part in the response (default `responder`)",
    ("AssignBody", "user_id"): "One person to add (or whose part to change)",
    ("WebhookPayload", "id"): "The event's id (e.g. `timeline:42`): the same on every retry",
    ("WebhookPayload", "event"): "`incident.<event>` (triggered, escalated, …), or `ping`",
    ("WebhookPayload", "created_at"): "When the event happened",
    ("WebhookPayload", "incident"): "The incident as it was then (null for `ping`)",
    ("WebhookPayload", "actor"): "Who made the change (null when the system did)",
    ("WebhookPayload", "data"): "The event's details (as in the incident timeline)",
    ("WebhookIncident", "status"): "`triggered`, `acknowledged`, `snoozed` or `resolved`",
    ("WebhookIncident", "service_name"): "The service's name, or null",
    ("WebhookActor", "type"): "`user`, `integration` or `system`",
    ("WebhookActor", "id"): "The user's id, or null",
    ("WebhookActor", "name"): "Name shown for the actor",
    ("IntegrationRead", "service_id"): "The service its alerts open incidents on",
    ("NotificationRead", "status"): "`pending`, `sending`, `sent`, `failed` or `cancelled`",
    ("NotificationRead", "user_id"): "The user it went to, or null (webhooks, policy actions)",
    ("NotificationRead", "incident_id"): "The incident it is about, or null",
    ("NotificationRead", "channel"): (
        "`email`, `sms`, `voice` (a phone call), `slack`, `webhook` (or `log` in development)"
    ),
    ("NotificationRead", "receipt"): (
        "The provider's last status report after sending (Twilio: an SMS's `sent`, `delivered`, "
        "`undelivered`…; a call's `ringing`, `completed`, `busy`, `no-answer`…), or null"
    ),
    ("NotificationRead", "receipt_at"): "When that report came, or null",
    ("NotificationRead", "provider_error"): (
        "The provider's error code from its report (Twilio's `ErrorCode`, e.g. 30003), or null"
    ),
    ("WebhookCreate", "url"): "https URL that receives signed JSON POSTs",
    ("WebhookUpdate", "url"): "https URL that receives signed JSON POSTs",
    ("WebhookRead", "url"): "https URL that receives signed JSON POSTs",
    ("WebhookCreated", "url"): "https URL that receives signed JSON POSTs",
    ("PreferenceUpdate", "enabled"): "Off: nothing is sent on this channel",
    ("PreferenceUpdate", "min_severity"): "Only incidents at least this severe (default `info`)",
    ("PreferenceUpdate", "events"): "The incident events to be told about",
    ("IncidentAnalytics", "start"): "Start of the range, inclusive (ISO 8601, UTC)",
    ("IncidentAnalytics", "end"): "End of the range, exclusive (ISO 8601, UTC)",
    ("IncidentAnalytics", "service_id"): "The service the report is limited to, or null",
    ("IncidentAnalytics", "incidents"): "Incidents created in the range",
    ("IncidentTotals", "total"): "Incidents created in the range",
    ("DayCounts", "total"): "Incidents created that day (within the range)",
    ("ResponseTime", "count"): "How many incidents the figures are over",
    ("UserPages", "user_id"): "The user paged",
    ("UserPages", "full_name"): "The user's name",
    ("UserPages", "incidents"): "Distinct incidents they were paged for",
    ("ServiceNoise", "service_id"): "The service",
    ("ServiceNoise", "name"): "The service's name",
    ("ServiceNoise", "incidents"): "Incidents created on it in the range",
    ("ServiceNoise", "alerts"): "Alerts folded into those incidents (sum of alert_count)",
    ("DedupKeyNoise", "service_id"): "The service of the incidents, or null",
    ("DedupKeyNoise", "dedup_key"): "The deduplication key",
    ("DedupKeyNoise", "incidents"): "Incidents opened with this key in the range",
    ("DedupKeyNoise", "alerts"): "Alerts folded into those incidents (sum of alert_count)",
}

# Schemas FastAPI generates itself.
FRAMEWORK_SCHEMAS = ("HTTPValidationError", "ValidationError", "Body_")


def document_fields(schema: dict[str, Any]) -> dict[str, Any]:
    for name, component in schema.get("components", {}).get("schemas", {}).items():
        if name.startswith(FRAMEWORK_SCHEMAS):
            continue
        for prop, spec in component.get("properties", {}).items():
            if "description" in spec:
                continue
            text = OVERRIDES.get((name, prop)) or FIELDS.get(prop)
            if text is not None:
                spec["description"] = text
    return schema


# The error shape every 4xx shares, and the answers that every operation of a kind can give: the
# dependencies, middleware and parsers behind them are common, so they are documented here once
# rather than on each route (a route's own `responses=` text wins where it has one).
ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "properties": {
        "detail": {
            "title": "Detail",
            "description": "What was wrong: a message, or (for invalid fields) a list of errors",
        }
    },
    "required": ["detail"],
}
ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
COMMON: dict[str, str] = {
    "400": "A body that cannot be read (not UTF-8 text)",
    "401": "Missing, invalid or expired token",
    "403": "Admin role required",
    # Any change by a signed-in caller: the policy may refuse it (app/auth/policy.py).
    "403 write": "Not allowed: the role it needs (admin, or the team's manager or responder: "
    "docs/teams.md), or sent with a read-only API key",
    "404": "No such object",
    "413": "Body too large",
}
HTTP_METHODS = ("get", "put", "post", "delete", "patch")


def _requires_admin(dependant: Dependant) -> bool:
    return any(sub.call is get_admin_user or _requires_admin(sub) for sub in dependant.dependencies)


def _admin_operations(app: FastAPI) -> set[tuple[str, str]]:
    """(path, method) of every operation that depends on the admin role."""
    found: set[tuple[str, str]] = set()
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and _requires_admin(route.dependant):
            found.update((str(context.path_format), m.lower()) for m in context.methods or ())
    return found


def _not_null(parameter: dict[str, Any]) -> None:
    """An optional query or header parameter is absent, never null: FastAPI documents
    `str | None` as "string or null", and a client (or a fuzzer) reading that sends `null`."""
    spec = parameter.get("schema", {})
    kinds = spec.get("anyOf")
    if parameter.get("in") in ("query", "header") and isinstance(kinds, list):
        rest = [kind for kind in kinds if kind != {"type": "null"}]
        if len(rest) == 1 and len(rest) < len(kinds):
            del spec["anyOf"]
            spec.update(rest[0])


def document_errors(schema: dict[str, Any], *, admin: set[tuple[str, str]]) -> dict[str, Any]:
    """Add the common error answers to every operation that can give them, each with the error
    schema; let a 422 carry either FastAPI's field errors or one message (a rule the fields
    cannot show, such as an unknown id in the body or an invalid cursor)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR_SCHEMA
    validation = components.get("HTTPValidationError")
    if validation is not None:
        fields = validation["properties"]["detail"]
        validation["properties"]["detail"] = {
            "title": "Detail",
            "description": "The invalid fields, or one message naming the rule that was broken",
            "anyOf": [{k: v for k, v in fields.items() if k != "title"}, {"type": "string"}],
        }
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            for parameter in operation.get("parameters", []):
                _not_null(parameter)
            codes: list[str] = []
            if operation.get("security"):
                codes.append("401")
            if (path, method) in admin:
                codes.append("403")
            elif operation.get("security") and method != "get":
                codes.append("403 write")
            if any(
                p["in"] == "path" and p["name"].endswith("_id")
                for p in operation.get("parameters", [])
            ):
                codes.append("404")
            if "requestBody" in operation:
                codes += ["400", "413"]
            responses = operation.setdefault("responses", {})
            for code in codes:
                responses.setdefault(code.split()[0], {"description": COMMON[code]})
            for code, response in responses.items():
                if code.startswith("4") and code != "422" and "content" not in response:
                    response["content"] = ERROR_CONTENT
    return schema


# The readers' files, each under a name that carries its version (so it can be cached for good):
# Swagger UI from the pinned PyPI package swagger-ui-bundle-v2, ReDoc's one file vendored from
# npm (app/vendor/redoc-<version>/README.md says where from and how to update it).
SWAGGER_UI = Path(str(swagger_ui_path))  # …/vendor/swagger-ui-<version>
REDOC = Path(__file__).parent / "vendor" / "redoc-2.5.4"
DOCS_ASSETS = "/docs/assets"
JS = "text/javascript; charset=utf-8"
ASSETS: dict[str, tuple[Path, str]] = {
    f"{SWAGGER_UI.name}/swagger-ui-bundle.js": (SWAGGER_UI / "swagger-ui-bundle.js", JS),
    f"{SWAGGER_UI.name}/swagger-ui.css": (SWAGGER_UI / "swagger-ui.css", "text/css; charset=utf-8"),
    f"{SWAGGER_UI.name}/favicon-32x32.png": (SWAGGER_UI / "favicon-32x32.png", "image/png"),
    f"{REDOC.name}/redoc.standalone.js": (REDOC / "redoc.standalone.js", JS),
}
SWAGGER_JS, SWAGGER_CSS, FAVICON, REDOC_JS = (f"{DOCS_ASSETS}/{name}" for name in ASSETS)
# Swagger UI's default sends the document's URL to validator.swagger.io for a badge: not here.
SWAGGER_DEFAULTS: dict[str, Any] = {"validatorUrl": None}

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)
_INLINE_STYLE = re.compile(r"<style>(.*?)</style>", re.DOTALL)


def _digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@dataclass(frozen=True)
class DocsPage:
    """A docs page, made once, and the Content-Security-Policy it is served with."""

    body: bytes
    policy: str

    @classmethod
    def of(cls, page: HTMLResponse, *, redoc: bool = False) -> DocsPage:
        """The page's own inline scripts and styles may run (named by digest), nothing else
        inline, and it loads from this origin only."""
        body = bytes(page.body)
        html = body.decode()
        policy = docs_policy(
            scripts=[_digest(s) for s in _INLINE_SCRIPT.findall(html)],
            styles=[_digest(s) for s in _INLINE_STYLE.findall(html)],
            redoc=redoc,
        )
        return cls(body, policy)

    def response(self) -> HTMLResponse:
        return HTMLResponse(self.body, headers={"Content-Security-Policy": self.policy})


def install_docs(app: FastAPI, *, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """/docs (Swagger UI), its OAuth2 redirect page, /redoc, and their files under /docs/assets/."""
    openapi_url = app.openapi_url or ""
    redirect_url = f"{docs_url}/oauth2-redirect"
    swagger = DocsPage.of(
        get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=redirect_url,
            swagger_js_url=SWAGGER_JS,
            swagger_css_url=SWAGGER_CSS,
            swagger_favicon_url=FAVICON,
            swagger_ui_parameters=SWAGGER_DEFAULTS | (app.swagger_ui_parameters or {}),
        )
    )
    redirect = DocsPage.of(get_swagger_ui_oauth2_redirect_html())
    redoc = DocsPage.of(
        get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=REDOC_JS,
            redoc_favicon_url=FAVICON,
            with_google_fonts=False,
        ),
        redoc=True,
    )

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui() -> Response:
        return swagger.response()

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> Response:
        return redirect.response()

    @app.get(redoc_url, include_in_schema=False)
    async def redoc_page() -> Response:
        return redoc.response()

    @app.get(DOCS_ASSETS + "/{name:path}", include_in_schema=False)
    async def docs_asset(name: str) -> Response:
        found = ASSETS.get(name)
        if found is None:
            raise HTTPException(status_code=404)
        path, media_type = found
        # The name carries the version: a new version is a new URL.
        cache = "public, max-age=31536000, immutable"
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": cache})


def install(app: FastAPI) -> None:
    install_docs(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                webhooks=app.webhooks.routes,
            )
            admin = _admin_operations(app)
            app.openapi_schema = document_errors(document_fields(schema), admin=admin)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
