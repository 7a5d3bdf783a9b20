"""Coverage by construction: the operations of the server's own OpenAPI document, and which of
them the run's requests reached (every one must be)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tests.e2e.base import PROJECT_NAME
from tests.e2e.checks import DOCS, Runner, expect, expect_eq
from tests.e2e.client import Api

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


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
