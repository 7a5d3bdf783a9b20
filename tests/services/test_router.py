"""/v1/services: admins write, every user reads."""

from __future__ import annotations

import pytest


async def test_admin_creates_reads_updates_and_deletes(admin_client, user_client, harness):
    created = await admin_client.post(
        "/v1/services/", json={"name": "checkout-api", "description": "Payments"}
    )
    assert created.status_code == 201, created.text
    service = created.json()
    assert (service["name"], service["description"], service["is_active"]) == (
        "checkout-api", "Payments", True
    )  # fmt: skip
    assert service["escalation_policy_id"] is None
    # Every signed-in user reads.
    assert (await user_client.get(f"/v1/services/{service['id']}")).json() == service
    assert [s["id"] for s in (await user_client.get("/v1/services/")).json()["items"]] == [
        service["id"]
    ]
    harness.clock.advance(minutes=1)
    updated = await admin_client.put(
        f"/v1/services/{service['id']}", json={"name": "Checkout", "is_active": False}
    )
    assert updated.status_code == 200
    assert (updated.json()["name"], updated.json()["is_active"]) == ("Checkout", False)
    assert updated.json()["updated_at"] != service["updated_at"]
    deleted = await admin_client.delete(f"/v1/services/{service['id']}")
    assert deleted.status_code == 200 and deleted.json()["name"] == "Checkout"
    assert (await admin_client.get(f"/v1/services/{service['id']}")).status_code == 404


async def test_names_are_unique_whatever_the_case(admin_client, factory):
    await factory.service(name="Checkout")
    response = await admin_client.post("/v1/services/", json={"name": "CHECKOUT"})
    assert response.status_code == 409
    other = await factory.service(name="search")
    rename = await admin_client.put(f"/v1/services/{other.id}", json={"name": "checkout"})
    assert rename.status_code == 409
    # Changing only the case of its own name is fine.
    own = await admin_client.put(f"/v1/services/{other.id}", json={"name": "Search"})
    assert own.status_code == 200 and own.json()["name"] == "Search"


async def test_a_service_with_incidents_cannot_be_deleted(admin_client, factory):
    service = await factory.service()
    await factory.incident(service_id=service.id)
    response = await admin_client.delete(f"/v1/services/{service.id}")
    assert response.status_code == 409
    assert "deactivate it instead" in response.json()["detail"]
    assert (await admin_client.get(f"/v1/services/{service.id}")).status_code == 200


async def test_list_filters_and_pages(admin_client, factory):
    for name in ("alpha", "beta", "gamma_1", "gamma-2"):
        await factory.service(name=name, is_active=name != "beta")
    inactive = await admin_client.get("/v1/services/", params={"is_active": False})
    assert [s["name"] for s in inactive.json()["items"]] == ["beta"]
    # `_` is matched literally, not as a LIKE wildcard.
    search = await admin_client.get("/v1/services/", params={"q": "A_1"})
    assert [s["name"] for s in search.json()["items"]] == ["gamma_1"]
    first = (await admin_client.get("/v1/services/", params={"limit": 3})).json()
    rest = (
        await admin_client.get("/v1/services/", params={"limit": 3, "cursor": first["next_cursor"]})
    ).json()
    names = [s["name"] for s in first["items"] + rest["items"]]
    assert names == ["alpha", "beta", "gamma_1", "gamma-2"] and rest["next_cursor"] is None


@pytest.mark.parametrize(
    "body",
    [{}, {"name": ""}, {"name": "x" * 201}, {"name": "a", "extra": 1}, {"name": None}],
)
async def test_bad_bodies_are_422(admin_client, factory, body):
    assert (await admin_client.post("/v1/services/", json=body)).status_code == 422
    service = await factory.service()
    if body:
        response = await admin_client.put(f"/v1/services/{service.id}", json=body)
        assert response.status_code == 422


async def test_users_cannot_write_services(user_client, factory):
    service = await factory.service()
    assert (await user_client.post("/v1/services/", json={"name": "x"})).status_code == 403
    assert (
        await user_client.put(f"/v1/services/{service.id}", json={"name": "x"})
    ).status_code == 403
    assert (await user_client.delete(f"/v1/services/{service.id}")).status_code == 403
    assert (await user_client.get(f"/v1/services/{service.id}")).json()["name"] == service.name
