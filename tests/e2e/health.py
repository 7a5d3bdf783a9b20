"""The service's own surfaces: health, the documentation pages, /metrics, and the server's log
(none of the run's secrets in it)."""

from __future__ import annotations

from typing import Any

from tests.e2e.base import (
    PROJECT_NAME,
    WalkBase,
)
from tests.e2e.checks import (
    DOCS,
    HEALTH,
    LOGS,
    expect,
    expect_fields,
)
from tests.e2e.client import body


class Health(WalkBase):
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
