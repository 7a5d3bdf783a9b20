"""Deleting what the run made: refused while in use, then gone."""

from __future__ import annotations

from tests.e2e.base import (
    WalkBase,
)
from tests.e2e.checks import (
    ESCALATION,
    SCHEDULES,
    SERVICES,
    USERS,
    expect_detail,
    expect_eq,
    expect_fields,
)


class Cleanup(WalkBase):
    def deletions(self) -> None:
        ada, bob, carol, dave, run = self.ada, self.bob, self.carol, self.dave, self.run

        def sid() -> int:
            return self.id_of("schedule")

        def pid() -> int:
            return self.id_of("policy")

        with self.check("DELETE /v1/escalation/policies/{id}: 409 while in use", ESCALATION):
            path = f"/v1/escalation/policies/{pid()}"
            incident_id = self.id_of("incident:P")
            answer = self.api.delete(path, token=ada.bearer, expect=409)
            expect_detail(answer, f"open incidents {incident_id}")
            self.act(incident_id, "resolve")
        with self.check("DELETE /v1/schedules/{id}: 409 while a policy pages it", SCHEDULES):
            answer = self.api.delete(f"/v1/schedules/{sid()}", token=ada.bearer, expect=409)
            expect_detail(answer, f"E2E page {run}")
        with self.check("DELETE /v1/users/{id}: 409 while in a schedule, then force", USERS):
            answer = self.api.delete(f"/v1/users/{carol.uid}", token=ada.bearer, expect=409)
            expect_detail(answer, f"schedule {sid()}", f"escalation policy {pid()}")
            forced = {"force": "true"}
            gone = self.api.delete(f"/v1/users/{carol.uid}", token=ada.bearer, params=forced)
            expect_fields(gone, {"id": carol.uid, "email": carol.email}, "deleted user")
            self.api.get(f"/v1/users/{carol.uid}", token=ada.bearer, expect=404)
            self.api.get("/v1/users/me", token=carol.bearer, expect=401)
            schedule = self.api.get(f"/v1/schedules/{sid()}", token=ada.bearer)
            expect_eq(schedule["layers"][0]["user_ids"], [dave.uid], "the layer after the removal")
            last = self.api.get(f"/v1/schedules/{sid()}/history", token=ada.bearer)[-1]
            expect_eq(
                (last["type"], last["data"].get("user_id")), ("user_removed", carol.uid), "history"
            )
            policy = self.api.get(f"/v1/escalation/policies/{pid()}", token=ada.bearer)
            expect_eq(policy["steps"][0]["targets"], [], "step 1 targets after the removal")
        with self.check("DELETE /v1/escalation/policies/{id}: the deleted policy", ESCALATION):
            gone = self.api.delete(f"/v1/escalation/policies/{pid()}", token=ada.bearer)
            expect_fields(gone, {"id": pid(), "name": f"E2E page {run}"}, "deleted policy")
            self.api.get(f"/v1/escalation/policies/{pid()}", token=ada.bearer, expect=404)
        with self.check(
            "DELETE /v1/schedules/{id}: the deleted schedule, its feed ends", SCHEDULES
        ):
            gone = self.api.delete(f"/v1/schedules/{sid()}", token=ada.bearer)
            expect_fields(gone, {"id": sid(), "name": self.text("schedule")}, "deleted schedule")
            self.api.get(f"/v1/schedules/{sid()}", token=ada.bearer, expect=404)
            token = {"token": self.texts.get("calendar token", "x")}
            self.api.request("GET", f"/v1/schedules/{sid()}/calendar.ics", params=token, expect=401)
        with self.check("DELETE /v1/services/{id}: 409 while incidents belong to it", SERVICES):
            service_id = self.id_of(f"e2e-incidents-{run}")
            self.api.delete(f"/v1/services/{service_id}", token=ada.bearer, expect=409)
            self.api.get(f"/v1/services/{service_id}", token=ada.bearer)
        with self.check("DELETE /v1/services/{id}: the deleted service, then 404", SERVICES):
            service_id = self.id_of(f"e2e-checkout-{run}")
            self.api.delete(f"/v1/services/{service_id}", token=bob.bearer, expect=403)
            gone = self.api.delete(f"/v1/services/{service_id}", token=ada.bearer)
            expect_fields(gone, {"id": service_id, "name": f"e2e-checkout-{run}"}, "deleted")
            self.api.get(f"/v1/services/{service_id}", token=ada.bearer, expect=404)
        with self.check("DELETE /v1/users/{id}: the deleted user; their token stops", USERS):
            gone = self.api.delete(f"/v1/users/{bob.uid}", token=ada.bearer)
            expect_fields(gone, {"id": bob.uid, "email": bob.email}, "deleted user")
            self.api.get("/v1/users/me", token=bob.bearer, expect=401)
            form = {"username": bob.email, "password": bob.password}
            self.api.post("/v1/auth/login/access-token", data=form, expect=401)
            expect_eq(
                self.api.delete(f"/v1/users/{dave.uid}", token=ada.bearer)["id"], dave.uid, "dave"
            )
