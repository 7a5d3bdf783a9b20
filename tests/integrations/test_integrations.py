"""Integrations: keys shown once, stored hashed, rotated, and bound to their service."""

from __future__ import annotations

import hashlib

from sqlalchemy import select

from app.core.db import session_scope
from app.integrations import service as integration_service
from app.integrations.models import Integration


def path(service_id, rest=""):
    return f"/v1/services/{service_id}/integrations/{rest}"


async def test_the_key_is_shown_once_and_stored_only_as_a_hash(admin_client, factory, harness):
    service = await factory.service()
    created = await admin_client.post(path(service.id), json={"name": "prod", "kind": "pagerduty"})
    assert created.status_code == 201, created.text
    body = created.json()
    key = body["key"]
    assert len(key) >= 32 and key.replace("-", "").replace("_", "").isalnum()
    assert (body["kind"], body["service_id"], body["key_prefix"]) == (
        "pagerduty", service.id, key[:8],
    )  # fmt: skip
    read = (await admin_client.get(path(service.id, str(body["id"])))).json()
    assert read["key"] is None and read["key_prefix"] == key[:8]
    listed = (await admin_client.get(path(service.id))).json()["items"]
    assert [(i["id"], i["key"]) for i in listed] == [(body["id"], None)]
    async with session_scope(harness.app.state.sessionmaker) as session:
        [row] = (await session.scalars(select(Integration))).all()
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in (row.key_hash, row.key_prefix, row.name)
    async with session_scope(harness.app.state.sessionmaker) as session:
        found = await integration_service.by_key(session, key)
        assert found is not None and found.id == body["id"]
        assert await integration_service.by_key(session, key + "x") is None
        assert await integration_service.by_key(session, "") is None


async def test_rotation_invalidates_the_old_key(admin_client, factory, harness):
    service = await factory.service()
    created = (
        await admin_client.post(path(service.id), json={"name": "am", "kind": "alertmanager"})
    ).json()
    rotated = await admin_client.post(path(service.id, f"{created['id']}/rotate"))
    assert rotated.status_code == 200
    new_key = rotated.json()["key"]
    assert new_key != created["key"] and rotated.json()["rotated_at"] is not None
    async with session_scope(harness.app.state.sessionmaker) as session:
        assert await integration_service.by_key(session, created["key"]) is None
        assert (await integration_service.by_key(session, new_key)).id == created["id"]


async def test_an_integration_belongs_to_its_service(admin_client, factory):
    one, other = await factory.service(), await factory.service()
    created = (await admin_client.post(path(one.id), json={"name": "g", "kind": "grafana"})).json()
    assert (await admin_client.get(path(other.id, str(created["id"])))).status_code == 404
    assert (await admin_client.get(path(999999))).status_code == 404
    renamed = await admin_client.put(path(one.id, str(created["id"])), json={"name": "grafana"})
    assert renamed.json()["name"] == "grafana" and renamed.json()["key"] is None
    assert (
        await admin_client.put(path(one.id, str(created["id"])), json={"kind": "generic"})
    ).status_code == 422
    deleted = await admin_client.delete(path(one.id, str(created["id"])))
    assert deleted.status_code == 200
    assert (await admin_client.get(path(one.id, str(created["id"])))).status_code == 404


async def test_bad_bodies_are_422(admin_client, factory):
    service = await factory.service()
    for body in (
        {"name": "x", "kind": "nagios"},
        {"kind": "generic"},
        {"name": "", "kind": "generic"},
        {"name": "x", "kind": "generic", "key": "mine"},
    ):
        assert (await admin_client.post(path(service.id), json=body)).status_code == 422, body
