"""API keys: made once and stored as a hash; every kind of endpoint takes one; revocation,
expiry and the owner's deactivation stop it at once (on another process too); a key never
carries more than its owner; keys cannot make keys; last use is noted once a minute; every change
is in the audit log with the key as actor."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import select

from app.apikeys.models import ApiKey
from app.audit.models import AuditEntry
from app.core.db import session_scope
from app.main import create_app
from app.users.models import User
from tests.factories import DEFAULT_PASSWORD


async def rows(harness, model, *where):
    async with session_scope(harness.app.state.sessionmaker) as session:
        return list(await session.scalars(select(model).where(*where).order_by(model.id)))


async def make_key(client, **body):
    body = {"name": "ci", "role": "user", **body}
    response = await client.post("/v1/api-keys", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def test_the_key_is_shown_once_and_only_its_hash_is_stored(harness, user_client, user):
    made = await make_key(user_client, name="deploys")
    key = made["key"]
    assert key.startswith(made["prefix"] + "_") and made["prefix"].startswith("imsk_")
    assert (made["kind"], made["role"], made["user_id"]) == ("personal", "user", user.id)
    [stored] = await rows(harness, ApiKey)
    assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in str([getattr(stored, c.key) for c in ApiKey.__table__.c])
    listed = (await user_client.get("/v1/api-keys")).json()
    assert [k["prefix"] for k in listed["items"]] == [made["prefix"]]
    assert listed["next_cursor"] is None
    again = (await user_client.get(f"/v1/api-keys/{made['id']}")).json()
    assert "key" not in again and "key" not in listed["items"][0]
    assert key not in str(listed) + str(again)


async def test_every_kind_of_endpoint_takes_a_key(harness, user_client, user, factory):
    key = (await make_key(user_client))["key"]
    incident = await factory.incident()
    async with harness.make_client(key) as client:
        me = await client.get("/v1/users/me")
        assert me.status_code == 200 and me.json()["id"] == user.id
        assert (await client.get("/v1/incidents/")).status_code == 200
        ack = await client.post(f"/v1/incidents/{incident.id}/acknowledge")
        assert ack.status_code == 200 and ack.json()["acknowledged_by"] == user.id
        opened = await client.post("/v1/incidents/", json={"title": "from a script"})
        assert opened.status_code == 201, opened.text
        timeline = (await client.get(f"/v1/incidents/{opened.json()['id']}/timeline")).json()
    # The timeline names the person, as with a token.
    assert timeline["items"][0]["actor"] == {"type": "user", "id": user.id, "name": user.full_name}


async def test_a_revoked_key_stops_at_once_on_another_process(
    harness, settings, clock, user_client
):
    made = await make_key(user_client)
    other = create_app(settings, clock=clock)  # a second process on the same database
    async with other.router.lifespan_context(other):
        import httpx

        def second(key):
            return httpx.AsyncClient(
                transport=httpx.ASGITransport(app=other), base_url="http://test",
                headers={"Authorization": f"Bearer {key}"},
            )  # fmt: skip

        async with second(made["key"]) as client:
            assert (await client.get("/v1/users/me")).status_code == 200
            revoked = await user_client.delete(f"/v1/api-keys/{made['id']}")
            assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
            answer = await client.get("/v1/users/me")
            assert answer.status_code == 401
            assert answer.json() == {"detail": "Invalid, expired or revoked API key"}
            assert (await client.post("/v1/incidents/", json={"title": "t"})).status_code == 401
    # Twice: a conflict, nothing changed.
    again = await user_client.delete(f"/v1/api-keys/{made['id']}")
    assert again.status_code == 409
    assert (await user_client.get(f"/v1/api-keys/{made['id']}")).json()["revoked_at"] == (
        revoked.json()["revoked_at"]
    )


async def test_an_expired_key_is_refused(harness, user_client):
    soon = harness.clock.now() + timedelta(hours=1)
    made = await make_key(user_client, expires_at=soon.isoformat())
    async with harness.make_client(made["key"]) as client:
        assert (await client.get("/v1/users/me")).status_code == 200
        harness.clock.advance(timedelta(hours=1))
        assert (await client.get("/v1/users/me")).status_code == 401
        assert (await client.post("/v1/incidents/", json={"title": "t"})).status_code == 401


async def test_a_deactivated_owners_key_is_refused(harness, admin_client, user_client, user):
    made = await make_key(user_client)
    assert (await admin_client.put(f"/v1/users/{user.id}", json={"is_active": False})).is_success
    async with harness.make_client(made["key"]) as client:
        assert (await client.get("/v1/users/me")).status_code == 401


async def test_a_read_only_key_only_reads(harness, user_client, factory):
    made = await make_key(user_client, role="read-only")
    incident = await factory.incident()
    async with harness.make_client(made["key"]) as client:
        assert (await client.get(f"/v1/incidents/{incident.id}")).status_code == 200
        assert (await client.post(f"/v1/incidents/{incident.id}/acknowledge")).status_code == 403
        assert (await client.post("/v1/incidents/", json={"title": "t"})).status_code == 403
    assert (await user_client.get(f"/v1/incidents/{incident.id}")).json()["status"] == "triggered"


async def test_a_personal_key_carries_at_most_its_owners_role(harness, user_client, admin_client):
    asked = await user_client.post("/v1/api-keys", json={"name": "x", "role": "admin"})
    assert asked.status_code == 403
    assert await rows(harness, ApiKey) == []
    # An admin's user-role key is no admin; an admin demoted later loses admin through a key.
    weak = await make_key(admin_client, role="user")
    strong = await make_key(admin_client, role="admin")
    async with harness.make_client(weak["key"]) as client:
        assert (await client.get("/v1/users/")).status_code == 403
    async with harness.make_client(strong["key"]) as client:
        assert (await client.get("/v1/users/")).status_code == 200


async def test_a_demoted_owner_loses_admin_through_the_key(harness, factory, admin_client):
    other = await factory.user(role="admin", email="second@example.com")
    async with harness.make_client(factory.token(other)) as client:
        strong = await make_key(client, role="admin")
    assert (await admin_client.put(f"/v1/users/{other.id}", json={"role": "user"})).is_success
    async with harness.make_client(strong["key"]) as client:
        assert (await client.get("/v1/users/")).status_code == 403
        assert (await client.get("/v1/users/me")).status_code == 200


async def test_only_admins_make_organisation_keys(harness, user_client):
    body = {"name": "monitoring", "kind": "organisation", "role": "user"}
    assert (await user_client.post("/v1/api-keys", json=body)).status_code == 403
    assert await rows(harness, ApiKey) == []
    assert (await user_client.get("/v1/api-keys?all=true")).status_code == 403


async def test_keys_cannot_make_keys_nor_change_passwords(harness, admin_client, user_client):
    made = await make_key(admin_client, role="admin")
    async with harness.make_client(made["key"]) as client:
        minted = await client.post("/v1/api-keys", json={"name": "y", "role": "user"})
        assert minted.status_code == 403
        changed = await client.post(
            "/v1/users/me/password",
            json={"current_password": DEFAULT_PASSWORD, "new_password": "another long one"},
        )
        assert changed.status_code == 403
    assert len(await rows(harness, ApiKey)) == 1


async def test_another_users_key_is_not_found(harness, user_client, factory):
    made = await make_key(user_client)
    stranger = await factory.user()
    async with harness.make_client(factory.token(stranger)) as client:
        assert (await client.get(f"/v1/api-keys/{made['id']}")).status_code == 404
        assert (await client.delete(f"/v1/api-keys/{made['id']}")).status_code == 404
        assert (await client.get("/v1/api-keys")).json()["items"] == []


async def test_bad_bodies_are_refused(harness, admin_client):
    past = (harness.clock.now() - timedelta(minutes=1)).isoformat()
    cases = [
        {"name": "", "role": "user"},
        {"name": "x" * 201, "role": "user"},
        {"name": "x", "role": "user", "expires_at": past},
        {"name": "x", "role": "user", "expires_at": "2030-01-01T00:00:00"},  # no offset
        {
            "name": "x",
            "kind": "organisation",
            "role": "user",
            "team_id": 999,
            "team_role": "observer",
        },
        {"name": "x", "kind": "organisation", "role": "user", "team_role": "observer"},
    ]
    for body in cases:
        answer = await admin_client.post("/v1/api-keys", json=body)
        assert answer.status_code == 422, (body, answer.text)
    assert await rows(harness, ApiKey) == []


async def test_last_use_is_noted_once_a_minute(harness, user_client):
    made = await make_key(user_client)
    async with harness.make_client(made["key"]) as client:
        assert (await client.get("/v1/users/me")).status_code == 200
        [key] = await rows(harness, ApiKey)
        first = key.last_used_at
        assert first == harness.clock.now() and key.last_used_from == "127.0.0.1"
        harness.clock.advance(timedelta(seconds=30))
        assert (await client.post("/v1/incidents/", json={"title": "t"})).status_code == 201
        [key] = await rows(harness, ApiKey)
        assert key.last_used_at == first  # throttled
        harness.clock.advance(timedelta(seconds=31))
        assert (await client.get("/v1/incidents/")).status_code == 200
        [key] = await rows(harness, ApiKey)
        assert key.last_used_at == harness.clock.now()


async def test_an_organisation_key_acts_as_its_service_account(harness, admin_client, client):
    made = await make_key(admin_client, kind="organisation", name="Monitoring", role="user")
    [account] = await rows(harness, User, User.id == made["user_id"])
    assert account.is_service_account and account.full_name == "API key: Monitoring"
    assert account.email == f"apikey-{made['prefix'].lower()}@api-keys.invalid"
    # Never signs in, never listed among people, never put on call or assigned.
    login = await client.post(
        "/v1/auth/login/access-token", data={"username": account.email, "password": "!"}
    )
    assert login.status_code == 401
    people = (await admin_client.get("/v1/users/")).json()["items"]
    assert account.id not in [p["id"] for p in people]
    schedule = {
        "name": "s", "time_zone": "UTC",
        "layers": [{"name": "l", "user_ids": [account.id], "rotation_length": 1,
                    "rotation_unit": "days", "start": "2026-03-27T09:00:00"}],
    }  # fmt: skip
    assert (await admin_client.post("/v1/schedules/", json=schedule)).status_code == 422
    async with harness.make_client(made["key"]) as keyed:
        opened = await keyed.post("/v1/incidents/", json={"title": "from monitoring"})
        assert opened.status_code == 201
    # Revoking it deactivates the account.
    assert (await admin_client.delete(f"/v1/api-keys/{made['id']}")).status_code == 200
    [account] = await rows(harness, User, User.id == made["user_id"])
    assert not account.is_active


async def test_changes_through_a_key_are_audited_with_the_key_as_actor(
    harness, admin_client, admin
):
    made = await make_key(admin_client, role="admin")
    async with harness.make_client(made["key"]) as client:
        created = await client.post("/v1/services/", json={"name": "payments"})
        assert created.status_code == 201
    entries = await rows(harness, AuditEntry, AuditEntry.object_type == "service")
    [entry] = entries
    assert (entry.actor_type, entry.actor_id) == ("api_key", made["id"])
    assert entry.actor_name == f"{admin.full_name} (API key {made['prefix']})"
    # The key's own life: created and revoked, with before and after, never the hash.
    assert (await admin_client.delete(f"/v1/api-keys/{made['id']}")).status_code == 200
    own = await rows(harness, AuditEntry, AuditEntry.object_type == "api_key")
    assert [(e.action, e.actor_type, e.actor_id) for e in own] == [
        ("create", "user", admin.id),
        ("revoke", "user", admin.id),
    ]
    assert own[0].after["key_hash"] == "[redacted]" and own[0].after["prefix"] == made["prefix"]
    assert own[1].before == {"revoked_at": None} and own[1].after["revoked_at"]
    listed = (await admin_client.get("/v1/audit?object_type=api_key")).json()["items"]
    assert {e["action"] for e in listed} == {"create", "revoke"}
