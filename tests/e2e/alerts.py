"""Alerts from every source with real payloads: Alertmanager, Grafana, generic, Elastic, and
PagerDuty's Events API."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.e2e.base import (
    WalkBase,
    load_fixture,
    now_utc,
)
from tests.e2e.checks import (
    ALERTS,
    expect,
    expect_detail,
    expect_eq,
    expect_fields,
    need,
)


class Alerts(WalkBase):
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
