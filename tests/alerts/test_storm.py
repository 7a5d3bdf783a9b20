"""An alert storm: past INGEST_NEW_INCIDENTS_PER_MINUTE new incidents from one integration, its
further new alerts are kept on one "alert storm" incident instead of each opening (and paging)
its own."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.incidents.models import Incident
from tests.support.data import make_integration
from tests.support.settings import make_settings


@pytest.fixture
def settings(database_url):
    return make_settings(database_url, ingest_new_incidents_per_minute=3)


async def incidents(harness) -> list[Incident]:
    async with harness.app.state.sessionmaker() as session:
        return list(await session.scalars(select(Incident).order_by(Incident.id)))


async def send(client, key, *dedup_keys):
    alerts = [
        {"summary": f"disk full on {k}", "dedup_key": k, "severity": "high"} for k in dedup_keys
    ]
    answer = await client.post("/v1/alerts/generic", json={"alerts": alerts}, params={"key": key})
    assert answer.status_code == 202, answer.text
    return answer.json()


async def test_a_storm_opens_its_budget_then_one_incident_for_the_rest(
    client, admin_client, harness
):
    key, service_id = await make_integration(admin_client, "generic")
    other_key, _ = await make_integration(admin_client, "generic", service="billing")
    nodes = [f"node-{n}" for n in range(10)]
    await send(client, key, *nodes)
    opened = await incidents(harness)
    assert [i.dedup_key for i in opened] == ["node-0", "node-1", "node-2", f"alert-storm:{1}"]
    storm = opened[3]
    assert storm.title.startswith("Alert storm: generic opened more than 3 incidents")
    assert (storm.service_id, storm.alert_count, storm.status) == (service_id, 7, "triggered")
    timeline = (await admin_client.get(f"/v1/incidents/{storm.id}/timeline")).json()["items"]
    received = [e for e in timeline if e["type"] == "alert_received"]
    assert len(received) == 7  # each alert kept, visible in the storm's timeline
    # Repeats of keys already open still go to their own incidents; more new ones to the storm.
    await send(client, key, "node-0", "node-10")
    by_key = {i.dedup_key: i for i in await incidents(harness)}
    assert by_key["node-0"].alert_count == 2 and "node-10" not in by_key
    assert by_key["alert-storm:1"].alert_count == 8
    # Another integration has its own budget.
    await send(client, other_key, "db-1")
    assert "db-1" in {i.dedup_key for i in await incidents(harness)}
    # A minute on, the budget is back: new keys open their own incidents again.
    harness.clock.advance(minutes=1)
    await send(client, key, "node-11")
    assert "node-11" in {i.dedup_key for i in await incidents(harness)}
    assert len(await incidents(harness)) == 6


async def test_with_the_limit_off_every_new_key_opens_its_own(
    client, admin_client, harness, monkeypatch
):
    monkeypatch.setattr(harness.app.state.alert_batcher.work, "storm", None)
    key, _ = await make_integration(admin_client, "generic")
    await send(client, key, *[f"n{n}" for n in range(10)])
    assert [i.dedup_key for i in await incidents(harness)] == [f"n{n}" for n in range(10)]


async def test_a_key_resolved_and_new_again_in_one_request_counts_against_the_budget(
    client, admin_client, harness
):
    """The budget is reckoned before the alerts are applied; a key that closes and opens again
    inside the request is one more new incident, and past the budget it goes to the storm."""
    key, _ = await make_integration(admin_client, "generic")
    alerts = [{"summary": f"disk full on {k}", "dedup_key": k} for k in ("a", "b", "c")]
    alerts += [{"summary": "a", "dedup_key": "a", "status": "resolved"}]
    alerts += [{"summary": "disk full on a", "dedup_key": "a"}]
    answer = await client.post("/v1/alerts/generic", json={"alerts": alerts}, params={"key": key})
    assert answer.status_code == 202, answer.text
    opened = await incidents(harness)
    assert [(i.dedup_key, i.status) for i in opened] == [
        ("a", "resolved"),
        ("b", "triggered"),
        ("c", "triggered"),
        ("alert-storm:1", "triggered"),
    ]
    assert opened[3].alert_count == 1
