"""Who may call what: one row per endpoint, generated against the live route list.

The rows are in tests/support/authorization.py (the team matrix uses them too). A new endpoint
without a row there fails `test_every_endpoint_has_a_row`, so nobody adds a route
without deciding who may call it.
"""

from __future__ import annotations

import pytest

from tests.support.authorization import (
    ACTION_TOKEN,
    ADMIN,
    ALLOWED_ANSWER,
    BODIES,
    CALLERS,
    FEED_TOKEN,
    KEY,
    KEYS_OWN_ENDPOINT,
    OWNER,
    PUBLIC,
    ROUTING_KEY,
    RULES,
    route_list,
)


async def test_every_endpoint_has_a_row(harness):
    assert route_list(harness.app) == set(RULES), "add the new endpoint to RULES"


def expected_refusal(rule: str, caller: str, template: str) -> int | None:
    """The status a caller must get, or None when the caller is let through."""
    if caller == "integration key" and rule == KEY:
        return None if template == KEYS_OWN_ENDPOINT else 403  # a key works on its kind only
    if rule in (KEY, FEED_TOKEN):
        return 401
    if rule == ACTION_TOKEN:
        return 404
    if rule == ROUTING_KEY:
        return 400
    if rule == PUBLIC:
        return None
    if caller in ("anonymous", "deactivated", "integration key"):  # a key is not a user token
        return 401
    if rule == ADMIN and caller == "user":
        return 403
    if rule == OWNER and caller == "user":
        return 404
    return None


@pytest.mark.parametrize("caller", CALLERS)
async def test_matrix(harness, factory, caller):
    admin = await factory.user(role="admin", email="boss@example.com")
    user = await factory.user(email="member@example.com")
    deactivated = await factory.user(email="former@example.com")
    token = {
        "anonymous": None,
        "deactivated": factory.token(deactivated),
        "user": factory.token(user),
        "admin": factory.token(admin),
        "integration key": None,  # made below
    }[caller]
    async with harness.make_client(factory.token(admin)) as admin_client:
        assert (
            await admin_client.put(f"/v1/users/{deactivated.id}", json={"is_active": False})
        ).status_code == 200
        keyed = await factory.service()
        created = await admin_client.post(
            f"/v1/services/{keyed.id}/integrations/", json={"name": "g", "kind": "generic"}
        )
        token = created.json()["key"] if caller == "integration key" else token
    failures = []
    # DELETEs last, so the rows they remove are not needed afterwards.
    for method, template in sorted(RULES, key=lambda op: op[0] == "DELETE"):
        service = await factory.service()
        incident = await factory.incident()
        target = await factory.user()
        policy = await factory.policy()
        hook = await factory.webhook()
        integration = await factory.integration(service_id=service.id)
        notification = await factory.notification(user_id=admin.id)
        schedule = await factory.schedule(user_ids=[admin.id])
        override = await factory.override(schedule_id=schedule.id, user_id=admin.id)
        team = await factory.team()
        # Two managers, so that changing or removing the target's membership keeps one.
        await factory.member(team_id=team.id, user_id=target.id, role="manager")
        await factory.member(team_id=team.id, user_id=(await factory.user()).id, role="manager")
        api_key = await factory.api_key(user_id=admin.id)
        # "me": the caller's own (anyone refused never reaches it); otherwise the target's.
        owner = {"user": user, "admin": admin}.get(caller, admin) if "/me/" in template else target
        contact = await factory.contact_method(user_id=owner.id)
        rule = await factory.notification_rule(user_id=owner.id, contact_method_id=contact.id)
        path = template.format(
            method_id=contact.id,
            rule_id=rule.id,
            schedule_id=schedule.id,
            override_id=override.id,
            webhook_id=hook.id,
            integration_id=integration.id,
            notification_id=notification.id,
            channel="email",
            user_id=target.id,
            service_id=service.id,
            incident_id=incident.id,
            policy_id=policy.id,
            key_id=api_key.id,
            team_id=team.id,
            email="x@example.com",
            token="not-a-real-token",
        )
        body = BODIES.get((method, template))
        if callable(body):
            body = body(contact)
        async with harness.make_client(token) as client:
            if template == "/v1/auth/login/access-token":
                response = await client.post(path, data={"username": "a", "password": "b"})
            else:
                response = await client.request(method, path, json=body)
        refusal = expected_refusal(RULES[(method, template)], caller, template)
        if refusal is not None and response.status_code != refusal:
            failures.append(f"{method} {template}: expected {refusal}, got {response.status_code}")
        if refusal is None:
            allowed = ALLOWED_ANSWER.get(template, (200, 201))
            if response.status_code not in allowed:
                failures.append(
                    f"{method} {template}: expected one of {allowed}, got {response.status_code}"
                )
    assert failures == []
