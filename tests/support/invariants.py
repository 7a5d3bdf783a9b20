"""What must hold in the database after the service ran, whatever happened to it meanwhile."""

from __future__ import annotations

import json
from collections import Counter

import asyncpg  # type: ignore[import-untyped]

from tests.support.databases import fetch


async def escalation_problems(url: str) -> list[str]:
    """Each due step executed exactly once, and each of its pages written once; [] when so.

    - nothing scheduled is overdue (every step that came due has fired or was cancelled);
    - one event row per incident, run, cycle and step;
    - an executed step has exactly one page per person it paged and channel, for exactly the
      people it says it paged; a step that did not execute paged nobody;
    - one `escalated` timeline entry per executed step.

    Read in one repeatable-read snapshot: the workers may still be firing while this looks.
    """
    connection = await asyncpg.connect(url, timeout=10)
    try:
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            return await _escalation_problems(connection)
    finally:
        await connection.close()


async def _escalation_problems(connection: asyncpg.Connection) -> list[str]:
    async def fetch(query: str) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await connection.fetch(query, timeout=30)
        return rows

    problems: list[str] = []
    overdue = await fetch(
        "SELECT id, incident_id, step, cycle, due_at, now() - due_at AS late "
        "FROM escalation_events WHERE status = 'scheduled' AND due_at < now() - interval '2 s'",
    )
    problems += [f"step not fired: {dict(r)}" for r in overdue]
    twice = await fetch(
        "SELECT incident_id, run, cycle, step, count(*) AS n FROM escalation_events "
        "GROUP BY incident_id, run, cycle, step HAVING count(*) > 1",
    )
    problems += [f"step scheduled twice: {dict(r)}" for r in twice]
    query = (
        "SELECT id, incident_id, run, step, cycle, status, notified_user_ids, due_at, "
        "executed_at, detail FROM escalation_events"
    )
    events = {r["id"]: r for r in await fetch(query)}
    # One page per step, person and channel; for a person with notification rules, one per
    # step, person and rule (two rules may use one channel: a text at once, another later).
    pages = await fetch(
        "SELECT escalation_event_id AS event_id, user_id, channel, payload->>'rule_id' AS rule, "
        "count(*) AS n FROM notifications "
        "WHERE escalation_event_id IS NOT NULL AND user_id IS NOT NULL "
        "GROUP BY escalation_event_id, user_id, channel, payload->>'rule_id'",
    )
    paged: dict[int, set[int]] = {}
    for page in pages:
        if page["n"] != 1:
            problems.append(f"paged {page['n']} times: {dict(page)}")
        event = events.get(page["event_id"])
        if event is None or event["status"] != "executed":
            problems.append(f"a page for a step that did not execute: {dict(page)}, {event}")
        paged.setdefault(page["event_id"], set()).add(page["user_id"])
    executed: Counter[tuple[int, int, int]] = Counter()
    for event in events.values():
        if event["status"] != "executed":
            continue
        executed[(event["incident_id"], event["step"], event["cycle"])] += 1
        said = set(json.loads(event["notified_user_ids"]))
        if said != paged.get(event["id"], set()):
            problems.append(
                f"step {event['id']} says it paged {said}, pages: {paged.get(event['id'])}"
            )
    entries = await fetch(
        "SELECT incident_id, (data->>'step')::int AS step, (data->>'cycle')::int AS cycle, "
        "count(*) AS n FROM timeline_entries WHERE type = 'escalated' "
        "GROUP BY incident_id, data->>'step', data->>'cycle'",
    )
    logged = Counter({(r["incident_id"], r["step"], r["cycle"]): r["n"] for r in entries})
    if logged != executed:
        odd = set(logged - executed) | set(executed - logged)
        problems.append(
            f"escalated entries {dict(logged - executed)} for no step; steps without one: "
            f"{dict(executed - logged)}; their events: "
            + "; ".join(
                str({k: v for k, v in dict(e).items() if k != "notified_user_ids"})
                for e in events.values()
                if (e["incident_id"], e["step"], e["cycle"]) in odd
            )
        )
    return problems


async def open_twice(url: str) -> list[asyncpg.Record]:
    """Dedup keys with more than one open incident on one service (there must be none)."""
    return await fetch(
        url,
        "SELECT service_id, dedup_key, count(*) AS n FROM incidents "
        "WHERE dedup_key IS NOT NULL AND status <> 'resolved' "
        "GROUP BY service_id, dedup_key HAVING count(*) > 1",
    )
