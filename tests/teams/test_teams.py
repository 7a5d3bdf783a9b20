"""Teams through the API: members and roles, what a manager may change, private teams, team
webhooks, the team's audit log, and the migration that moves existing rows into one team."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import inspect, select, text

from app.audit.models import AuditEntry
from app.core.db import create_engine, session_scope
from app.notifications.models import Notification
from app.teams.models import TeamMember
from tests.support.settings import make_settings

TEAMS = "/v1/teams/"


async def _members(factory, team_id: int) -> dict[int, str]:
    async with session_scope(factory.sessionmaker) as session:
        rows = await session.execute(
            select(TeamMember.user_id, TeamMember.role).where(TeamMember.team_id == team_id)
        )
        return dict(rows.all())


async def test_an_admin_makes_a_team_and_its_manager_runs_it(harness, factory, admin_client):
    made = await admin_client.post(TEAMS, json={"name": "Payments", "description": "checkout"})
    assert made.status_code == 201, made.text
    team = made.json()
    assert team["name"] == "Payments" and team["is_private"] is False
    assert (await admin_client.post(TEAMS, json={"name": "payments"})).status_code == 409

    lead = await factory.user(email="lead@example.com")
    added = await admin_client.post(
        f"{TEAMS}{team['id']}/members", json={"email": "LEAD@example.com", "role": "manager"}
    )
    assert added.status_code == 201, added.text
    assert added.json()["user_id"] == lead.id and added.json()["role"] == "manager"

    async with harness.make_client(factory.token(lead)) as manager:
        renamed = await manager.put(f"{TEAMS}{team['id']}", json={"description": "all checkout"})
        assert renamed.status_code == 200 and renamed.json()["description"] == "all checkout"
        helper = await factory.user()
        assert (
            await manager.post(f"{TEAMS}{team['id']}/members", json={"user_id": helper.id})
        ).status_code == 201
        # A manager may not create teams, nor delete theirs: admins do.
        assert (await manager.post(TEAMS, json={"name": "Mine"})).status_code == 403
        assert (await manager.delete(f"{TEAMS}{team['id']}")).status_code == 403
        listed = (await manager.get(TEAMS, params={"mine": "true"})).json()["items"]
        assert [t["id"] for t in listed] == [team["id"]]
    assert await _members(factory, team["id"]) == {lead.id: "manager", helper.id: "responder"}


async def test_bad_member_changes_are_refused_and_change_nothing(harness, factory, admin_client):
    team = await factory.team()
    lead = await factory.user(email="only-manager@example.com")
    other = await factory.user()
    await factory.member(team_id=team.id, user_id=lead.id, role="manager")
    await factory.member(team_id=team.id, user_id=other.id, role="observer")
    before = await _members(factory, team.id)
    base = f"{TEAMS}{team.id}/members"
    refusals = [
        (await admin_client.post(base, json={"user_id": other.id}), 409),  # a member twice
        (await admin_client.post(base, json={"email": "nobody@example.com"}), 422),
        (await admin_client.post(base, json={"user_id": 999_999}), 422),
        (await admin_client.post(base, json={}), 422),  # neither id nor email
        (await admin_client.post(base, json={"user_id": other.id, "email": "x@example.com"}), 422),
        (await admin_client.post(base, json={"user_id": other.id, "role": "owner"}), 422),
        (await admin_client.put(f"{base}/{lead.id}", json={"role": "responder"}), 409),
        (await admin_client.delete(f"{base}/{lead.id}"), 409),  # the last manager
        (await admin_client.delete(f"{base}/999999"), 404),
        (await admin_client.post(f"{TEAMS}999999/members", json={"user_id": other.id}), 404),
        (await admin_client.get(f"{TEAMS}999999"), 404),
        (await admin_client.post(TEAMS, json={"name": ""}), 422),
    ]
    assert [r.status_code for r, _ in refusals] == [want for _, want in refusals]
    assert all("detail" in r.json() for r, _ in refusals)
    assert await _members(factory, team.id) == before
    # With a second manager, the first may step down.
    await admin_client.put(f"{base}/{other.id}", json={"role": "manager"})
    assert (await admin_client.delete(f"{base}/{lead.id}")).status_code == 204
    assert await _members(factory, team.id) == {other.id: "manager"}


async def test_a_team_that_owns_something_is_not_deleted(factory, admin_client):
    team = await factory.team()
    service = await factory.service(team_id=team.id)
    refused = await admin_client.delete(f"{TEAMS}{team.id}")
    assert refused.status_code == 409 and "services" in refused.json()["detail"]
    await admin_client.put(f"/v1/services/{service.id}", json={"team_id": None})
    assert (await admin_client.delete(f"{TEAMS}{team.id}")).status_code == 200
    assert (await admin_client.get(f"{TEAMS}{team.id}")).status_code == 404


async def test_a_manager_changes_only_their_teams_configuration(harness, factory):
    mine, theirs = await factory.team(), await factory.team()
    lead = await factory.user()
    await factory.member(team_id=mine.id, user_id=lead.id, role="manager")
    own = await factory.service(team_id=mine.id)
    foreign = await factory.service(team_id=theirs.id)
    loose = await factory.service()
    async with harness.make_client(factory.token(lead)) as manager:
        assert (
            await manager.put(f"/v1/services/{own.id}", json={"description": "ours"})
        ).status_code == 200
        for service in (foreign, loose):
            assert (
                await manager.put(f"/v1/services/{service.id}", json={"description": "x"})
            ).status_code == 403
        # Nor give their service away, nor take another's, nor make one outside the team.
        assert (
            await manager.put(f"/v1/services/{own.id}", json={"team_id": theirs.id})
        ).status_code == 403
        assert (
            await manager.put(f"/v1/services/{own.id}", json={"team_id": None})
        ).status_code == 403
        assert (await manager.post("/v1/services/", json={"name": "free"})).status_code == 403
        made = await manager.post("/v1/services/", json={"name": "ours-2", "team_id": mine.id})
        assert made.status_code == 201 and made.json()["team_id"] == mine.id
        assert (
            await manager.post("/v1/services/", json={"name": "x", "team_id": 999_999})
        ).status_code == 422
        keys = await manager.post(
            f"/v1/services/{own.id}/integrations/", json={"name": "am", "kind": "alertmanager"}
        )
        assert keys.status_code == 201 and keys.json()["key"]
        assert (await manager.get(f"/v1/services/{foreign.id}/integrations/")).status_code == 403
    async with session_scope(factory.sessionmaker) as session:
        from app.services.models import Service

        rows = await session.execute(select(Service.id, Service.description, Service.team_id))
        described = {r.id: (r.description, r.team_id) for r in rows}
    assert described[own.id] == ("ours", mine.id)
    assert described[foreign.id] == ("", theirs.id) and described[loose.id] == ("", None)


async def test_responders_act_on_their_teams_incidents_and_take_shifts(harness, factory):
    team = await factory.team()
    responder, observer, colleague = [await factory.user() for _ in range(3)]
    await factory.member(team_id=team.id, user_id=responder.id, role="responder")
    await factory.member(team_id=team.id, user_id=observer.id, role="observer")
    service = await factory.service(team_id=team.id)
    incident = await factory.incident(service_id=service.id)
    schedule = await factory.schedule(team_id=team.id, user_ids=[colleague.id])
    shift = {"start": "2026-11-28T00:00:00Z", "end": "2026-11-29T00:00:00Z"}
    async with harness.make_client(factory.token(observer)) as watching:
        assert (await watching.get(f"/v1/incidents/{incident.id}")).status_code == 200
        refused = await watching.post(f"/v1/incidents/{incident.id}/acknowledge")
        assert refused.status_code == 403 and "responder" in refused.json()["detail"]
        made = await watching.post("/v1/incidents/", json={"title": "t", "service_id": service.id})
        assert made.status_code == 403
    async with harness.make_client(factory.token(responder)) as acting:
        acked = await acting.post(f"/v1/incidents/{incident.id}/acknowledge")
        assert acked.status_code == 200 and acked.json()["status"] == "acknowledged"
        made = await acting.post("/v1/incidents/", json={"title": "t", "service_id": service.id})
        assert made.status_code == 201
        url = f"/v1/schedules/{schedule.id}/overrides"
        taken = await acting.post(url, json={"user_id": responder.id, **shift})
        assert taken.status_code == 201
        # Putting someone else on call is the manager's.
        assert (await acting.post(url, json={"user_id": colleague.id, **shift})).status_code == 403
        assert (await acting.delete(f"{url}/{taken.json()['id']}")).status_code == 204


async def test_a_private_teams_things_are_hidden_from_outsiders(harness, factory, admin_client):
    hidden = await factory.team(is_private=True)
    insider, outsider = await factory.user(), await factory.user()
    await factory.member(team_id=hidden.id, user_id=insider.id, role="observer")
    service = await factory.service(team_id=hidden.id)
    incident = await factory.incident(service_id=service.id, title="secret project down")
    schedule = await factory.schedule(team_id=hidden.id)
    policy = await factory.policy(team_id=hidden.id)
    public = await factory.incident(title="visible to all")
    singles = [
        f"{TEAMS}{hidden.id}", f"{TEAMS}{hidden.id}/members", f"/v1/services/{service.id}",
        f"/v1/incidents/{incident.id}", f"/v1/incidents/{incident.id}/timeline",
        f"/v1/schedules/{schedule.id}", f"/v1/escalation/policies/{policy.id}",
    ]  # fmt: skip
    lists = {
        TEAMS: hidden.id, "/v1/services/": service.id, "/v1/incidents/": incident.id,
        "/v1/schedules/": schedule.id, "/v1/escalation/policies/": policy.id,
    }  # fmt: skip
    for who, sees in ((outsider, False), (insider, True)):
        async with harness.make_client(factory.token(who)) as client:
            for path in singles:
                assert (await client.get(path)).status_code == (200 if sees else 404), path
            for path, wanted in lists.items():
                ids = [item["id"] for item in (await client.get(path)).json()["items"]]
                assert (wanted in ids) is sees, path
            listed = [i["id"] for i in (await client.get("/v1/incidents/")).json()["items"]]
            assert public.id in listed
            on_call = (await client.get("/v1/oncall")).json()["items"]
            assert (schedule.id in [s["schedule"]["id"] for s in on_call]) is sees
            # A private team's service cannot be used to open an incident by outsiders either.
            made = await client.post(
                "/v1/incidents/", json={"title": "t", "service_id": service.id}
            )
            assert made.status_code == (403 if sees else 422)  # an observer; a stranger
    assert (await admin_client.get(f"/v1/incidents/{incident.id}")).status_code == 200


async def test_the_incident_list_filters_by_team_and_my_teams(harness, factory):
    mine, other = await factory.team(), await factory.team()
    me = await factory.user()
    await factory.member(team_id=mine.id, user_id=me.id, role="responder")
    ours = await factory.incident(service_id=(await factory.service(team_id=mine.id)).id)
    theirs = await factory.incident(service_id=(await factory.service(team_id=other.id)).id)
    loose = await factory.incident()
    async with harness.make_client(factory.token(me)) as client:

        async def ids(**params: object) -> set[int]:
            answer = await client.get("/v1/incidents/", params=params)
            assert answer.status_code == 200, answer.text
            return {i["id"] for i in answer.json()["items"]}

        assert await ids() == {ours.id, theirs.id, loose.id}
        assert await ids(my_teams="true") == {ours.id}
        assert await ids(team_id=other.id) == {theirs.id}
        assert await ids(team_id=[mine.id, other.id]) == {ours.id, theirs.id}
        assert await ids(team_id=other.id, my_teams="true") == set()
        assert (await client.get("/v1/incidents/", params={"team_id": 0})).status_code == 422


async def test_a_teams_webhook_hears_only_of_its_teams_incidents(harness, factory, admin_client):
    team = await factory.team()
    team_hook = await factory.webhook(team_id=team.id, events=["triggered"])
    every_hook = await factory.webhook(events=["triggered"])
    inside = await factory.service(team_id=team.id)
    outside = await factory.service()
    for service in (inside, outside):
        made = await admin_client.post(
            "/v1/incidents/", json={"title": f"on {service.name}", "service_id": service.id}
        )
        assert made.status_code == 201
    async with session_scope(factory.sessionmaker) as session:
        rows = await session.execute(
            select(Notification.webhook_id, Notification.payload).where(
                Notification.webhook_id.is_not(None)
            )
        )
        heard = {(r.webhook_id, r.payload["incident"]["service_id"]) for r in rows}
    assert heard == {
        (team_hook.id, inside.id),
        (every_hook.id, inside.id),
        (every_hook.id, outside.id),
    }


async def test_team_changes_are_in_the_log_and_its_managers_read_it(harness, factory, admin_client):
    team = await factory.team()
    lead, stranger = await factory.user(), await factory.user()
    await factory.member(team_id=team.id, user_id=lead.id, role="manager")
    other = await factory.team()
    async with harness.make_client(factory.token(lead)) as manager:
        await manager.put(f"{TEAMS}{team.id}", json={"is_private": True})
        await manager.post(f"{TEAMS}{team.id}/members", json={"user_id": stranger.id})
        made = await manager.post("/v1/services/", json={"name": "svc", "team_id": team.id})
        log = await manager.get("/v1/audit", params={"team_id": team.id, "actor_id": lead.id})
        assert log.status_code == 200, log.text
        seen = [(e["object_type"], e["action"]) for e in log.json()["items"]]
        assert seen == [("service", "create"), ("team_member", "create"), ("team", "update")]
        change = log.json()["items"][2]
        assert change["before"] == {"is_private": False} and change["after"] == {"is_private": True}
        assert change["actor"]["id"] == lead.id and change["team_id"] == team.id
        assert (await manager.get("/v1/audit")).status_code == 403  # the whole log: admins
        assert (await manager.get("/v1/audit", params={"team_id": other.id})).status_code == 403
    async with session_scope(factory.sessionmaker) as session:
        entry = await session.scalar(
            select(AuditEntry).where(
                AuditEntry.object_type == "service", AuditEntry.object_id == made.json()["id"]
            )
        )
    assert entry is not None and entry.team_id == team.id


def test_upgrading_moves_everything_into_one_team_and_downgrading_unwinds(
    fresh_database_url, monkeypatch
):
    from app import migrations
    from app.core.migrations import downgrade_connection
    from tests.support.settings import TEST_SECRET

    monkeypatch.setenv("DATABASE_URL", fresh_database_url)
    monkeypatch.setenv("SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("ENVIRONMENT", "test")
    migrations.upgrade("a4d17c3e9b52")  # the revision before teams
    now = datetime(2026, 12, 1, tzinfo=UTC)

    async def run(statements: list[tuple[str, dict[str, object]]]) -> list[list[tuple]]:
        engine = create_engine(make_settings(fresh_database_url))
        answers = []
        async with engine.begin() as connection:
            for sql, params in statements:
                result = await connection.execute(text(sql), params)
                answers.append([tuple(r) for r in result.all()] if result.returns_rows else [])
        await engine.dispose()
        return answers

    asyncio.run(
        run(
            [
                (
                    "INSERT INTO users (id, email, full_name, role, is_active, timezone, "
                    "hashed_password, token_version, created_at, updated_at) VALUES "
                    "(1, 'a@example.com', 'A', 'admin', true, 'UTC', 'x', 0, :now, :now), "
                    "(2, 'u@example.com', 'U', 'user', true, 'UTC', 'x', 0, :now, :now)",
                    {"now": now},
                ),
                (
                    "INSERT INTO services (id, name, name_key, description, is_active, "
                    "created_at, updated_at) VALUES (1, 'api', 'api', '', true, :now, :now)",
                    {"now": now},
                ),
                (
                    "INSERT INTO schedules (id, name, name_key, description, time_zone, layers, "
                    "created_at, updated_at) VALUES (1, 'rota', 'rota', '', 'UTC', '[]', :now, "
                    ":now)",
                    {"now": now},
                ),
            ]
        )
    )
    migrations.upgrade("b8e31f6c2a17")
    teams, members, services, schedules = asyncio.run(
        run(
            [
                ("SELECT id, name FROM teams", {}),
                ("SELECT user_id, role FROM team_members ORDER BY user_id", {}),
                ("SELECT id, team_id FROM services", {}),
                ("SELECT id, team_id FROM schedules", {}),
            ]
        )
    )
    [(team_id, name)] = teams
    assert name == "Everyone"
    assert members == [(1, "manager"), (2, "responder")]
    assert services == [(1, team_id)] and schedules == [(1, team_id)]

    async def downgrade() -> tuple[set[str], list[str]]:
        engine = create_engine(make_settings(fresh_database_url))
        async with engine.begin() as connection:
            await downgrade_connection(connection, "a4d17c3e9b52")
            columns = await connection.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("services")}
            )
            tables = await connection.run_sync(lambda c: inspect(c).get_table_names())
            rows = (await connection.execute(text("SELECT name FROM services"))).scalars().all()
        await engine.dispose()
        return columns, [*tables, *rows]

    columns, found = asyncio.run(downgrade())
    assert "team_id" not in columns and "name" in columns
    assert "teams" not in found and "team_members" not in found
    assert "api" in found  # the service stays


async def test_analytics_name_a_private_teams_services_only_to_its_members(harness, factory, clock):
    hidden = await factory.team(is_private=True)
    insider, outsider = await factory.user(), await factory.user()
    await factory.member(team_id=hidden.id, user_id=insider.id, role="observer")
    secret = await factory.service(name="secret-billing", team_id=hidden.id)
    public = await factory.service(name="open-checkout")
    for service in (secret, public):
        await factory.incident(service_id=service.id, dedup_key=f"key-{service.name}")
    clock.advance(minutes=1)  # the report ends now, exclusive
    for who, sees in ((outsider, False), (insider, True)):
        async with harness.make_client(factory.token(who)) as client:
            report = (await client.get("/v1/analytics/incidents")).json()
            named = {row["service_id"] for row in report["noisiest_services"]}
            keyed = {row["service_id"] for row in report["noisiest_dedup_keys"]}
            assert public.id in named and public.id in keyed
            assert (secret.id in named, secret.id in keyed) == (sees, sees)
            assert report["incidents"]["total"] == 2  # the organisation's counts
            one = await client.get("/v1/analytics/incidents", params={"service_id": secret.id})
            assert one.status_code == (200 if sees else 404)


async def test_an_api_keys_account_is_not_made_a_member(harness, factory, admin_client):
    team = await factory.team()
    made = await admin_client.post(
        "/v1/api-keys", json={"name": "terraform", "kind": "organisation", "role": "user"}
    )
    assert made.status_code == 201, made.text
    account = made.json()["user_id"]
    refused = await admin_client.post(f"{TEAMS}{team.id}/members", json={"user_id": account})
    assert refused.status_code == 422 and "API key" in refused.json()["detail"]
    assert await _members(factory, team.id) == {}
