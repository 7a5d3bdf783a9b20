"""The analytics report over the run's service, figure by figure against the API's own answers."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tests.e2e.base import (
    WalkBase,
    now_utc,
    parse_time,
)
from tests.e2e.checks import (
    ANALYTICS,
    expect,
    expect_detail,
    expect_eq,
)
from tests.support.waiting import poll


class Analytics(WalkBase):
    def analytics(self) -> None:
        """The report over this run's service, checked against what the API says of each of its
        incidents, their escalation steps and their pages."""
        ada, bob, carol, run = self.ada, self.bob, self.carol, self.run
        path = "/v1/analytics/incidents"

        def sid() -> int:
            return self.id_of(f"e2e-incidents-{run}")

        def expected(start: datetime, end: datetime) -> dict[str, Any]:
            """The figures worked out from the incidents, steps and pages themselves."""
            incidents = self.page("/v1/incidents/", ada.bearer, service_id=sid())
            incidents = [i for i in incidents if start <= parse_time(i["created_at"]) < end]
            severities = ("critical", "high", "medium", "low", "info")
            by_severity = {s: sum(i["severity"] == s for i in incidents) for s in severities}

            def times(field: str) -> dict[str, Any]:
                micros = sorted(
                    (parse_time(i[field]) - parse_time(i["created_at"]))
                    // timedelta(microseconds=1)
                    for i in incidents
                    if i[field]
                )
                if not micros:
                    return {"count": 0, "mean_seconds": None, "p90_seconds": None}
                rank = -(-9 * len(micros) // 10)  # nearest rank: ceil(0.9 × n)
                mean = round(sum(micros) / len(micros) / 1e6, 3)
                return {"count": len(micros), "mean_seconds": mean,
                        "p90_seconds": round(micros[rank - 1] / 1e6, 3)}  # fmt: skip

            steps = dict.fromkeys(("executed", "failed", "skipped"), 0)
            pages: dict[int, set[int]] = {}
            counts: dict[int, int] = {}
            for incident in incidents:
                for event in self.events(incident["id"]):
                    fired = event["executed_at"] and start <= parse_time(event["executed_at"]) < end
                    if fired and event["status"] in steps:
                        steps[event["status"]] += 1
                for row in self.page("/v1/notifications/", ada.bearer, incident_id=incident["id"]):
                    sent = row["sent_at"] and start <= parse_time(row["sent_at"]) < end
                    page = row["event"] == "escalated" and row["webhook_id"] is None
                    if sent and page and row["status"] == "sent" and row["user_id"] is not None:
                        counts[row["user_id"]] = counts.get(row["user_id"], 0) + 1
                        pages.setdefault(row["user_id"], set()).add(incident["id"])
            keys: dict[str, list[int]] = {}
            for incident in incidents:
                if incident["dedup_key"] is not None:
                    keys.setdefault(incident["dedup_key"], []).append(incident["alert_count"])
            alerts = sum(i["alert_count"] for i in incidents)
            ranked = sorted(keys.items(), key=lambda kv: (-len(kv[1]), -sum(kv[1]), kv[0]))
            return {
                "service_id": sid(),
                "incidents": {"total": len(incidents), "by_severity": by_severity},
                "time_to_acknowledge": times("acknowledged_at"),
                "time_to_resolve": times("resolved_at"),
                "escalation_steps": {"fired": sum(steps.values()), **steps},
                "pages": sorted(((-n, user), len(pages[user])) for user, n in counts.items()),
                "noisiest_services": [
                    {"service_id": sid(), "name": f"e2e-incidents-{run}",
                     "incidents": len(incidents), "alerts": alerts}
                ] if incidents else [],
                "noisiest_dedup_keys": [
                    {"service_id": sid(), "dedup_key": k, "incidents": len(v), "alerts": sum(v)}
                    for k, v in ranked[:10]
                ],
            }  # fmt: skip

        with self.check(
            "GET /v1/analytics/incidents: this run's service, figure by figure", ANALYTICS
        ):
            first = min(
                parse_time(i["created_at"])
                for i in self.page("/v1/incidents/", ada.bearer, service_id=sid())
            )
            start = first.replace(microsecond=0) - timedelta(minutes=1)
            end = now_utc().replace(microsecond=0) + timedelta(minutes=1)
            params = {"start": start.isoformat(), "end": end.isoformat(), "service_id": sid()}

            def agreed() -> tuple[dict[str, Any], dict[str, Any]] | None:
                # Step 2's page may still be on its way: ask until both sides have settled.
                report = self.api.get(path, token=bob.bearer, params=params)
                wanted = expected(start, end)
                users = report["pages_by_user"]
                seen = sorted(((-u["pages"], u["user_id"]), u["incidents"]) for u in users)
                return (report, wanted) if seen == wanted["pages"] else None

            report, wanted = poll("the report's pages to match the delivery log", agreed)
            expect_eq(parse_time(report["start"]), start, "start")
            expect_eq(parse_time(report["end"]), end, "end")
            for field in ("service_id", "incidents", "time_to_acknowledge", "time_to_resolve"):
                expect_eq(report[field], wanted[field], field)
            for field in ("escalation_steps", "noisiest_services", "noisiest_dedup_keys"):
                expect_eq(report[field], wanted[field], field)
            expect(report["incidents"]["total"] >= 2, "incidents A and P are not counted")
            expect(report["escalation_steps"]["executed"] >= 2, "P's two steps are not counted")
            names = {u["user_id"]: u["full_name"] for u in report["pages_by_user"]}
            expect_eq(names.get(carol.uid), carol.full_name, "carol's page, under her name")
            days = report["opened_by_day"]
            expect_eq(days[0]["date"], start.date().isoformat(), "first day")
            expect_eq(days[-1]["date"], (end - timedelta(microseconds=1)).date().isoformat(),
                      "last day")  # fmt: skip
            expect_eq(sum(d["total"] for d in days), report["incidents"]["total"], "days' sum")
        with self.check(
            "GET /v1/analytics/incidents: last 30 days by default; 422, 401", ANALYTICS
        ):
            report = self.api.get(path, token=bob.bearer)
            span = parse_time(report["end"]) - parse_time(report["start"])
            expect_eq(span, timedelta(days=30), "default range")
            expect(len(report["opened_by_day"]) in (30, 31), "a day per date of the range")
            backwards = {"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}
            answer = self.api.get(path, token=bob.bearer, params=backwards, expect=422)
            expect_detail(answer, "end must be after start")
            too_long = {"start": "2024-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}
            expect_detail(
                self.api.get(path, token=bob.bearer, params=too_long, expect=422), "366 days"
            )
            self.api.get(path, expect=401)
