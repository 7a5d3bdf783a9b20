"""Notifications: preferences per channel, the delivery log, and webhook subscriptions whose
deliveries are verified with their secret."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.e2e.base import (
    WalkBase,
    delivery_of,
    json_body_matches,
    plain_text,
    verify_signed,
)
from tests.e2e.checks import (
    INCIDENTS,
    NOTIFICATIONS,
    WEBHOOKS,
    expect,
    expect_detail,
    expect_eq,
    expect_fields,
    need,
)
from tests.support.receivers import signed_with
from tests.support.waiting import poll


class Notifications(WalkBase):
    def preferences(self) -> None:
        ada, bob, carol = self.ada, self.bob, self.carol
        mine = "/v1/notification-preferences/me"
        with self.check(
            "GET /v1/notification-preferences/me: a default per channel", NOTIFICATIONS
        ):
            answer = self.api.get(mine, token=carol.bearer)
            by_channel = {p["channel"]: p for p in answer["items"]}
            expect_eq(list(by_channel), ["email", "sms", "slack", "webhook", "teams"], "channels")
            expected: dict[str, Any] = {
                "enabled": True,
                "is_default": True,
                "effective_address": carol.email,
            }
            expected["events"] = ["escalated", "assigned"]
            expect_fields(by_channel["email"], expected, "email default")
            expected = {"enabled": False, "effective_address": "+15555550123"}
            expect_fields(by_channel["sms"], expected, "sms default (the profile's phone)")
            expect_eq(answer["next_cursor"], None, "next_cursor")
        with self.check("PUT /v1/notification-preferences/me/{channel}: store one", NOTIFICATIONS):
            change: dict[str, Any] = {
                "enabled": True,
                "address": "+1 (555) 123-4567",
                "min_severity": "critical",
            }
            change["events"] = ["escalated"]
            preference = self.api.put(f"{mine}/sms", token=carol.bearer, json=change)
            expected = {**change, "channel": "sms", "address": "+15551234567", "is_default": False}
            expect_fields(preference, expected, "preference (number normalised)")
        with self.check(
            "PUT …/me/{channel}: an address unfit for the channel is 422", NOTIFICATIONS
        ):
            bad_email = {"enabled": True, "address": "not-an-email"}
            self.api.put(f"{mine}/email", token=carol.bearer, json=bad_email, expect=422)
            no_url = {"enabled": True}
            self.api.put(f"{mine}/slack", token=carol.bearer, json=no_url, expect=422)
        with self.check("GET /v1/notification-preferences/{user_id}: admins only", NOTIFICATIONS):
            path = f"/v1/notification-preferences/{carol.uid}"
            items = self.api.get(path, token=ada.bearer)["items"]
            sms = next(p for p in items if p["channel"] == "sms")
            expect_fields(sms, {"address": "+15551234567", "is_default": False}, "carol's sms")
            self.api.get(path, token=bob.bearer, expect=403)
            self.api.get(f"/v1/notification-preferences/{bob.uid}", token=bob.bearer)
            self.api.get("/v1/notification-preferences/999999999", token=ada.bearer, expect=404)
        with self.check("PUT /v1/notification-preferences/{user_id}/{channel}", NOTIFICATIONS):
            path = f"/v1/notification-preferences/{carol.uid}/email"
            change = {"enabled": True, "address": None, "min_severity": "high"}
            change["events"] = ["escalated", "assigned", "acknowledged"]
            preference = self.api.put(path, token=ada.bearer, json=change)
            expected = {**change, "effective_address": carol.email, "is_default": False}
            expect_fields(preference, expected, "carol's email preference")
            self.api.put(path, token=bob.bearer, json={"enabled": False}, expect=403)
        with self.check(
            "POST …/me/{channel}/verify and /confirm: an address proven by the code sent there",
            NOTIFICATIONS,
        ):
            local = self.needs_local()
            address = f"pager-{bob.uid}@example.org"
            change = {"enabled": True, "address": address}
            preference = self.api.put(f"{mine}/email", token=bob.bearer, json=change)
            expect_eq(preference["verified"], False, "a new address, unproven")
            self.api.post(f"{mine}/email/verify", token=bob.bearer, expect=202)
            mail = local.inbox.wait_for(
                f"the verification code for {address}", lambda m, rcpt: address in rcpt
            )
            code = need(re.search(r"\b([0-9]{6})\b", plain_text(mail)), "a code in the mail")[1]
            wrong = "000000" if code != "000000" else "111111"
            confirm = f"{mine}/email/confirm"
            self.api.post(confirm, token=bob.bearer, json={"code": wrong}, expect=400)
            proven = self.api.post(confirm, token=bob.bearer, json={"code": code})
            expect_fields(proven, {"address": address, "verified": True}, "the proven address")
            # Back to the account's own address, as the walk after this expects.
            self.api.put(f"{mine}/email", token=bob.bearer, json={"enabled": True})
        with self.check(
            "POST /v1/notification-preferences/{user_id}/{channel}/verified: an admin vouches",
            NOTIFICATIONS,
        ):
            path = f"/v1/notification-preferences/{carol.uid}/sms/verified"
            self.api.post(path, token=bob.bearer, json={"address": None}, expect=403)
            vouched = self.api.post(path, token=ada.bearer, json={"address": None})
            expected = {"channel": "sms", "address": "+15551234567", "verified_via": "admin"}
            expect_fields(vouched, expected, "carol's number, vouched for")
            expect_eq(vouched["verified_by"], ada.uid, "vouched by")

    def contact_methods(self) -> None:
        """Contact methods and notification rules, made and removed again (the escalation walk
        after this pages through preferences)."""
        ada, bob = self.ada, self.bob
        mine, rules = "/v1/users/me/contact-methods", "/v1/users/me/notification-rules"
        with self.check(
            "POST /v1/users/me/contact-methods: numbers stored as E.164", NOTIFICATIONS
        ):
            sms = self.api.post(
                mine, token=bob.bearer, expect=201,
                json={"type": "sms", "address": "+1 (415) 555-2671", "label": "Mobile"},
            )  # fmt: skip
            expected = {"type": "sms", "address": "+14155552671", "verified": False}
            expect_fields(sms, expected, "the new method")
            bad = {"type": "voice", "address": "+15551234567"}  # not in the numbering plan
            self.api.post(mine, token=bob.bearer, json=bad, expect=422)
            listed = self.api.get(mine, token=bob.bearer)["items"]
            expect_eq([m["id"] for m in listed], [sms["id"]], "bob's methods")
            self.api.get(f"{mine}/{sms['id']}", token=bob.bearer)
            self.api.get(f"{mine}/{sms['id']}", token=ada.bearer, expect=404)  # not ada's
        with self.check("PATCH and verify a contact method", NOTIFICATIONS):
            path = f"{mine}/{sms['id']}"
            relabelled = self.api.patch(path, token=bob.bearer, json={"label": "Phone"})
            expect_eq(relabelled["label"], "Phone", "label")
            sent = self.api.post(f"{path}/verify", token=bob.bearer, expect=202)
            expect_fields(sent, {"channel": "sms", "address": "+14155552671"}, "code sent")
            self.api.post(f"{path}/confirm", token=bob.bearer, json={"code": "000000"}, expect=400)
        with self.check("notification rules: add, list in order, change, delete", NOTIFICATIONS):
            later = self.api.post(
                rules, token=bob.bearer, json={"contact_method_id": sms["id"], "delay_minutes": 5},
                expect=201,
            )  # fmt: skip
            first = self.api.post(
                rules, token=bob.bearer, json={"contact_method_id": sms["id"]}, expect=201
            )
            ordered = [r["id"] for r in self.api.get(rules, token=bob.bearer)["items"]]
            expect_eq(ordered, [first["id"], later["id"]], "by delay")
            moved = self.api.patch(
                f"{rules}/{later['id']}", token=bob.bearer, json={"delay_minutes": 2}
            )
            expect_eq(moved["delay_minutes"], 2, "delay")
            self.api.delete(f"{rules}/{first['id']}", token=bob.bearer, expect=204)
        with self.check("anyone's contact methods and rules: admins only", NOTIFICATIONS):
            theirs = f"/v1/users/{bob.uid}/contact-methods"
            self.api.get(theirs, token=self.carol.bearer, expect=403)
            expect_eq(len(self.api.get(theirs, token=ada.bearer)["items"]), 1, "bob's methods")
            voice = self.api.post(
                theirs, token=ada.bearer, json={"type": "voice", "address": "+14155552671"},
                expect=201,
            )  # fmt: skip
            vouched = self.api.post(f"{theirs}/{voice['id']}/verified", token=ada.bearer)
            expect_eq(vouched["verified"], True, "vouched")
            self.api.patch(f"{theirs}/{voice['id']}", token=ada.bearer, json={"label": "Desk"})
            their_rules = f"/v1/users/{bob.uid}/notification-rules"
            rule = self.api.post(
                their_rules, token=ada.bearer, expect=201,
                json={"contact_method_id": voice["id"], "delay_minutes": 3},
            )  # fmt: skip
            self.api.patch(
                f"{their_rules}/{rule['id']}", token=ada.bearer, json={"min_severity": "high"}
            )
            expect_eq(len(self.api.get(their_rules, token=ada.bearer)["items"]), 2, "bob's rules")
            self.api.delete(f"{their_rules}/{rule['id']}", token=ada.bearer, expect=204)
            self.api.delete(f"{theirs}/{voice['id']}", token=ada.bearer, expect=204)
            # The rest goes: bob is paged through his preferences in the walk after this.
            self.api.delete(f"{mine}/{sms['id']}", token=bob.bearer, expect=204)
            expect_eq(self.api.get(rules, token=bob.bearer)["items"], [], "rules went with it")

    def delivery_log(self) -> None:
        ada, carol = self.ada, self.carol

        def p() -> int:
            return self.id_of("incident:P")

        with self.check(
            "GET /v1/notifications/: filter by status, channel, incident, user", NOTIFICATIONS
        ):
            rows = self.page("/v1/notifications/", ada.bearer, incident_id=p())
            expect(rows, "no notifications for the escalated incident")
            expect_eq([r["id"] for r in rows], sorted(r["id"] for r in rows), "oldest first")
            wanted = {
                "incident_id": p(),
                "channel": "email",
                "status": "sent",
                "user_id": carol.uid,
            }
            filtered = self.page("/v1/notifications/", ada.bearer, **wanted)
            expect(filtered, f"no row for {wanted}")
            for row in filtered:
                expect_fields(row, wanted, "a filtered row")
            if self.local is not None:
                hooks = [r for r in rows if r["channel"] == "webhook" and r["user_id"] is None]
                states = [(r["id"], r["status"]) for r in hooks]
                expect(hooks and all(r["status"] == "sent" for r in hooks), f"webhooks {states}")
        with self.check("a user sees only their own notifications", NOTIFICATIONS):
            # Bob joins the response, so the incident's log has a row of someone else's.
            self.act(p(), "assign", json={"user_id": self.bob.uid})
            own = self.page("/v1/notifications/", carol.bearer)
            expect(own and all(r["user_id"] == carol.uid for r in own), "someone else's row")
            params = {"user_id": ada.uid}
            self.api.get("/v1/notifications/", token=carol.bearer, params=params, expect=403)
            rows = self.page("/v1/notifications/", ada.bearer, incident_id=p())
            others = [r for r in rows if r["user_id"] == self.bob.uid]
            expect(others, "no notification to bob about the assignment")
            path = f"/v1/notifications/{others[0]['id']}"
            self.api.get(path, token=carol.bearer, expect=404)
        with self.check("GET /v1/incidents/{id}/notifications: a user's own rows", INCIDENTS):
            path = f"/v1/incidents/{p()}/notifications"
            visible = self.page(path, carol.bearer)
            expect(visible and all(r["user_id"] == carol.uid for r in visible), "others' rows")
            everything = self.page(path, ada.bearer)
            expect(len(everything) > len(visible), "an admin does not see every row")

    def webhooks(self) -> None:
        ada, bob, run = self.ada, self.bob, self.run
        local = self.local
        url = f"{local.receiver.url}/hooks/subscription" if local else None
        url = url or "http://127.0.0.1:9/hooks/subscription"  # loopback, even for a remote server

        def wid() -> int:
            return self.id_of("webhook")

        with self.check("POST /v1/webhooks/: subscribe; the secret is shown once", WEBHOOKS):
            new: dict[str, Any] = {
                "name": f"status page {run}",
                "url": url,
                "description": "e2e receiver",
            }
            new |= {"events": ["triggered", "acknowledged"], "enabled": True}
            hook = self.api.post("/v1/webhooks/", token=ada.bearer, json=new, expect=201)
            expect_fields(hook, new, "webhook")
            secret = str(hook.get("secret"))
            expect(secret.startswith("whsec_") and len(secret) > 40, f"secret {secret[:10]}…")
            expect(secret.startswith(hook["secret_prefix"]), "secret_prefix is not its start")
            self.ids["webhook"] = hook["id"]
            self.texts["secret"] = secret
        with self.check(
            "POST /v1/webhooks/: a bad URL is 422; one of no team is an admin's", WEBHOOKS
        ):
            bad: dict[str, Any] = {
                "name": "bad",
                "url": "ftp://example.com/x",
                "events": ["triggered"],
            }
            expect_detail(
                self.api.post("/v1/webhooks/", token=ada.bearer, json=bad, expect=422), "url"
            )
            new = {**bad, "url": url}
            self.api.post("/v1/webhooks/", token=bob.bearer, json=new, expect=403)
            # A user who manages no team sees none of them.
            expect_eq(self.api.get("/v1/webhooks/", token=bob.bearer)["items"], [], "bob's")
        with self.check("GET /v1/webhooks/ and /{id}: only the secret's prefix", WEBHOOKS):
            listed = [h for h in self.page("/v1/webhooks/", ada.bearer) if h["id"] == wid()]
            expect(listed and "secret" not in listed[0], f"the list shows {listed}")
            hook = self.api.get(f"/v1/webhooks/{wid()}", token=ada.bearer)
            expect("secret" not in hook, "the secret is shown again")
            expect(self.text("secret").startswith(hook["secret_prefix"]), "secret_prefix")
        with self.check("POST /v1/webhooks/{id}/test: a signed ping is delivered", WEBHOOKS):
            queued = self.api.post(f"/v1/webhooks/{wid()}/test", token=ada.bearer, expect=202)
            expected: dict[str, Any] = {
                "channel": "webhook",
                "webhook_id": wid(),
                "event": "test",
                "address": url,
            }
            expect_fields(queued, expected, "queued delivery")
            local = self.needs_local()
            request = local.receiver.wait_for(
                "the ping",
                lambda r: json_body_matches(r, lambda b: b["event"] == "ping"),
            )
            payload = json.loads(request["body"])
            self.texts["ping"] = payload["id"]
            expected = {
                "incident": None,
                "data": {"webhook_id": wid(), "name": f"status page {run}"},
            }
            expect_fields(payload, expected, "ping")
            expect_eq(payload["actor"]["id"], ada.uid, "actor")
            expect_eq(request["headers"].get("x-event-id"), payload["id"], "X-Event-Id")
            expect_eq(request["headers"].get("content-type"), "application/json", "Content-Type")
            verify_signed(request, self.text("secret"))

            def logged() -> dict[str, Any] | None:
                row: dict[str, Any] = self.api.get(
                    f"/v1/notifications/{queued['id']}", token=ada.bearer
                )
                return row if row["status"] == "sent" else None

            expect_eq(poll("the ping to be logged as sent", logged)["last_error"], None, "error")
        with self.check("POST /v1/webhooks/{id}/rotate-secret: a new secret signs", WEBHOOKS):
            old = self.text("secret")
            rotated = self.api.post(f"/v1/webhooks/{wid()}/rotate-secret", token=ada.bearer)
            new_secret = str(rotated.get("secret"))
            expect(new_secret.startswith("whsec_") and new_secret != old, "the same secret")
            expect(new_secret.startswith(rotated["secret_prefix"]), "secret_prefix")
            self.texts["secret"] = new_secret
            self.api.post(f"/v1/webhooks/{wid()}/test", token=ada.bearer, expect=202)
            local = self.needs_local()
            first = self.text("ping")
            request = local.receiver.wait_for(
                "the second ping",
                lambda r: json_body_matches(r, lambda b: b["event"] == "ping" and b["id"] != first),
            )
            verify_signed(request, new_secret)
            expect(not signed_with(request, old), "the delivery verifies with the old secret")
        with self.check("incident events reach the subscription, signed", WEBHOOKS):
            local = self.needs_local()
            new = {"title": f"E2E webhook subscriber {run}", "severity": "low"}
            incident = self.api.post("/v1/incidents/", token=ada.bearer, json=new, expect=201)
            self.act(incident["id"], "acknowledge")
            actor = {"type": "user", "id": ada.uid, "name": ada.full_name}
            for event in ("incident.triggered", "incident.acknowledged"):
                matches = delivery_of(event, incident["id"], "/hooks/subscription")
                request = local.receiver.wait_for(f"{event} for {incident['id']}", matches)
                payload = json.loads(request["body"])
                expect_fields(payload["incident"], new, f"{event} incident")
                expect_eq(payload["actor"], actor, f"{event} actor")
                verify_signed(request, self.text("secret"))
        with self.check("PUT /v1/webhooks/{id}: only the given fields change", WEBHOOKS):
            change: dict[str, Any] = {
                "events": ["resolved"],
                "enabled": False,
                "name": f"status page v2 {run}",
            }
            hook = self.api.put(f"/v1/webhooks/{wid()}", token=ada.bearer, json=change)
            expect_fields(hook, {**change, "url": url}, "webhook")
        with self.check("DELETE /v1/webhooks/{id}: answers the subscription, then 404", WEBHOOKS):
            gone = self.api.delete(f"/v1/webhooks/{wid()}", token=ada.bearer)
            expect_eq(gone["id"], wid(), "deleted webhook")
            expect("secret" not in gone, "the deleted webhook shows its secret")
            self.api.get(f"/v1/webhooks/{wid()}", token=ada.bearer, expect=404)
