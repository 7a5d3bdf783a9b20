"""Services and their integrations (keys shown once, rotated, refused)."""

from __future__ import annotations

import re
from typing import Any

from tests.e2e.base import (
    WalkBase,
    load_fixture,
)
from tests.e2e.checks import (
    INTEGRATIONS,
    SERVICES,
    CheckFailed,
    expect,
    expect_eq,
    expect_fields,
)
from tests.e2e.client import body


class Services(WalkBase):
    def services(self) -> None:
        ada, bob, run = self.ada, self.bob, self.run
        checkout = f"e2e-checkout-{run}"
        made = [(checkout, "Payments and checkout"), (f"e2e-alerts-{run}", "Alert sources")]
        for name, description in made:
            with self.check(f"POST /v1/services/: create {name}", SERVICES):
                new: dict[str, Any] = {"name": name, "description": description}
                service = self.api.post("/v1/services/", token=ada.bearer, json=new, expect=201)
                expected: dict[str, Any] = {**new, "is_active": True, "escalation_policy_id": None}
                expect_fields(service, expected, "service")
                self.ids[name] = service["id"]
        with self.check("POST /v1/services/: a taken name (any case) is 409", SERVICES):
            taken = {"name": checkout.upper()}
            self.api.post("/v1/services/", token=ada.bearer, json=taken, expect=409)
        with self.check("POST /v1/services/: a plain user is refused (403)", SERVICES):
            self.api.post("/v1/services/", token=bob.bearer, json={"name": run}, expect=403)
        with self.check("GET /v1/services/: every user reads, q searches", SERVICES):
            found = sorted(s["name"] for s in self.page("/v1/services/", bob.bearer, q=run))
            expect_eq(found, sorted(name for name, _ in made), "services matching q")
        with self.check("GET /v1/services/{id}: one service; unknown is 404", SERVICES):
            service_id = self.id_of(checkout)
            service = self.api.get(f"/v1/services/{service_id}", token=bob.bearer)
            expect_fields(service, {"id": service_id, "name": checkout}, "service")
            self.api.get("/v1/services/999999999", token=bob.bearer, expect=404)
        with self.check("/path and /path/ answer alike (no redirect)", SERVICES):
            service_id = self.id_of(checkout)
            for path in ("/v1/services", f"/v1/services/{service_id}"):
                plain = self.api.request("GET", path, token=bob.bearer, expect=200)
                slashed = self.api.request("GET", path + "/", token=bob.bearer, expect=200)
                expect_eq(body(slashed), body(plain), f"{path}/ and {path}")
        with self.check("PUT /v1/services/{id}: deactivate, then filter by is_active", SERVICES):
            service_id = self.id_of(checkout)
            change: dict[str, Any] = {"description": "Checkout (retired)", "is_active": False}
            service = self.api.put(f"/v1/services/{service_id}", token=ada.bearer, json=change)
            expect_fields(service, {**change, "name": checkout}, "service")
            inactive = self.page("/v1/services/", ada.bearer, is_active="false", q=run)
            expect_eq([s["id"] for s in inactive], [service_id], "inactive services")
            self.api.put(f"/v1/services/{service_id}", token=bob.bearer, json={}, expect=403)
        with self.check(
            "GET /v1/audit: the change is in the audit log, before and after", SERVICES
        ):
            service_id = self.id_of(checkout)
            params = {"object_type": "service", "object_id": service_id, "limit": 5}
            entries = self.api.get("/v1/audit", token=ada.bearer, params=params)["items"]
            expect_eq([e["action"] for e in entries], ["update", "create"], "audit actions")
            latest = entries[0]
            expect_eq(latest["before"], {"description": "Payments and checkout",
                                         "is_active": True}, "before")  # fmt: skip
            expect_eq(latest["after"], change, "after")
            expect_fields(latest["actor"], {"type": "user", "id": ada.uid}, "actor")
            self.api.get("/v1/audit", token=bob.bearer, expect=403)

    def integrations(self) -> None:
        ada, bob = self.ada, self.bob
        base = f"/v1/services/{self.ids.get(f'e2e-alerts-{self.run}')}/integrations"
        with self.check("POST …/integrations/: one per kind, each key shown once", INTEGRATIONS):
            service_id = self.id_of(f"e2e-alerts-{self.run}")
            for kind in ("alertmanager", "grafana", "generic", "elastic", "pagerduty"):
                new: dict[str, Any] = {"name": f"e2e {kind}", "kind": kind}
                made = self.api.post(f"{base}/", token=ada.bearer, json=new, expect=201)
                expect_fields(made, {**new, "service_id": service_id}, "integration")
                key = made.get("key")
                if not (isinstance(key, str) and re.fullmatch(r"[A-Za-z0-9_-]{32}", key)):
                    raise CheckFailed(f"{kind}: key {key!r} is not 32 URL-safe characters")
                expect(key.startswith(made["key_prefix"]), f"{kind}: key_prefix is not its start")
                self.keys[kind] = key
                self.ids[f"integration:{kind}"] = made["id"]
        with self.check("GET …/integrations/: keys are never shown again", INTEGRATIONS):
            listed = self.page(f"{base}/", ada.bearer)
            expect_eq(sorted(i["kind"] for i in listed), sorted(self.keys), "kinds")
            for item in listed:
                expect(item["key"] is None, f"the {item['kind']} key is shown in the list")
                expect(self.key(item["kind"]).startswith(item["key_prefix"]), "key_prefix")
            self.api.get(f"{base}/", token=bob.bearer, expect=403)
        with self.check("GET …/integrations/{id}: one, without its key", INTEGRATIONS):
            iid = self.id_of("integration:grafana")
            item = self.api.get(f"{base}/{iid}", token=ada.bearer)
            expect_fields(item, {"id": iid, "kind": "grafana", "key": None}, "integration")
        with self.check("PUT …/integrations/{id}: rename", INTEGRATIONS):
            iid = self.id_of("integration:grafana")
            renamed = self.api.put(f"{base}/{iid}", token=ada.bearer, json={"name": "grafana prod"})
            expect_fields(renamed, {"name": "grafana prod", "kind": "grafana"}, "integration")
        with self.check("POST …/integrations/{id}/rotate: the old key stops at once", INTEGRATIONS):
            iid, old = self.id_of("integration:generic"), self.key("generic")
            rotated = self.api.post(f"{base}/{iid}/rotate", token=ada.bearer)
            new_key = rotated.get("key")
            expect(isinstance(new_key, str) and new_key != old, f"rotate gave key {new_key!r}")
            expect(rotated.get("rotated_at"), "rotated_at is not set")
            self.keys["generic"] = new_key
            alert = {"summary": f"key check {self.run}", "severity": "info"}
            refused = {"X-Integration-Key": old}
            self.api.post("/v1/alerts/generic", json=alert, headers=refused, expect=401)
            expect_eq(self.alert("generic", alert)[0]["status"], "incident_created", "new key")
        with self.check("alert keys: none 401, unknown 401, another kind's 403", INTEGRATIONS):
            payload = load_fixture("alertmanager_webhook_firing.json")
            path = "/v1/alerts/alertmanager"
            self.api.post(path, json=payload, expect=401)
            unknown = {"Authorization": "Bearer " + "x" * 32}
            self.api.post(path, json=payload, headers=unknown, expect=401)
            grafana = {"Authorization": f"Bearer {self.key('grafana')}"}
            self.api.post(path, json=payload, headers=grafana, expect=403)
        with self.check("DELETE …/integrations/{id}: its key stops working", INTEGRATIONS):
            new = {"name": "short-lived", "kind": "generic"}
            made = self.api.post(f"{base}/", token=ada.bearer, json=new, expect=201)
            gone = self.api.delete(f"{base}/{made['id']}", token=ada.bearer)
            expect_fields(gone, {"id": made["id"], "name": "short-lived", "key": None}, "deleted")
            self.api.get(f"{base}/{made['id']}", token=ada.bearer, expect=404)
            headers = {"X-Integration-Key": made["key"]}
            self.api.post("/v1/alerts/generic", json=new, headers=headers, expect=401)
