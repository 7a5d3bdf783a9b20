"""What an alert source declares: one module under app/alerts/sources/ each.

A source names its integration kind (its key works only on its endpoint), turns the decoded JSON
body into alerts with one uniform `parse`, and says how its endpoint answers. The registry
(`app.alerts.sources`) collects every module's `SOURCE`; the router registers one endpoint per
source, and the integrations' kinds, the console's services page and the API's OpenAPI document
all read the same list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import status
from fastapi.responses import JSONResponse

from app.alerts.alert import Alert, Result
from app.incidents.models import Severity

Responses = dict[int | str, dict[str, Any]]
KEY_HINT = "Send the key in the X-Integration-Key header, as Authorization: Bearer, or as ?key=."


class Answer(Protocol):
    """How a source's endpoint answers: its success, and refusals in its own shape."""

    status_code: int  # of a success, as documented (an answer may choose another, e.g. 201)
    responses: Responses  # OpenAPI: the answers besides the errors every alert endpoint shares

    def answer(self, results: list[Result]) -> JSONResponse:
        """The answer once the alerts are stored (one result per alert, in order)."""
        ...

    def refuse(self, error: Exception) -> JSONResponse | None:
        """A refusal in the source's own shape, or None for the API's usual `{"detail"}`."""
        ...


INCIDENTS_SCHEMA = {
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


class IncidentsAnswer:
    """202 `{"incidents": [{"id", "status"}, …]}`: one item per alert, in order."""

    status_code = status.HTTP_202_ACCEPTED
    responses: Responses = {202: {"content": {"application/json": {"schema": INCIDENTS_SCHEMA}}}}

    def answer(self, results: list[Result]) -> JSONResponse:
        body = {"incidents": [{"id": r.incident_id, "status": r.outcome} for r in results]}
        return JSONResponse(body, status_code=self.status_code)

    def refuse(self, error: Exception) -> JSONResponse | None:
        return None


INCIDENTS = IncidentsAnswer()


@dataclass(frozen=True)
class Source:
    kind: str  # the integration kind; the endpoint is /v1/alerts/<kind> unless `path` says
    name: str  # as people call the sender, e.g. "Prometheus Alertmanager"
    summary: str  # what the endpoint takes, in a line (OpenAPI, the console)
    parse: Callable[[Any], list[Alert]]  # the decoded body -> alerts; ValueError if it does not fit
    severities: Mapping[str, Severity]  # the sender's severity names -> ours
    schema: dict[str, Any]  # the body's JSON schema (OpenAPI)
    example: dict[str, Any]  # a body to try (OpenAPI, the docs)
    answer: Answer = INCIDENTS
    path: str | None = None  # the endpoint's full path, when not /v1/alerts/<kind>
    # For a sender that puts the key in the body (PagerDuty's routing_key): the key, read from
    # the body after `parse` accepted it (so a malformed body is refused before the key is known).
    key_in_body: Callable[[Any], str] | None = None
    key_hint: str = KEY_HINT  # how a sender presents the key (the console)

    @property
    def endpoint(self) -> str:
        return self.path or f"/v1/alerts/{self.kind}"


def inline(schema: dict[str, Any]) -> dict[str, Any]:
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
