"""Two API processes and two worker processes share one PostgreSQL database under mixed load.

For a bounded time, senders post alerts (new keys, repeats of open ones, resolves) to either API
process, and responders acknowledge, resolve and comment through either, while escalation steps
come due every 1.2 s and both workers race to fire them. Afterwards: each due step executed
exactly once with one page per target, each dedup key has at most one open incident, and every
write answered with a 2xx is in the database. No answer is a 5xx.
"""

from __future__ import annotations

import asyncio
import random
import time

from tests.support.api import Admin
from tests.support.databases import fetch
from tests.support.invariants import escalation_problems, open_twice
from tests.support.load import Answers, load_client
from tests.support.processes import Processes
from tests.support.settings import service_env
from tests.support.waiting import wait_until

LOAD_SECONDS = 8.0
SENDERS, RESPONDERS = 4, 2
KEYS = 25  # dedup keys per sender: repeats and reopenings are common
STEP = 0.02  # minutes: 1.2 s between steps


async def test_two_apis_and_two_workers_keep_every_promise_under_mixed_load(
    fault_database: str, processes: Processes
) -> None:
    url = fault_database
    env = service_env(url)
    processes.migrate(env)
    apis = [processes.api(f"api{n}", env, in_process_worker=False) for n in range(2)]
    workers = [processes.worker(f"worker{n}", env) for n in range(2)]
    for process in (*apis, *workers):
        process.start()
    for api in apis:
        await api.healthy()
    admin = Admin(apis[0].base_url)
    await admin.sign_up()
    users = [await admin.user(f"oncall{n}@example.com") for n in range(3)]
    targets = [{"type": "user", "id": user["id"]} for user in users]
    steps = [
        {"delay_minutes": 0, "targets": targets[:2]},
        {"delay_minutes": STEP, "targets": targets[1:]},
        {"delay_minutes": STEP, "targets": targets},
    ]
    await admin.policy(steps, repeat_count=1, repeat_delay_minutes=STEP)
    service = await admin.service("checkout")
    key = await admin.integration(service["id"])
    await admin.close()

    answers = Answers()
    triggered: dict[int, str] = {}  # incident id -> dedup key, from alerts answered 2xx
    resolved_by_alert: set[str] = set()  # keys whose resolve found an open incident
    acked: set[int] = set()
    resolved: set[int] = set()
    comments: set[int] = set()
    deadline = time.monotonic() + LOAD_SECONDS
    rng = random.Random(9)  # a repeatable load

    async def sender(n: int) -> None:
        clients = [load_client(api.base_url) for api in apis]
        headers = {"Authorization": f"Bearer {key}"}
        try:
            while time.monotonic() < deadline:
                client = rng.choice(clients)
                dedup_key = f"k{n}-{rng.randrange(KEYS)}"
                status = "resolved" if rng.random() < 0.2 else "firing"
                body = {"summary": f"alert {dedup_key}", "dedup_key": dedup_key, "status": status}
                answer = await answers.call(
                    client, "alert", "POST", "/v1/alerts/generic", json=body, headers=headers
                )
                if answer is not None and answer.status_code == 202:
                    for result in answer.json()["incidents"]:
                        if result["status"] in ("incident_created", "incident_updated"):
                            triggered[result["id"]] = dedup_key
                        elif result["status"] == "incident_resolved":
                            resolved_by_alert.add(dedup_key)
                await asyncio.sleep(0.02)
        finally:
            for client in clients:
                await client.aclose()

    async def responder(n: int) -> None:
        clients = [load_client(api.base_url, token=admin.token) for api in apis]
        try:
            while time.monotonic() < deadline:
                client = rng.choice(clients)
                page = await answers.call(
                    client, "list", "GET", "/v1/incidents/",
                    params={"status": ["triggered", "acknowledged"], "limit": 20},
                )  # fmt: skip
                if page is None or page.status_code != 200 or not page.json()["items"]:
                    await asyncio.sleep(0.1)
                    continue
                incident = rng.choice(page.json()["items"])
                iid = incident["id"]
                action = rng.choice(["acknowledge", "acknowledge", "resolve", "comment"])
                if action == "comment":
                    answer = await answers.call(
                        client, "comment", "POST", f"/v1/incidents/{iid}/comments",
                        json={"content": f"looking ({n})"},
                    )  # fmt: skip
                    if answer is not None and answer.status_code == 201:
                        comments.add(answer.json()["id"])
                else:
                    answer = await answers.call(
                        client, action, "POST", f"/v1/incidents/{iid}/{action}"
                    )
                    if answer is not None and answer.status_code == 200:
                        (acked if action == "acknowledge" else resolved).add(iid)
                await asyncio.sleep(0.05)
        finally:
            for client in clients:
                await client.aclose()

    tasks = [asyncio.create_task(sender(n)) for n in range(SENDERS)]
    tasks += [asyncio.create_task(responder(n)) for n in range(RESPONDERS)]
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=LOAD_SECONDS + 60)
    for process in (*apis, *workers):
        assert process.running, f"{process.name} died: {process.tail()}"

    # Let the steps already due fire (what is still scheduled later is not due yet).
    async def nothing_overdue() -> bool | None:
        rows = await fetch(
            url,
            "SELECT count(*) AS n FROM escalation_events "
            "WHERE status = 'scheduled' AND due_at < now() - interval '2 s'",
        )
        return rows[0]["n"] == 0 or None

    await wait_until("the due steps to fire", nothing_overdue, seconds=30)

    # 409 is a legal answer: two responders acted on one incident, or it was resolved first.
    assert answers.unexpected({200, 201, 202, 409}) == [], answers.statuses()
    problems = await escalation_problems(url)
    assert problems == [], "\n".join(problems)
    assert await open_twice(url) == []
    incidents = {
        r["id"]: r for r in await fetch(url, "SELECT id, dedup_key, status FROM incidents")
    }
    assert {iid: incidents[iid]["dedup_key"] for iid in triggered if iid in incidents} == triggered
    assert set(triggered) <= set(incidents)
    # Acknowledged and resolved as answered (nothing re-triggers an incident in this load).
    said = await fetch(
        url,
        "SELECT DISTINCT incident_id, type FROM timeline_entries "
        "WHERE type IN ('acknowledged', 'resolved')",
    )
    assert acked <= {r["incident_id"] for r in said if r["type"] == "acknowledged"}
    assert resolved <= {r["incident_id"] for r in said if r["type"] == "resolved"}
    assert {iid for iid in resolved if incidents[iid]["status"] != "resolved"} == set()
    stored_comments = {r["id"] for r in await fetch(url, "SELECT id FROM incident_comments")}
    assert comments <= stored_comments
    executed = await fetch(
        url, "SELECT count(*) AS n FROM escalation_events WHERE status = 'executed'"
    )
    print(
        f"answers {answers.statuses()}; incidents {len(incidents)}; acked {len(acked)}; "
        f"resolved {len(resolved)} (+ by alert: {len(resolved_by_alert)} keys); "
        f"comments {len(comments)}; steps executed {executed[0]['n']}"
    )
