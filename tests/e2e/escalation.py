"""An escalation policy whose steps really fire: a page mailed to the SMTP server, a signed
webhook action received, then the next step by hand."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.e2e.base import (
    WalkBase,
    delivery_of,
    parse_time,
    plain_text,
    verify_signed,
)
from tests.e2e.checks import (
    ESCALATION,
    INCIDENTS,
    NOTIFICATIONS,
    expect,
    expect_detail,
    expect_eq,
    expect_fields,
)
from tests.support.waiting import poll


class Escalation(WalkBase):
    def escalation(self) -> None:
        ada, bob, carol, run = self.ada, self.bob, self.carol, self.run
        label = {"e2e": f"escalate-{run}"}
        title = f"E2E checkout down {run}"
        policies = "/v1/escalation/policies"

        def pid() -> int:
            return self.id_of("policy")

        def p() -> int:
            return self.id_of("incident:P")

        with self.check(
            "POST /v1/escalation/policies/: two steps, the first after 1.2 s", ESCALATION
        ):
            first: list[dict[str, Any]] = [{"type": "notify"}, {"type": "assign"}]
            if self.local is not None:
                hook = f"{self.local.receiver.url}/hooks/policy-step"
                first.append({"type": "webhook", "url": hook})
            second = [{"type": "notify"}, {"type": "set_severity", "severity": "critical"}]
            steps = [
                {"delay_minutes": 0.02, "targets": [{"type": "user", "id": carol.uid}]},
                {
                    "delay_minutes": 30,
                    "targets": [{"type": "schedule", "id": self.id_of("schedule")}],
                },
            ]
            steps[0]["actions"], steps[1]["actions"] = first, second
            conditions = {"labels": label, "severities": ["critical", "high"]}
            new: dict[str, Any] = {"name": f"E2E page {run}", "priority": 1, "repeat_count": 0}
            new |= {"conditions": conditions, "steps": steps}
            policy = self.api.post(f"{policies}/", token=ada.bearer, json=new, expect=201)
            expected: dict[str, Any] = {k: new[k] for k in ("name", "priority", "repeat_count")}
            expect_fields(policy, {**expected, "is_active": True}, "policy")
            expect_fields(policy["conditions"], conditions, "conditions")
            expect_eq(
                [s["targets"] for s in policy["steps"]], [s["targets"] for s in steps], "targets"
            )
            expect_eq([s["delay_minutes"] for s in policy["steps"]], [0.02, 30], "delays")
            self.ids["policy"] = policy["id"]
        with self.check("POST /v1/escalation/policies/: 422 naming what is wrong", ESCALATION):
            step = {"targets": [{"type": "user", "id": 999999999}]}
            bad: dict[str, Any] = {"name": f"bad {run}", "steps": [step]}
            expect_detail(
                self.api.post(f"{policies}/", token=ada.bearer, json=bad, expect=422), "999999999"
            )
            empty = {"name": f"empty {run}", "steps": []}
            self.api.post(f"{policies}/", token=ada.bearer, json=empty, expect=422)
            # A user who manages no team reads policies but may not make one of no team.
            good = {
                "name": f"bob's {run}",
                "steps": [{"actions": [{"type": "set_severity", "severity": "high"}]}],
            }
            self.api.post(f"{policies}/", token=bob.bearer, json=good, expect=403)
            listed = self.api.get(f"{policies}/", token=bob.bearer)["items"]
            hooks = [a for p in listed for s in p["steps"] for a in s["actions"] if "url" in a]
            expect(all(a["url"] is None for a in hooks), "webhook URLs shown to a plain user")
        with self.check("GET /v1/escalation/policies/ and /{id}", ESCALATION):
            active = self.page(f"{policies}/", ada.bearer, is_active="true")
            expect(pid() in [x["id"] for x in active], "the policy is not listed")
            policy = self.api.get(f"{policies}/{pid()}", token=ada.bearer)
            expect_fields(policy, {"id": pid(), "name": f"E2E page {run}"}, "policy")
        with self.check(
            "PUT /v1/escalation/policies/{id}: only the given fields change", ESCALATION
        ):
            change: dict[str, Any] = {"description": "pages carol, then whoever is on call"}
            policy = self.api.put(f"{policies}/{pid()}", token=ada.bearer, json=change)
            expect_fields(policy, {**change, "priority": 1}, "policy")
            expect_eq(len(policy["steps"]), 2, "steps")
        with self.check("a matching incident starts the policy: step 1 scheduled", ESCALATION):
            policy_id, service_id = pid(), self.id_of(f"e2e-incidents-{run}")
            new = {"title": title, "severity": "high", "labels": label, "service_id": service_id}
            incident = self.api.post("/v1/incidents/", token=ada.bearer, json=new, expect=201)
            self.ids["incident:P"] = incident["id"]
            expected = {"escalation_policy_id": policy_id, "escalation_status": "active"}
            expect_fields(incident, expected, "incident")
            [event] = self.events(incident["id"])
            target = [{"type": "user", "id": carol.uid}]
            expected = {"step": 1, "cycle": 1, "policy_id": policy_id, "targets": target}
            expect_fields(event, expected, "escalation event")
            expect(event["status"] in ("scheduled", "executed"), f"status {event['status']}")
            delay = parse_time(event["due_at"]) - parse_time(incident["created_at"])
            expect(abs(delay.total_seconds() - 1.2) < 0.2, f"step 1 due {delay} after creation")
            types = [e["type"] for e in self.timeline(incident["id"])]
            expect("policy_applied" in types, f"timeline {types}")
        with self.check("the worker fires step 1 on time: carol paged and assigned", ESCALATION):

            def executed() -> dict[str, Any] | None:
                done = [e for e in self.events(p()) if e["step"] == 1]
                return done[0] if done and done[0]["status"] == "executed" else None

            event = poll("step 1 to be executed", executed, last=lambda: self.events(p()))
            expect_eq(event["notified_user_ids"], [carol.uid], "notified_user_ids")
            late = parse_time(event["executed_at"]) - parse_time(event["due_at"])
            expect(0 <= late.total_seconds() < 1.0, f"step 1 fired {late} after it was due")
            incident = self.incident(p())
            expect_eq(incident["escalation_level"], 1, "escalation_level")
            expect(carol.uid in [a["id"] for a in incident["assignees"]], "carol is not assigned")
            [step2] = [e for e in self.events(p()) if e["step"] == 2]
            expect_eq(step2["status"], "scheduled", "step 2")
            gap = parse_time(step2["due_at"]) - parse_time(event["due_at"])
            expect(abs(gap.total_seconds() - 1800) < 5, f"step 2 due {gap} after step 1")
            types = [e["type"] for e in self.timeline(p())]
            expect("escalated" in types, f"timeline {types}")
        with self.check("the page is in the delivery log, sent", NOTIFICATIONS):

            def page_row() -> dict[str, Any] | None:
                rows = self.page("/v1/notifications/", ada.bearer, incident_id=p(), channel="email")
                pages = [r for r in rows if r["user_id"] == carol.uid and r["event"] == "escalated"]
                final = ("sent", "failed", "cancelled") if self.local else ("pending", "sent")
                return pages[0] if pages and pages[0]["status"] in final else None

            row = poll("carol's page to be sent", page_row)
            self.ids["notification:page"] = row["id"]
            expect_fields(row, {"address": carol.email, "channel": "email"}, "page")
            expect(row["escalation_event_id"], "no escalation_event_id")
            one = self.api.get(f"/v1/notifications/{row['id']}", token=ada.bearer)
            expect_eq(one["id"], row["id"], "id")
            expect(f"#{p()}" in one["subject"] and title in one["subject"], one["subject"])
            if self.local is not None:
                expected = {"status": "sent", "last_error": None, "attempts": 1}
                expect_fields(one, expected, "delivery")
                expect(one["provider_message_id"] and one["sent_at"], "no message id or sent_at")
        with self.check("the page email reaches the SMTP server", NOTIFICATIONS):
            local = self.needs_local()
            mail = local.inbox.wait_for(
                f"carol's page for incident {p()}",
                lambda m, rcpt: carol.email in rcpt and f"PAGE #{p()}" in str(m["Subject"]),
            )
            expect_eq(str(mail["Subject"]), f"[HIGH] PAGE #{p()}: {title}", "Subject")
            expect_eq(str(mail["To"]), carol.email, "To")
            row = self.api.get(
                f"/v1/notifications/{self.id_of('notification:page')}", token=ada.bearer
            )
            expect_eq(str(mail["X-Notification-Id"]), str(row["id"]), "X-Notification-Id")
            message_id = str(mail["Message-ID"]).strip("<>")
            expect_eq(message_id, row["provider_message_id"], "Message-ID, kept as provider id")
            content = plain_text(mail)
            ack_url = f"{self.api.base_url}/v1/incidents/{p()}/acknowledge"
            expect(ack_url in content, f"no acknowledge link in the mail: {content[:300]}")
            expect(mail.get_body(preferencelist=("html",)) is not None, "no HTML part")
        with self.check(
            "the page's one-click links: opening one changes nothing, a changed one is refused",
            NOTIFICATIONS,
        ):
            local = self.needs_local()
            mail = local.inbox.wait_for(
                f"carol's page for incident {p()}",
                lambda m, rcpt: carol.email in rcpt and f"PAGE #{p()}" in str(m["Subject"]),
            )
            content = plain_text(mail)
            links = re.findall(r"(/v1/actions/[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)", content)
            expect_eq(len(links), 2, "links in the page (Acknowledge, Resolve)")
            html = mail.get_body(preferencelist=("html",))
            html_text = html.get_content() if html is not None else ""
            expect(all(link in html_text for link in links), "the HTML part lacks a link")
            page = self.api.request("GET", links[0], expect=200)
            expect(f"#{p()}" in page.text and '<form method="post"' in page.text, page.text[:300])
            expect_eq(self.incident(p())["status"], "triggered", "status after opening the link")
            changed = links[0][:-1] + ("A" if links[0][-1] != "A" else "B")
            self.api.request("POST", changed, expect=404)
            expect_eq(self.incident(p())["status"], "triggered", "status after a changed link")
        with self.check("the step's webhook action is received, signed", ESCALATION):
            local = self.needs_local()
            request = local.receiver.wait_for(
                f"the policy step for incident {p()}",
                delivery_of("incident.escalated", p(), "/hooks/policy-step"),
            )
            payload = json.loads(request["body"])
            expect_fields(payload["incident"], {"title": title, "status": "triggered"}, "incident")
            expect_fields(payload["data"], {"step": 1, "policy_id": pid()}, "data")
            expect_eq(request["headers"].get("x-event-id"), payload["id"], "X-Event-Id")
            verify_signed(request, local.signing_secret)
        with self.check(
            "POST /v1/incidents/{id}/escalate: step 2 now, to who is on call", INCIDENTS
        ):
            incident = self.act(p(), "escalate", token=bob.bearer)
            expected = {"escalation_level": 2, "severity": "critical"}
            expect_fields(incident, expected, "incident (step 2 sets the severity)")
            [step2] = [e for e in self.events(p()) if e["step"] == 2]
            expect_eq(step2["status"], "executed", "step 2")
            on_call = self.on_call_now(parse_time(step2["executed_at"]))
            expect_eq(step2["notified_user_ids"], [on_call], "paged on-call user")
            expect_detail(self.act(p(), "escalate", expect=409), "no step left")
        with self.check(
            "the original API's escalation paths: deprecated aliases of the same operations",
            INCIDENTS,
        ):
            legacy = f"/v1/escalation/incidents/{p()}"
            events = self.page(f"{legacy}/escalation-events/", self.ada.bearer)
            expect_eq(events, self.events(p()), "events through the original's path")
            answer = self.api.post(f"{legacy}/escalate/", token=bob.bearer, expect=409)
            expect_detail(answer, "no step left")
