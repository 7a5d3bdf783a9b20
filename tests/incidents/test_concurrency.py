"""Concurrent requests on one incident, and paging through a large list while it grows."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import insert

from app.core.db import session_scope
from app.incidents.models import Incident


async def test_twenty_concurrent_acknowledgements_make_one_change(harness, factory):
    incident = await factory.incident()
    users = [await factory.user() for _ in range(20)]
    clients = [harness.make_client(factory.token(u)) for u in users]
    try:
        responses = await asyncio.gather(
            *(c.post(f"/v1/incidents/{incident.id}/acknowledge") for c in clients)
        )
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    assert [r.status_code for r in responses] == [200] * 20
    assert {r.json()["status"] for r in responses} == {"acknowledged"}
    # Everyone sees the one acknowledgement that won, and it happened once.
    winners = {r.json()["acknowledged_by"] for r in responses}
    assert len(winners) == 1 and winners <= {u.id for u in users}
    assert {r.json()["version"] for r in responses} == {2}
    assert await factory.timeline_types(incident.id) == ["created", "acknowledged"]


async def test_concurrent_mixed_transitions_leave_a_consistent_history(harness, factory):
    """Acknowledge, resolve and snooze race: the timeline replays to the final status."""
    incident = await factory.incident()
    user = await factory.user()
    async with harness.make_client(factory.token(user)) as client:
        url = f"/v1/incidents/{incident.id}"
        calls = [client.post(f"{url}/acknowledge") for _ in range(6)]
        calls += [client.post(f"{url}/snooze", json={"minutes": 10}) for _ in range(6)]
        calls += [client.post(f"{url}/resolve") for _ in range(6)]
        responses = await asyncio.gather(*calls)
        final = (await client.get(url)).json()
    assert {r.status_code for r in responses} <= {200, 409}
    types = await factory.timeline_types(incident.id)
    status = "triggered"
    after = {"acknowledged": "acknowledged", "snoozed": "snoozed", "resolved": "resolved"}
    for entry in types[1:]:
        status = after[entry]
    assert final["status"] == status == "resolved"
    assert types.count("resolved") == 1
    assert final["version"] == len(types)


async def test_concurrent_updates_with_the_same_version_one_wins(harness, factory):
    incident = await factory.incident()
    user = await factory.user()
    async with harness.make_client(factory.token(user)) as client:
        responses = await asyncio.gather(
            *(
                client.put(f"/v1/incidents/{incident.id}", json={"title": f"t{i}", "version": 1})
                for i in range(8)
            )
        )
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [409] * 7
    assert await factory.timeline_types(incident.id) == ["created", "updated"]


async def test_paging_10000_incidents_returns_each_once_while_new_ones_arrive(harness, factory):
    user = await factory.user()
    start = harness.clock.now()
    rows = [
        {
            "title": f"Incident {i}",
            "description": "",
            "status": ("triggered", "acknowledged", "resolved")[i % 3],
            "severity": ("critical", "high", "medium", "low", "info")[i % 5],
            "source": "api",
            "alert_count": 1,
            "labels": {},
            "custom_fields": {},
            "escalation_level": 0,
            "escalation_status": "none",
            "escalation_run": 0,
            "version": 1,
            # Many share a timestamp: the id breaks ties in the keyset.
            "created_at": start - timedelta(seconds=i // 7),
            "updated_at": start,
        }
        for i in range(10_000)
    ]
    original: set[int] = set()
    async with session_scope(harness.app.state.sessionmaker) as session:
        for chunk in range(0, len(rows), 2_000):
            ids = await session.scalars(
                insert(Incident).returning(Incident.id), rows[chunk : chunk + 2_000]
            )
            original.update(ids)
    assert len(original) == 10_000
    async with harness.make_client(factory.token(user)) as client:
        seen: list[int] = []
        cursor = None
        created_meanwhile = []
        while True:
            params = {"limit": 100} | ({"cursor": cursor} if cursor else {})
            page, new = await asyncio.gather(
                client.get("/v1/incidents/", params=params),
                client.post("/v1/incidents/", json={"title": "arrived while paging"}),
            )
            assert page.status_code == 200 and new.status_code == 201
            created_meanwhile.append(new.json()["id"])
            harness.clock.advance(seconds=1)
            body = page.json()
            seen += [item["id"] for item in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
    assert len(seen) == len(set(seen)), "an incident appeared twice"
    assert original <= set(seen), f"{len(original - set(seen))} incidents were missed"
    # Newer incidents sort before the cursor: at most the one racing the first page is seen.
    assert len(set(seen) - original) <= 1
    assert len(created_meanwhile) >= 100  # one per page fetched
