"""/v1/escalation/policies: admin-only CRUD with clear validation."""

from __future__ import annotations

import pytest

URL = "/v1/escalation/policies/"


def body(user_id, **overrides):
    value = {
        "name": "Critical checkout",
        "priority": 10,
        "repeat_count": 1,
        "conditions": {"severities": ["critical", "high"], "labels": {"team": "payments"},
                       "title_contains": "checkout"},
        "steps": [
            {"delay_minutes": 0, "targets": [{"type": "user", "id": user_id}],
             "actions": [{"type": "notify"}, {"type": "assign"}]},
            {"delay_minutes": 15.5, "targets": [{"type": "user", "id": user_id}],
             "actions": [{"type": "notify"}, {"type": "webhook", "url": "http://127.0.0.1:9/h"},
                         {"type": "set_severity", "severity": "critical"}]},
        ],
    }  # fmt: skip
    return value | overrides


async def test_crud(admin_client, user):
    created = await admin_client.post(URL, json=body(user.id))
    assert created.status_code == 201, created.text
    policy = created.json()
    assert policy["name"] == "Critical checkout" and policy["priority"] == 10
    assert policy["steps"][1]["delay_minutes"] == 15.5
    assert policy["steps"][1]["actions"][1] == {"type": "webhook", "url": "http://127.0.0.1:9/h"}
    assert policy["conditions"]["severities"] == ["critical", "high"]
    assert (await admin_client.get(f"{URL}{policy['id']}")).json() == policy
    listed = (await admin_client.get(URL)).json()
    assert [p["id"] for p in listed["items"]] == [policy["id"]]
    updated = await admin_client.put(
        f"{URL}{policy['id']}", json={"priority": 5, "is_active": False}
    )
    assert (updated.json()["priority"], updated.json()["is_active"]) == (5, False)
    inactive = (await admin_client.get(URL, params={"is_active": False})).json()["items"]
    assert [p["id"] for p in inactive] == [policy["id"]]
    deleted = await admin_client.delete(f"{URL}{policy['id']}")
    assert deleted.status_code == 200
    assert (await admin_client.get(f"{URL}{policy['id']}")).status_code == 404


async def test_defaults_match_everything_and_notify(admin_client, user):
    created = await admin_client.post(
        URL, json={"name": "p", "steps": [{"targets": [{"type": "user", "id": user.id}]}]}
    )
    assert created.status_code == 201, created.text
    policy = created.json()
    assert policy["steps"] == [
        {"delay_minutes": 0.0, "targets": [{"type": "user", "id": user.id}],
         "actions": [{"type": "notify"}]}
    ]  # fmt: skip
    assert policy["repeat_count"] == 0 and policy["priority"] == 100


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"steps": []}, "steps"),
        ({"steps": [{"delay_minutes": -1}] }, "delay_minutes"),
        ({"steps": [{"delay_minutes": 1441}]}, "delay_minutes"),
        ({"steps": [{"targets": []}] * 21}, "steps"),
        ({"repeat_count": 11}, "repeat_count"),
        ({"steps": [{"actions": [{"type": "webhook", "url": "ftp://x"}]}]}, "url"),
        ({"steps": [{"actions": [{"type": "webhook", "url": "not a url"}]}]}, "url"),
        ({"steps": [{"actions": [{"type": "set_severity", "severity": "urgent"}]}]}, "severity"),
        ({"steps": [{"actions": [{"type": "page"}]}]}, "actions"),
        ({"steps": [{"targets": [{"type": "team", "id": 1}]}]}, "targets"),
        ({"steps": [{"targets": [], "actions": [{"type": "notify"}]}]}, "need at least one target"),
        ({"conditions": {"severities": ["bad"]}}, "severities"),
        ({"conditions": {"colour": "red"}}, "colour"),
        ({"name": ""}, "name"),
    ],
)  # fmt: skip
async def test_invalid_policies_are_422_with_a_reason(admin_client, user, change, fragment):
    response = await admin_client.post(URL, json=body(user.id) | change)
    assert response.status_code == 422, response.text
    assert fragment in response.text
    assert (await admin_client.get(URL)).json()["items"] == []


async def test_unknown_or_inactive_targets_and_services_are_named(admin_client, factory):
    gone = await factory.user(is_active=False)
    bad = body(gone.id, conditions={"service_ids": [4242]})
    bad["steps"][1]["targets"] = [{"type": "user", "id": 999_999}, {"type": "schedule", "id": 3}]
    response = await admin_client.post(URL, json=bad)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert f"target user {gone.id} does not exist or is inactive" in detail
    assert "target user 999999 does not exist or is inactive" in detail
    assert "target schedule 3 does not exist" in detail
    assert "service 4242 does not exist" in detail


async def test_update_is_validated_too(admin_client, user):
    policy = (await admin_client.post(URL, json=body(user.id))).json()
    response = await admin_client.put(
        f"{URL}{policy['id']}", json={"steps": [{"targets": [{"type": "user", "id": 999_999}]}]}
    )
    assert response.status_code == 422
    assert (await admin_client.get(f"{URL}{policy['id']}")).json()["steps"] == policy["steps"]


async def test_delete_refused_while_open_incidents_or_services_use_it(admin_client, user):
    policy = (await admin_client.post(URL, json=body(user.id, conditions={}))).json()
    incident = (await admin_client.post("/v1/incidents/", json={"title": "x"})).json()
    assert incident["escalation_policy_id"] == policy["id"]
    service = (
        await admin_client.post(
            "/v1/services/", json={"name": "s", "escalation_policy_id": policy["id"]}
        )
    ).json()
    response = await admin_client.delete(f"{URL}{policy['id']}")
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert f"open incidents {incident['id']} use it" in detail
    assert f"services {service['id']} default to it" in detail
    await admin_client.post(f"/v1/incidents/{incident['id']}/resolve")
    await admin_client.put(f"/v1/services/{service['id']}", json={"escalation_policy_id": None})
    assert (await admin_client.delete(f"{URL}{policy['id']}")).status_code == 200
    # The resolved incident keeps its history; its policy reference is cleared.
    after = (await admin_client.get(f"/v1/incidents/{incident['id']}")).json()
    assert after["escalation_policy_id"] is None


async def test_a_service_default_must_exist(admin_client):
    response = await admin_client.post(
        "/v1/services/", json={"name": "s", "escalation_policy_id": 4242}
    )
    assert response.status_code == 422
    assert response.json() == {"detail": "Escalation policy 4242 does not exist"}


async def test_users_read_policies_without_webhook_urls_and_may_not_change_them(
    user_client, admin_client, factory
):
    hook = {"type": "webhook", "url": "https://hooks.example.com/secret-path"}
    steps = [{"delay_minutes": 0, "targets": [], "actions": [hook]}]
    policy = await factory.policy(steps=steps)
    one = f"{URL}{policy.id}"
    valid = {"name": "mine", "steps": steps}
    for method, path in [("POST", URL), ("PUT", one), ("DELETE", one)]:
        response = await user_client.request(method, path, json=valid)
        assert response.status_code == 403, (method, path)
    listed = (await user_client.get(URL)).json()["items"]
    read = (await user_client.get(one)).json()
    for shown in (next(p for p in listed if p["id"] == policy.id), read):
        assert shown["steps"][0]["actions"] == [{"type": "webhook", "url": None}]
    assert (await admin_client.get(one)).json()["steps"][0]["actions"] == [hook]
