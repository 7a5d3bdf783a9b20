"""`/metrics`: a scripted run through the API and the worker, then the series that must have moved
by exactly what the run did. Counters are per process, so each test compares two scrapes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.data import make_integration
from tests.support.settings import make_settings

POLICIES = "/v1/escalation/policies/"

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client, **headers) -> Series:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def moved(before: Series, after: Series, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in after, f"{name}{labels} is not exposed"
    return after[key] - before.get(key, 0.0)


async def alert(client, key: str, expect: int = 202, **fields) -> dict:
    body = {"summary": "Checkout down", "severity": "critical", "dedup_key": "checkout"} | fields
    headers = {"X-Integration-Key": key}
    response = await client.post("/v1/alerts/generic", json=body, headers=headers)
    assert response.status_code == expect, response.text
    return response.json()


class TestScriptedRun:
    @pytest.fixture
    def settings(self, database_url, smtp_server):
        _, port = smtp_server
        return make_settings(database_url, smtp_host="127.0.0.1", smtp_port=port)

    async def test_every_series_moves_by_what_the_run_did(
        self, harness, admin_client, client, user, smtp_server
    ):
        inbox, _ = smtp_server
        steps = [
            {"delay_minutes": 0, "targets": [{"type": "user", "id": user.id}],
             "actions": [{"type": "notify"}]},
            {"delay_minutes": 5, "targets": [{"type": "user", "id": user.id}],
             "actions": [{"type": "notify"}]},
        ]  # fmt: skip
        policy = await admin_client.post(POLICIES, json={"name": "page", "steps": steps})
        assert policy.status_code == 201, policy.text
        key, _ = await make_integration(admin_client, "generic")
        before = await scrape(client)

        # Alerts: two new incidents, one alert deduplicated into the first, the second resolved,
        # one request refused (a wrong key).
        await alert(client, key)
        await alert(client, key)
        await alert(client, key, dedup_key="payments", severity="low")
        await alert(client, key, dedup_key="payments", status="resolved")
        await alert(client, "not-a-key", expect=401)
        listed = await admin_client.get("/v1/incidents/", params={"status": "triggered"})
        [open_incident] = listed.json()["items"]
        incident_id = open_incident["id"]

        # Step 1 fires now; its email goes out 3 s later. Step 2 becomes due 5 minutes after
        # step 1 and fires 90 s late; then the incident is acknowledged.
        await harness.app.state.worker.run_once(_jobs("fire_escalations"))
        harness.clock.advance(timedelta(seconds=3))
        await harness.app.state.worker.run_once(_jobs("deliver_notifications"))
        assert len(inbox.messages) == 1
        harness.clock.advance(timedelta(minutes=5, seconds=90 - 3))
        middle = await scrape(client)
        await harness.run_jobs()
        assert len(inbox.messages) == 2
        ack = await admin_client.post(f"/v1/incidents/{incident_id}/acknowledge")
        assert ack.status_code == 200, ack.text
        after = await scrape(client)

        alerts = {o: moved(before, after, "ims_alerts_received_total", kind="generic", outcome=o)
                  for o in ("new", "deduplicated", "resolved", "rejected")}  # fmt: skip
        assert alerts == {"new": 2, "deduplicated": 1, "resolved": 1, "rejected": 1}
        assert moved(before, after, "ims_incidents_total", event="opened", severity="critical") == 1
        assert moved(before, after, "ims_incidents_total", event="opened", severity="low") == 1
        assert moved(before, after, "ims_incidents_total", event="resolved", severity="low") == 1
        assert (
            moved(before, after, "ims_incidents_total", event="acknowledged", severity="critical")
            == 1
        )
        assert moved(before, after, "ims_escalation_steps_total", status="executed") == 2
        # Lateness: step 1 on time, step 2 90 s late (the clock is frozen between moves).
        assert moved(before, after, "ims_escalation_step_lateness_seconds_count") == 2
        assert moved(before, after, "ims_escalation_step_lateness_seconds_sum") == 90
        assert moved(before, after, "ims_escalation_step_lateness_seconds_bucket", le="60.0") == 1
        assert moved(before, after, "ims_escalation_step_lateness_seconds_bucket", le="300.0") == 2
        assert moved(before, after, "ims_notifications_total", channel="email", outcome="sent") == 2
        # Page 1 waited 3 s for the delivery loop, page 2 none.
        assert moved(before, after, "ims_notification_delivery_seconds_sum", channel="email") == 3
        assert moved(before, after, "ims_notification_delivery_seconds_count", channel="email") == 2
        # Requests by route template, method and status, with their latency.
        route = "/v1/incidents/{incident_id}/acknowledge"
        assert moved(before, after, "ims_http_requests_total",
                     route=route, method="POST", status="200") == 1  # fmt: skip
        assert moved(before, after, "ims_http_requests_total",
                     route="/v1/alerts/generic", method="POST", status="202") == 4  # fmt: skip
        assert moved(before, after, "ims_http_requests_total",
                     route="/v1/alerts/generic", method="POST", status="401") == 1  # fmt: skip
        assert moved(before, after, "ims_http_request_duration_seconds_count",
                     route=route, method="POST") == 1  # fmt: skip
        # Queue: step 2 was due and unclaimed for 90 s at the middle scrape; none now.
        assert middle[("ims_worker_queue_depth", (("queue", "escalation"),))] == 1
        assert middle[("ims_worker_queue_oldest_age_seconds", (("queue", "escalation"),))] == 90
        assert after[("ims_worker_queue_depth", (("queue", "escalation"),))] == 0
        assert after[("ims_worker_queue_oldest_age_seconds", (("queue", "escalation"),))] == 0
        assert after[("ims_worker_queue_depth", (("queue", "notification"),))] == 0


def _jobs(name: str):
    from app.worker.runner import JOBS

    return [job for job in JOBS if job.name == name]


async def test_unmatched_paths_share_one_label_value(client):
    before = await scrape(client)
    for n in range(3):
        assert (await client.get(f"/no/such/path/{n}")).status_code == 404
    after = await scrape(client)
    assert moved(before, after, "ims_http_requests_total",
                 route="unmatched", method="GET", status="404") == 3  # fmt: skip
    assert not any("/no/such" in str(labels) for _, labels in after)


async def test_the_pool_gauge_counts_connections_in_use(harness, client):
    before = await scrape(client)
    async with harness.app.state.engine.connect():  # one of the api pool's, no transaction
        during = await scrape(client)
    after = await scrape(client)
    key = ("ims_db_pool_connections_in_use", (("pool", "api"),))
    assert during[key] - before[key] == 1
    assert after[key] == before[key]


async def test_the_queue_counts_due_pages_and_snoozes_not_future_ones(harness, client):
    clock = harness.clock
    now = clock.now()
    due = now - timedelta(seconds=40)
    await harness.factory.notification(status="pending", next_attempt_at=due)
    await harness.factory.notification(status="pending", next_attempt_at=now + timedelta(hours=1))
    # Being sent, but its lease ran out: due again.
    await harness.factory.notification(
        status="sending", next_attempt_at=now - timedelta(hours=1),
        lease_until=now - timedelta(seconds=10),
    )  # fmt: skip
    await harness.factory.incident(status="snoozed", snoozed_until=now - timedelta(seconds=7))
    series = await scrape(client)
    assert series[("ims_worker_queue_depth", (("queue", "notification"),))] == 2
    assert series[("ims_worker_queue_oldest_age_seconds", (("queue", "notification"),))] == 3600
    assert series[("ims_worker_queue_depth", (("queue", "snooze"),))] == 1
    assert series[("ims_worker_queue_oldest_age_seconds", (("queue", "snooze"),))] == 7


class TestAccess:
    @pytest.fixture
    def settings(self, database_url):
        return make_settings(
            database_url, metrics_access="token", metrics_token="a-long-metrics-token"
        )

    async def test_a_token_is_required_when_set(self, client):
        assert (await client.get("/metrics")).status_code == 401
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        series = await scrape(client, Authorization="Bearer a-long-metrics-token")
        assert ("ims_worker_queue_depth", (("queue", "escalation"),)) in series


class TestOff:
    @pytest.fixture
    def settings(self, database_url):
        return make_settings(database_url, metrics_access="off")

    async def test_off_is_not_found(self, client):
        assert (await client.get("/metrics")).status_code == 404


def test_token_mode_without_a_token_is_refused(database_url):
    with pytest.raises(ValueError, match="METRICS_TOKEN"):
        make_settings(database_url, metrics_access="token", metrics_token="short")


def sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_released_savepoint_does_not_count_a_transaction_that_then_rolls_back(engine):
    from sqlalchemy import text

    from app.core import metrics
    from app.core.db import create_sessionmaker

    before = sample("ims_incidents_total", event="opened", severity="savepoint")
    async with create_sessionmaker(engine)() as session:
        metrics.count_incidents(session, "opened", ["savepoint"])
        async with session.begin_nested():  # SQLAlchemy's after_commit fires on its release
            await session.execute(text("SELECT 1"))
        await session.rollback()
    assert sample("ims_incidents_total", event="opened", severity="savepoint") == before
    async with create_sessionmaker(engine)() as session:
        metrics.count_incidents(session, "opened", ["savepoint"])
        async with session.begin_nested():
            await session.execute(text("SELECT 1"))
        await session.commit()
    assert sample("ims_incidents_total", event="opened", severity="savepoint") == before + 1


async def test_steps_of_a_batch_that_rolled_back_are_not_counted(
    harness, admin_client, client, user, monkeypatch
):
    """One by one after the batch failed, the third step meets a lock: the whole transaction
    rolls back, the steps written before it included, and none may be counted."""
    from sqlalchemy import func, select

    from app.escalation import firing
    from app.escalation.models import EscalationEvent

    step = {"delay_minutes": 0, "targets": [{"type": "user", "id": user.id}],
            "actions": [{"type": "notify"}]}  # fmt: skip
    policy = await admin_client.post(POLICIES, json={"name": "p", "steps": [step]})
    assert policy.status_code == 201
    key, _ = await make_integration(admin_client, "generic")
    for n in range(3):
        await alert(client, key, dedup_key=f"k{n}")

    class LockConflict(Exception):
        orig = type("Orig", (), {"sqlstate": "55P03"})()  # lock_not_available

    real_apply, calls = firing.apply, []

    async def flaky(session, plans):
        calls.append(len(plans))
        if len(plans) > 1:
            raise RuntimeError("the batch fails: one by one")
        if len(calls) == 4:  # the third step alone: a request holds its incident
            raise LockConflict()
        await real_apply(session, plans)

    monkeypatch.setattr(firing, "apply", flaky)
    before = sample("ims_escalation_steps_total", status="executed")
    await harness.app.state.worker.run_once(_jobs("fire_escalations"))
    async with harness.app.state.sessionmaker() as session:
        fired = await session.scalar(
            select(func.count()).where(EscalationEvent.status != "scheduled")
        )
    assert calls == [3, 1, 1, 1] and fired == 0
    assert sample("ims_escalation_steps_total", status="executed") == before


async def test_a_metric_that_cannot_be_updated_does_not_fail_a_commit(engine, caplog):
    from sqlalchemy import text

    from app.core import metrics
    from app.core.db import create_sessionmaker

    def broken() -> None:
        raise OSError("No space left on device")

    async with create_sessionmaker(engine)() as session:
        await session.execute(text("SELECT 1"))
        metrics.after_commit(session, broken)
        await session.commit()
    assert "a metric could not be updated" in caplog.text


async def test_metrics_answer_while_the_database_is_down():
    import httpx

    from app.main import create_app

    app = create_app(make_settings("postgresql://postgres@127.0.0.1:1/none"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            series = await scrape(client)
    assert series[("ims_database_up", ())] == 0
    assert not any(name == "ims_worker_queue_depth" for name, _ in series)
    assert any(name == "ims_http_requests_total" for name, _ in series)


async def test_methods_outside_http_s_usual_ones_share_one_label_value(client):
    before = await scrape(client)
    assert (await client.request("PROPFIND", "/v1/incidents/")).status_code == 405
    after = await scrape(client)
    assert moved(before, after, "ims_http_requests_total",
                 route="/v1/incidents/", method="other", status="405") == 1  # fmt: skip


def test_route_templates_without_fastapi_s_scope_entry_come_from_the_route_list(database_url):
    """The fallback for a FastAPI that keeps no chosen route context in the scope."""
    from fastapi.routing import APIRoute, iter_route_contexts

    from app.core.observe import RouteRecorder
    from app.main import create_app

    app = create_app(make_settings(database_url))
    recorder = RouteRecorder(app)
    contexts = iter_route_contexts(app.routes)
    [route] = [c.original_route for c in contexts if c.name == "read_incident"]
    assert isinstance(route, APIRoute) and route.path == "/incidents/{incident_id}"
    scope = {"app": app, "path": "/v1/incidents/5"}
    assert recorder._template(scope, route) == "/v1/incidents/{incident_id}"
