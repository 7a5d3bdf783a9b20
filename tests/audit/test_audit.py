"""The audit log: each audited object type's changes through the API are recorded (actor, action,
before/after, request id, address), secrets never; the worker and the CLI act as `system`; a
rolled-back change records nothing; `GET /v1/audit` filters, pages and is for admins only."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from app.audit.models import AuditEntry
from app.audit.recording import AUDITED, SECRETS
from app.core.db import session_scope
from app.services.models import Service
from app.worker.runner import Job, Worker
from tests.support.processes import CLI

APP = Path(__file__).resolve().parent.parent.parent / "app"


async def logged(harness, request_id: str | None = None) -> list[AuditEntry]:
    async with session_scope(harness.app.state.sessionmaker) as session:
        query = select(AuditEntry).order_by(AuditEntry.id)
        if request_id is not None:
            query = query.where(AuditEntry.request_id == request_id)
        return list(await session.scalars(query))


async def call(client, method: str, path: str, rid: str, body: Any = None) -> Any:
    response = await client.request(method, path, json=body, headers={"X-Request-ID": rid})
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


def one(entries: list[AuditEntry]) -> AuditEntry:
    assert len(entries) == 1, [(e.object_type, e.action) for e in entries]
    return entries[0]


def by_admin(entry: AuditEntry, admin, action: str, object_type: str, object_id: int) -> None:
    assert (entry.actor_type, entry.actor_id, entry.actor_name) == (
        "user",
        admin.id,
        admin.full_name,
    )
    assert (entry.action, entry.object_type, entry.object_id) == (action, object_type, object_id)
    assert entry.source_address == "127.0.0.1"


async def test_users(harness, admin_client, admin):
    created = await call(admin_client, "POST", "/v1/users/", "u1", {
        "email": "new@example.com", "password": "long enough", "full_name": "New"})  # fmt: skip
    entry = one(await logged(harness, "u1"))
    by_admin(entry, admin, "create", "user", created["id"])
    assert entry.before is None and entry.after["email"] == "new@example.com"
    assert entry.after["hashed_password"] == "[redacted]"
    assert entry.at == harness.clock.now()
    harness.clock.advance(minutes=1)
    await call(admin_client, "PUT", f"/v1/users/{created['id']}", "u2", {"role": "admin"})
    entry = one(await logged(harness, "u2"))
    by_admin(entry, admin, "update", "user", created["id"])
    assert (entry.before, entry.after) == ({"role": "user"}, {"role": "admin"})
    assert entry.at == harness.clock.now()
    await call(admin_client, "PUT", f"/v1/users/{created['id']}", "u3", {"is_active": False})
    entry = one(await logged(harness, "u3"))
    by_admin(entry, admin, "deactivate", "user", created["id"])
    assert entry.before["is_active"] is True and entry.after["is_active"] is False
    await call(admin_client, "PUT", f"/v1/users/{created['id']}", "u4", {"is_active": True})
    by_admin(one(await logged(harness, "u4")), admin, "reactivate", "user", created["id"])
    await call(admin_client, "DELETE", f"/v1/users/{created['id']}", "u5")
    entry = one(await logged(harness, "u5"))
    by_admin(entry, admin, "delete", "user", created["id"])
    assert entry.after is None and entry.before["email"] == "new@example.com"
    assert entry.before["hashed_password"] == "[redacted]"


async def test_services(harness, admin_client, admin):
    created = await call(admin_client, "POST", "/v1/services/", "s1", {"name": "checkout"})
    entry = one(await logged(harness, "s1"))
    by_admin(entry, admin, "create", "service", created["id"])
    assert entry.after["name"] == "checkout" and entry.after["description"] == ""
    await call(admin_client, "PUT", f"/v1/services/{created['id']}", "s2", {"description": "d"})
    entry = one(await logged(harness, "s2"))
    by_admin(entry, admin, "update", "service", created["id"])
    assert (entry.before, entry.after) == ({"description": ""}, {"description": "d"})
    await call(admin_client, "PUT", f"/v1/services/{created['id']}", "s3", {"description": "d"})
    assert await logged(harness, "s3") == []  # nothing changed, nothing recorded
    await call(admin_client, "DELETE", f"/v1/services/{created['id']}", "s4")
    entry = one(await logged(harness, "s4"))
    by_admin(entry, admin, "delete", "service", created["id"])
    assert entry.before["description"] == "d"


async def test_integrations(harness, admin_client, admin, factory):
    service = await factory.service()
    base = f"/v1/services/{service.id}/integrations"
    body = {"name": "am", "kind": "alertmanager"}
    created = await call(admin_client, "POST", f"{base}/", "i1", body)
    entry = one(await logged(harness, "i1"))
    by_admin(entry, admin, "create", "integration", created["id"])
    assert entry.after["key_hash"] == "[redacted]" and entry.after["name"] == "am"
    await call(admin_client, "PUT", f"{base}/{created['id']}", "i2", {"name": "renamed"})
    entry = one(await logged(harness, "i2"))
    assert (entry.before, entry.after) == ({"name": "am"}, {"name": "renamed"})
    await call(admin_client, "POST", f"{base}/{created['id']}/rotate", "i3")
    entry = one(await logged(harness, "i3"))
    by_admin(entry, admin, "rotate", "integration", created["id"])
    assert entry.before["key_hash"] == entry.after["key_hash"] == "[redacted]"
    await call(admin_client, "DELETE", f"{base}/{created['id']}", "i4")
    by_admin(one(await logged(harness, "i4")), admin, "delete", "integration", created["id"])


async def test_escalation_policies(harness, admin_client, admin):
    body = {"name": "p", "steps": [{"actions": [{"type": "set_severity", "severity": "high"}]}]}
    created = await call(admin_client, "POST", "/v1/escalation/policies/", "p1", body)
    entry = one(await logged(harness, "p1"))
    by_admin(entry, admin, "create", "escalation_policy", created["id"])
    assert entry.after["steps"] == created["steps"]
    path = f"/v1/escalation/policies/{created['id']}"
    await call(admin_client, "PUT", path, "p2", {"priority": 5})
    entry = one(await logged(harness, "p2"))
    assert (entry.before, entry.after) == ({"priority": 100}, {"priority": 5})
    await call(admin_client, "DELETE", path, "p3")
    by_admin(one(await logged(harness, "p3")), admin, "delete", "escalation_policy", created["id"])


async def test_schedules_and_overrides(harness, admin_client, admin, user):
    layer = {"name": "L", "user_ids": [user.id], "rotation_length": 1, "rotation_unit": "days",
             "start": "2026-01-01T00:00:00"}  # fmt: skip
    body = {"name": "s", "time_zone": "UTC", "layers": [layer]}
    created = await call(admin_client, "POST", "/v1/schedules/", "c1", body)
    entry = one(await logged(harness, "c1"))
    by_admin(entry, admin, "create", "schedule", created["id"])
    assert entry.after["layers"][0]["user_ids"] == [user.id]  # the layers (rotations) recorded
    path = f"/v1/schedules/{created['id']}"
    await call(admin_client, "PUT", path, "c2", {"description": "d"})
    entry = one(await logged(harness, "c2"))
    assert (entry.before, entry.after) == ({"description": ""}, {"description": "d"})
    link = await call(admin_client, "POST", f"{path}/calendar-url", "c3")
    entry = one(await logged(harness, "c3"))
    by_admin(entry, admin, "rotate", "schedule", created["id"])
    assert entry.after == {"calendar_token_hash": "[redacted]"}
    assert link["url"].split("token=")[-1] not in json.dumps([entry.before, entry.after])
    override = await call(
        admin_client,
        "POST",
        f"{path}/overrides",
        "o1",
        {"user_id": user.id, "start": "2026-11-28T00:00:00Z", "end": "2026-11-29T00:00:00Z"},
    )
    entry = one(await logged(harness, "o1"))
    by_admin(entry, admin, "create", "schedule_override", override["id"])
    assert entry.after["user_id"] == user.id
    assert entry.after["start_at"] == "2026-11-28T00:00:00+00:00"
    await call(admin_client, "DELETE", f"{path}/overrides/{override['id']}", "o2")
    by_admin(one(await logged(harness, "o2")), admin, "delete", "schedule_override", override["id"])
    await call(admin_client, "DELETE", path, "c4")
    by_admin(one(await logged(harness, "c4")), admin, "delete", "schedule", created["id"])


async def test_webhook_subscriptions(harness, admin_client, admin):
    body = {"name": "w", "url": "http://127.0.0.1:9/hook", "events": ["triggered"]}
    created = await call(admin_client, "POST", "/v1/webhooks/", "w1", body)
    secrets = [created["secret"]]
    entry = one(await logged(harness, "w1"))
    by_admin(entry, admin, "create", "webhook_subscription", created["id"])
    assert entry.after["secret"] == "[redacted]" and entry.after["url"] == body["url"]
    path = f"/v1/webhooks/{created['id']}"
    await call(admin_client, "PUT", path, "w2", {"enabled": False})
    entry = one(await logged(harness, "w2"))
    assert (entry.before, entry.after) == ({"enabled": True}, {"enabled": False})
    rotated = await call(admin_client, "POST", f"{path}/rotate-secret", "w3")
    secrets.append(rotated["secret"])
    entry = one(await logged(harness, "w3"))
    by_admin(entry, admin, "rotate", "webhook_subscription", created["id"])
    assert entry.after["secret"] == "[redacted]"
    await call(admin_client, "DELETE", path, "w4")
    by_admin(
        one(await logged(harness, "w4")), admin, "delete", "webhook_subscription", created["id"]
    )
    text = json.dumps([[e.before, e.after] for e in await logged(harness)])
    assert not [s for s in secrets if s in text]


async def test_notification_preferences(harness, user_client, user):
    path = "/v1/notification-preferences/me/email"
    await call(user_client, "PUT", path, "n1", {"enabled": True, "min_severity": "high"})
    entry = one(await logged(harness, "n1"))
    assert (entry.actor_type, entry.actor_id, entry.action) == ("user", user.id, "create")
    assert entry.object_type == "notification_preference"
    assert entry.after["min_severity"] == "high" and entry.after["user_id"] == user.id
    await call(user_client, "PUT", path, "n2", {"enabled": True, "min_severity": "low"})
    entry = one(await logged(harness, "n2"))
    assert entry.action == "update"
    assert (entry.before, entry.after) == ({"min_severity": "high"}, {"min_severity": "low"})


async def test_contact_methods_and_notification_rules(harness, user_client, user):
    method = await call(user_client, "POST", "/v1/users/me/contact-methods", "m1",
                        {"type": "voice", "address": "+14155552671"})  # fmt: skip
    entry = one(await logged(harness, "m1"))
    assert (entry.actor_id, entry.action, entry.object_type) == (
        user.id,
        "create",
        "contact_method",
    )
    assert entry.object_id == method["id"] and entry.after["address"] == "+14155552671"
    await call(user_client, "PATCH", f"/v1/users/me/contact-methods/{method['id']}", "m2",
               {"label": "Mobile"})  # fmt: skip
    entry = one(await logged(harness, "m2"))
    assert (entry.action, entry.before, entry.after) == (
        "update",
        {"label": ""},
        {"label": "Mobile"},
    )
    rule = await call(user_client, "POST", "/v1/users/me/notification-rules", "r1",
                      {"contact_method_id": method["id"], "delay_minutes": 2})  # fmt: skip
    entry = one(await logged(harness, "r1"))
    assert (entry.action, entry.object_type, entry.object_id) == (
        "create",
        "notification_rule",
        rule["id"],
    )
    assert entry.after["delay_minutes"] == 2
    await call(user_client, "PATCH", f"/v1/users/me/notification-rules/{rule['id']}", "r2",
               {"delay_minutes": 3})  # fmt: skip
    entry = one(await logged(harness, "r2"))
    assert (entry.before, entry.after) == ({"delay_minutes": 2}, {"delay_minutes": 3})
    second = await call(user_client, "POST", "/v1/users/me/notification-rules", "r3",
                        {"contact_method_id": method["id"], "delay_minutes": 9})  # fmt: skip
    # Deleting the method deletes its rules: each deletion is recorded.
    await call(user_client, "DELETE", f"/v1/users/me/contact-methods/{method['id']}", "m3")
    deleted = {
        (e.object_type, e.object_id) for e in await logged(harness, "m3") if e.action == "delete"
    }
    assert deleted == {("contact_method", method["id"]), ("notification_rule", rule["id"]),
                       ("notification_rule", second["id"])}  # fmt: skip


async def test_a_password_change_is_recorded_without_the_password(harness, user_client, user):
    await call(
        user_client,
        "POST",
        "/v1/users/me/password",
        "pw",
        {"current_password": "correct horse battery staple", "new_password": "another long one"},
    )
    entry = one(await logged(harness, "pw"))
    assert entry.action == "update" and entry.after["hashed_password"] == "[redacted]"
    assert "another long one" not in json.dumps([entry.before, entry.after])


async def test_a_rolled_back_change_records_nothing(harness, factory):
    service = await factory.service(name="before")
    already = len(await logged(harness))
    try:
        async with session_scope(harness.app.state.sessionmaker) as session:
            row = await session.get(Service, service.id)
            row.name = "after"
            await session.flush()  # the entry is written in this flush…
            raise RuntimeError("the change fails")
    except RuntimeError:
        pass
    assert len(await logged(harness)) == already  # …and goes with the rollback


async def test_a_refused_request_records_nothing(harness, admin_client, factory):
    await factory.service(name="taken")
    response = await admin_client.post(
        "/v1/services/", json={"name": "TAKEN"}, headers={"X-Request-ID": "dup"}
    )
    assert response.status_code == 409
    assert await logged(harness, "dup") == []


async def test_a_worker_job_acts_as_the_system(harness, factory):
    service = await factory.service(name="quiet")

    async def rename(ctx) -> int:
        async with session_scope(ctx.sessions) as session:
            (await session.get(Service, service.id)).description = "renamed by a job"
        return 0

    worker = Worker(harness.app.state.sessionmaker, harness.clock, jobs=[Job("rename", rename)],
                    settings=harness.settings)  # fmt: skip
    await worker.run_once()
    await worker.close()
    entry = (await logged(harness))[-1]
    assert (entry.actor_type, entry.actor_id, entry.actor_name) == ("system", None, "worker")
    assert (entry.action, entry.after) == ("update", {"description": "renamed by a job"})
    assert entry.request_id is None and entry.source_address is None


async def test_what_nobody_signed_in_changes_is_the_systems(harness, factory):
    """The factories write outside any request: the plain system."""
    service = await factory.service()
    entry = (await logged(harness))[-1]
    assert (entry.actor_type, entry.actor_name, entry.object_id) == ("system", "system", service.id)


async def test_the_list_filters_pages_and_is_for_admins(harness, admin_client, user_client, admin):
    services = []
    for n in range(3):
        services.append(
            await call(admin_client, "POST", "/v1/services/", f"f{n}", {"name": f"s{n}"})
        )
        harness.clock.advance(minutes=10)
    await call(admin_client, "PUT", f"/v1/services/{services[0]['id']}", "f3", {"description": "x"})
    assert (await user_client.get("/v1/audit")).status_code == 403
    answer = (await admin_client.get("/v1/audit", params={"object_type": "service"})).json()
    assert [(i["action"], i["object_id"]) for i in answer["items"]] == [
        ("update", services[0]["id"]),
        *[("create", s["id"]) for s in reversed(services)],
    ]
    item = answer["items"][0]
    assert item["actor"] == {"type": "user", "id": admin.id, "name": admin.full_name}
    assert item["before"] == {"description": ""} and item["after"] == {"description": "x"}
    assert item["request_id"] == "f3" and item["source_address"] == "127.0.0.1"
    assert set(item) == {"id", "at", "actor", "action", "object_type", "object_id", "before",
                         "after", "request_id", "source_address", "team_id"}  # fmt: skip

    async def ids(**params) -> list[int]:
        response = await admin_client.get("/v1/audit", params=params)
        assert response.status_code == 200, response.text
        return [i["object_id"] for i in response.json()["items"]]

    first = services[0]["id"]
    assert await ids(object_type="service", object_id=first) == [first, first]
    assert await ids(action="update") == [first]
    assert len(await ids(actor_id=admin.id)) == 4
    assert await ids(actor_id=admin.id + 1000) == []
    start = harness.clock.now() - timedelta(minutes=30)
    assert await ids(object_type="service", since=(start + timedelta(minutes=10)).isoformat(),
                     until=(start + timedelta(minutes=25)).isoformat()) == [
        services[2]["id"], services[1]["id"]]  # fmt: skip
    # Pages of two, newest first, without gaps or repeats.
    seen, cursor = [], None
    while True:
        params = {"limit": 2, "object_type": "service", **({"cursor": cursor} if cursor else {})}
        page = (await admin_client.get("/v1/audit", params=params)).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [i["id"] for i in answer["items"]] and len(seen) == 4
    for bad in ({"object_type": "incident"}, {"action": "erase"}, {"object_id": "x"},
                {"actor_id": 0}, {"since": "yesterday"}, {"until": "2026-01-01T00:00:00"},
                {"cursor": "nonsense"}, {"limit": 0}):  # fmt: skip
        response = await admin_client.get("/v1/audit", params=bad)
        assert response.status_code == 422, (bad, response.text)


def test_every_audited_secret_is_a_column():
    for cls, secret_columns in SECRETS.items():
        assert cls in AUDITED
        assert secret_columns <= set(cls.__table__.c.keys())


def test_no_core_statement_writes_an_audited_table():
    """Core insert/update/delete statements bypass the session's recording: none may name an
    audited class (or its table) anywhere in app/."""
    names = "|".join(sorted({c.__name__ for c in AUDITED} | {c.__tablename__ for c in AUDITED}))
    pattern = re.compile(rf"\b(?:insert|update|delete|sql_update)\(\s*(?:{names})\b")
    found = [
        f"{path.relative_to(APP)}: {match.group(0)}"
        for path in APP.rglob("*.py")
        for match in pattern.finditer(path.read_text())
    ]
    # Bookkeeping, not configuration: an API key's last use (once a minute at most, on reads
    # too, where the request's session may not write).
    assert found == ["apikeys/service.py: update(ApiKey"]


def test_the_cli_acts_as_the_system(tmp_path):
    """`incident-management create-admin`, run as a process: its user is recorded as made by
    the system, named `cli`."""
    database = tmp_path / "cli.db"
    skip = {"DATABASE_URL", "SECRET_KEY", "ENVIRONMENT", "LOG_FORMAT", "LOG_LEVEL"}
    env = {k: v for k, v in os.environ.items() if k not in skip}
    env.update(DATABASE_URL=f"sqlite:///{database}", ADMIN_PASSWORD="a long admin passphrase")
    done = subprocess.run(
        [CLI, "create-admin", "--email", "root@example.com"], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT actor_type, actor_id, actor_name, action, object_type, after FROM audit_log"
        ).fetchall()
    [(actor_type, actor_id, actor_name, action, object_type, after)] = rows
    assert (actor_type, actor_id, actor_name) == ("system", None, "cli")
    assert (action, object_type) == ("create", "user")
    after = json.loads(after)
    assert after["email"] == "root@example.com" and after["hashed_password"] == "[redacted]"
