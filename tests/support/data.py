"""Data the tests set up: integrations and their keys."""

from __future__ import annotations

import httpx

from app.core.db import session_scope
from app.integrations import service as integration_service
from tests.factories import Factory
from tests.support.harness import Harness


async def make_integration(
    admin_client: httpx.AsyncClient, kind: str, service: str = "checkout-api"
) -> tuple[str, int]:
    """An integration of `kind` on the service named `service` (made if need be), through the
    API as an admin: its key and the service's id."""
    services = (await admin_client.get("/v1/services/", params={"q": service})).json()["items"]
    if services:
        service_id: int = services[0]["id"]
    else:
        created = await admin_client.post("/v1/services/", json={"name": service})
        service_id = created.json()["id"]
    response = await admin_client.post(
        f"/v1/services/{service_id}/integrations/", json={"name": kind, "kind": kind}
    )
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key, service_id


async def keyed_integration(harness: Harness, factory: Factory) -> str:
    """An integration made by the factory, with a key of its own (rotated in): the key."""
    integration = await factory.integration()
    async with session_scope(harness.app.state.sessionmaker) as session:  # type: ignore[attr-defined]
        stored = await session.get(type(integration), integration.id)
        assert stored is not None
        return await integration_service.rotate(
            session, integration=stored, now=harness.clock.now()
        )
