"""Health, root and documentation endpoints."""

from __future__ import annotations

import asyncio

import httpx

from app import __version__
from app.main import create_app
from tests.support.settings import make_settings


async def test_health_checks_the_database(client):
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "version": __version__}


async def test_health_and_readiness_are_503_when_the_database_is_down():
    # Nothing listens on port 1: the database is unreachable, the process itself is alive.
    app = create_app(make_settings("postgresql://postgres@127.0.0.1:1/none"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/health")
            ready = await client.get("/health/ready")
    assert response.status_code == 503
    assert response.json() == {"status": "error", "database": "error", "version": __version__}
    assert ready.status_code == 503
    assert (ready.json()["database"], ready.json()["migrations"]) == ("error", "unknown")


async def test_ready_when_the_schema_is_current_and_no_worker_runs_here(client):
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok", "database": "ok", "migrations": "ok", "worker": "off",
        "version": __version__,
    }  # fmt: skip


async def test_not_ready_while_migrations_are_behind_then_ready(fresh_database_url):
    from app.core.db import create_engine
    from app.core.migrations import upgrade_connection

    engine = create_engine(make_settings(fresh_database_url))
    async with engine.begin() as connection:
        await upgrade_connection(connection, "e13749274df0")  # one migration behind, or more
    app = create_app(make_settings(fresh_database_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            behind = await client.get("/health/ready")
            assert (await client.get("/health")).status_code == 200  # alive all the same
            async with engine.begin() as connection:
                await upgrade_connection(connection)
            current = await client.get("/health/ready")
    await engine.dispose()
    assert behind.status_code == 503 and behind.headers["retry-after"]
    assert (behind.json()["migrations"], behind.json()["status"]) == ("behind", "error")
    assert (current.status_code, current.json()["migrations"]) == (200, "ok")


async def test_a_schema_this_code_does_not_know_is_not_ready(client, harness):
    from sqlalchemy import text

    async with harness.app.state.engine.begin() as connection:
        head = await connection.scalar(text("SELECT version_num FROM alembic_version"))
        await connection.execute(text("UPDATE alembic_version SET version_num = 'from_the_future'"))
    try:
        answer = await client.get("/health/ready")
    finally:
        async with harness.app.state.engine.begin() as connection:
            await connection.execute(
                text("UPDATE alembic_version SET version_num = :head"), {"head": head}
            )
    assert (answer.status_code, answer.json()["migrations"]) == (503, "unknown")


async def test_not_ready_once_the_in_process_worker_has_not_ticked_for_30_s(database_url):
    from app.core.clock import FrozenClock

    clock = FrozenClock()
    app = create_app(make_settings(database_url, worker_in_process=True), clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for _ in range(100):  # its first pass, in the background
                if app.state.worker.last_tick_at is not None:
                    break
                await asyncio.sleep(0.05)
            ticking = await client.get("/health/ready")
            app.state.worker.stop()  # stuck, as far as readiness can tell
            await app.state.worker_task
            clock.advance(seconds=31)
            stalled = await client.get("/health/ready")
    assert (ticking.status_code, ticking.json()["worker"]) == (200, "ok")
    assert (stalled.status_code, stalled.json()["worker"]) == (503, "stalled")


async def test_root_names_the_service_and_its_docs(client):
    body = (await client.get("/")).json()
    assert body["name"] == "Incident Management System"
    assert (body["docs"], body["redoc"], body["openapi"]) == ("/docs", "/redoc", "/v1/openapi.json")


async def test_docs_and_openapi_list_every_endpoint(client):
    assert "swagger-ui" in (await client.get("/docs")).text
    assert "redoc" in (await client.get("/redoc")).text
    spec = (await client.get("/v1/openapi.json")).json()
    operations = {(m.upper(), p) for p, item in spec["paths"].items() for m in item}
    assert operations == {
        ("GET", "/"),
        ("GET", "/health"),
        ("GET", "/health/ready"),
        ("GET", "/metrics"),
        ("POST", "/v1/auth/signup"),
        ("POST", "/v1/auth/login/access-token"),
        ("POST", "/v1/auth/login/test-token"),
        ("POST", "/v1/auth/password-recovery/{email}"),
        ("POST", "/v1/auth/reset-password/"),
        ("GET", "/v1/users/me"),
        ("PUT", "/v1/users/me"),
        ("GET", "/v1/users/me/contact-methods"),
        ("POST", "/v1/users/me/contact-methods"),
        ("GET", "/v1/users/me/contact-methods/{method_id}"),
        ("PATCH", "/v1/users/me/contact-methods/{method_id}"),
        ("DELETE", "/v1/users/me/contact-methods/{method_id}"),
        ("POST", "/v1/users/me/contact-methods/{method_id}/verify"),
        ("POST", "/v1/users/me/contact-methods/{method_id}/confirm"),
        ("GET", "/v1/users/me/notification-rules"),
        ("POST", "/v1/users/me/notification-rules"),
        ("PATCH", "/v1/users/me/notification-rules/{rule_id}"),
        ("DELETE", "/v1/users/me/notification-rules/{rule_id}"),
        ("GET", "/v1/users/{user_id}/contact-methods"),
        ("POST", "/v1/users/{user_id}/contact-methods"),
        ("PATCH", "/v1/users/{user_id}/contact-methods/{method_id}"),
        ("DELETE", "/v1/users/{user_id}/contact-methods/{method_id}"),
        ("POST", "/v1/users/{user_id}/contact-methods/{method_id}/verified"),
        ("GET", "/v1/users/{user_id}/notification-rules"),
        ("POST", "/v1/users/{user_id}/notification-rules"),
        ("PATCH", "/v1/users/{user_id}/notification-rules/{rule_id}"),
        ("DELETE", "/v1/users/{user_id}/notification-rules/{rule_id}"),
        ("POST", "/v1/users/me/password"),
        ("GET", "/v1/users/"),
        ("POST", "/v1/users/"),
        ("GET", "/v1/users/{user_id}"),
        ("PUT", "/v1/users/{user_id}"),
        ("DELETE", "/v1/users/{user_id}"),
        ("GET", "/v1/services/"),
        ("POST", "/v1/services/"),
        ("GET", "/v1/services/{service_id}"),
        ("PUT", "/v1/services/{service_id}"),
        ("DELETE", "/v1/services/{service_id}"),
        ("GET", "/v1/incidents/"),
        ("POST", "/v1/incidents/"),
        ("GET", "/v1/incidents/{incident_id}"),
        ("PUT", "/v1/incidents/{incident_id}"),
        ("POST", "/v1/incidents/{incident_id}/acknowledge"),
        ("POST", "/v1/incidents/{incident_id}/resolve"),
        ("POST", "/v1/incidents/{incident_id}/snooze"),
        ("POST", "/v1/incidents/{incident_id}/unsnooze"),
        ("POST", "/v1/incidents/{incident_id}/unacknowledge"),
        ("POST", "/v1/incidents/{incident_id}/reopen"),
        ("POST", "/v1/incidents/{incident_id}/assign"),
        ("POST", "/v1/incidents/{incident_id}/comments"),
        ("GET", "/v1/incidents/{incident_id}/comments"),
        ("GET", "/v1/incidents/{incident_id}/timeline"),
        ("GET", "/v1/incidents/{incident_id}/escalation-events"),
        ("POST", "/v1/incidents/{incident_id}/escalate"),
        ("GET", "/v1/escalation/incidents/{incident_id}/escalation-events/"),
        ("POST", "/v1/escalation/incidents/{incident_id}/escalate/"),
        ("GET", "/v1/escalation/policies/"),
        ("POST", "/v1/escalation/policies/"),
        ("GET", "/v1/escalation/policies/{policy_id}"),
        ("PUT", "/v1/escalation/policies/{policy_id}"),
        ("DELETE", "/v1/escalation/policies/{policy_id}"),
        ("GET", "/v1/incidents/{incident_id}/notifications"),
        ("POST", "/v1/alerts/alertmanager"),
        ("POST", "/v1/alerts/grafana"),
        ("POST", "/v1/alerts/generic"),
        ("POST", "/v1/alerts/elastic"),
        ("POST", "/v2/enqueue"),
        ("GET", "/v1/services/{service_id}/integrations/"),
        ("POST", "/v1/services/{service_id}/integrations/"),
        ("GET", "/v1/services/{service_id}/integrations/{integration_id}"),
        ("PUT", "/v1/services/{service_id}/integrations/{integration_id}"),
        ("DELETE", "/v1/services/{service_id}/integrations/{integration_id}"),
        ("POST", "/v1/services/{service_id}/integrations/{integration_id}/rotate"),
        ("GET", "/v1/notification-preferences/me"),
        ("PUT", "/v1/notification-preferences/me/{channel}"),
        ("GET", "/v1/notification-preferences/{user_id}"),
        ("PUT", "/v1/notification-preferences/{user_id}/{channel}"),
        ("POST", "/v1/notification-preferences/me/{channel}/verify"),
        ("POST", "/v1/notification-preferences/me/{channel}/confirm"),
        ("POST", "/v1/notification-preferences/{user_id}/{channel}/verified"),
        ("GET", "/v1/notifications/"),
        ("GET", "/v1/notifications/{notification_id}"),
        ("POST", "/v1/api-keys"),
        ("GET", "/v1/api-keys"),
        ("GET", "/v1/api-keys/{key_id}"),
        ("DELETE", "/v1/api-keys/{key_id}"),
        ("GET", "/v1/teams/"),
        ("POST", "/v1/teams/"),
        ("GET", "/v1/teams/{team_id}"),
        ("PUT", "/v1/teams/{team_id}"),
        ("DELETE", "/v1/teams/{team_id}"),
        ("GET", "/v1/teams/{team_id}/members"),
        ("POST", "/v1/teams/{team_id}/members"),
        ("PUT", "/v1/teams/{team_id}/members/{user_id}"),
        ("DELETE", "/v1/teams/{team_id}/members/{user_id}"),
        ("GET", "/v1/webhooks/"),
        ("POST", "/v1/webhooks/"),
        ("GET", "/v1/webhooks/{webhook_id}"),
        ("PUT", "/v1/webhooks/{webhook_id}"),
        ("DELETE", "/v1/webhooks/{webhook_id}"),
        ("POST", "/v1/webhooks/{webhook_id}/rotate-secret"),
        ("POST", "/v1/webhooks/{webhook_id}/test"),
        ("GET", "/v1/schedules/"),
        ("POST", "/v1/schedules/"),
        ("GET", "/v1/schedules/{schedule_id}"),
        ("PUT", "/v1/schedules/{schedule_id}"),
        ("DELETE", "/v1/schedules/{schedule_id}"),
        ("GET", "/v1/schedules/{schedule_id}/history"),
        ("GET", "/v1/schedules/{schedule_id}/overrides"),
        ("POST", "/v1/schedules/{schedule_id}/overrides"),
        ("DELETE", "/v1/schedules/{schedule_id}/overrides/{override_id}"),
        ("GET", "/v1/schedules/{schedule_id}/on-call"),
        ("GET", "/v1/schedules/{schedule_id}/shifts"),
        ("POST", "/v1/schedules/{schedule_id}/calendar-url"),
        ("GET", "/v1/schedules/{schedule_id}/calendar.ics"),
        ("GET", "/v1/oncall"),
        ("GET", "/v1/users/me/shifts"),
        ("POST", "/v1/users/me/calendar-url"),
        ("GET", "/v1/users/{user_id}/calendar.ics"),
        ("GET", "/v1/analytics/incidents"),
        ("GET", "/v1/audit"),
        ("GET", "/v1/actions/{token}"),
        ("POST", "/v1/actions/{token}"),
    }
    # The Authorize button uses the OAuth2 password flow against the login endpoint.
    flows = spec["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]
    assert flows["password"]["tokenUrl"] == "/v1/auth/login/access-token"
    # Every operation has a description (router docstrings).
    undocumented = [
        (m, p)
        for p, item in spec["paths"].items()
        for m, op in item.items()
        if not op.get("description")
    ]
    assert undocumented == []


async def test_every_field_of_the_api_is_described(client):
    from app.openapi import FRAMEWORK_SCHEMAS

    spec = (await client.get("/v1/openapi.json")).json()
    bare = [
        f"{name}.{prop}"
        for name, schema in spec["components"]["schemas"].items()
        if not name.startswith(FRAMEWORK_SCHEMAS)
        for prop, details in schema.get("properties", {}).items()
        if not details.get("description")
    ]
    assert bare == [], "describe these in app/openapi.py (or on the field)"
    incident = spec["components"]["schemas"]["IncidentRead"]["properties"]
    assert "triggered" in incident["status"]["description"]
