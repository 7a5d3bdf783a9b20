"""API and worker processes are SIGKILLed mid-load while escalation steps come due.

An API process (with its in-process worker) and a standalone worker run against one PostgreSQL
database while alerts keep opening incidents whose three-step policy (repeated once) fires a
step every 1.2 s. Every second or so the test SIGKILLs the API, the worker or both, leaves them
dead while steps come due, and starts them again. Afterwards every step of every incident has
fired exactly once, with one page per person it targets, and every alert answered 2xx has its
incident. Senders retry an alert (same dedup key) until it is answered 2xx, as monitoring does.
One of the two people is paged by personal notification rules (two at once, one a minute later):
each step writes exactly one page per rule, those due are delivered once, the later one is due a
minute after its step.
"""

from __future__ import annotations

import asyncio
import time

from tests.support.api import Admin
from tests.support.databases import fetch
from tests.support.invariants import escalation_problems, open_twice
from tests.support.load import Answers, load_client
from tests.support.processes import Processes
from tests.support.settings import service_env
from tests.support.waiting import wait_until

SENDERS = 3
STEP = 0.02  # minutes: 1.2 s between steps
STEPS, CYCLES = 3, 2
# Which processes die in each round: the worker, the API, or both (no one left to fire).
ROUNDS = ({"worker"}, {"api"}, {"api", "worker"}, {"worker"}, {"api", "worker"})
MAX_ALERTS = 300  # per sender: the load is bounded whatever happens
PACE = 0.15  # seconds between a sender's alerts: new incidents all through the kills


async def test_sigkill_of_api_and_worker_loses_and_doubles_no_escalation_step(
    fault_database: str, processes: Processes
) -> None:
    url = fault_database
    env = service_env(url)
    processes.migrate(env)
    api = processes.api("api", env)  # with its in-process worker
    worker = processes.worker("worker", env)
    api.start()
    worker.start()
    await api.healthy()
    admin = Admin(api.base_url)
    await admin.sign_up()
    users = [await admin.user(f"oncall{n}@example.com") for n in range(2)]
    ruled = users[0]["id"]
    rules = [
        await admin.notification_rule(ruled, "email", "oncall0@example.com", 0),
        await admin.notification_rule(ruled, "sms", "+14155552671", 0),
        await admin.notification_rule(ruled, "sms", "+14155552671", 1),
    ]
    targets = [{"type": "user", "id": user["id"]} for user in users]
    steps = [{"delay_minutes": 0 if n == 0 else STEP, "targets": targets} for n in range(STEPS)]
    await admin.policy(steps, repeat_count=CYCLES - 1, repeat_delay_minutes=STEP)
    service = await admin.service("checkout")
    key = await admin.integration(service["id"])
    await admin.close()

    answers = Answers()
    stored: dict[str, int] = {}  # dedup key -> incident id, for alerts answered 2xx
    stopping = asyncio.Event()

    async def sender(n: int) -> None:
        async with load_client(api.base_url, seconds=10) as client:
            for i in range(MAX_ALERTS):
                dedup_key = f"k{n}-{i}"
                # Like monitoring: the same alert again until it is accepted (bounded).
                for _ in range(200):
                    if stopping.is_set():
                        return
                    answer = await answers.call(
                        client, "alert", "POST", "/v1/alerts/generic",
                        json={"summary": f"alert {dedup_key}", "dedup_key": dedup_key},
                        headers={"Authorization": f"Bearer {key}"},
                    )  # fmt: skip
                    if answer is not None and answer.status_code == 202:
                        stored[dedup_key] = answer.json()["incidents"][0]["id"]
                        break
                    await asyncio.sleep(0.1)
                await asyncio.sleep(PACE)

    senders = [asyncio.create_task(sender(n)) for n in range(SENDERS)]
    kills = {"api": 0, "worker": 0}
    try:
        for victims in ROUNDS:
            await asyncio.sleep(1.0)
            if "api" in victims:
                api.kill()
                kills["api"] += 1
            if "worker" in victims:
                worker.kill()
                kills["worker"] += 1
            await asyncio.sleep(1.3)  # a step comes due meanwhile
            if "api" in victims:
                api.start()
            if "worker" in victims:
                worker.start()
            await api.healthy()
        await asyncio.sleep(1.0)
    finally:
        stopping.set()
        await asyncio.wait_for(asyncio.gather(*senders, return_exceptions=True), timeout=30)
    assert api.running and worker.running

    # Every run is allowed to finish: the last incident's six steps take about 6 s.
    async def finished() -> bool | None:
        rows = await fetch(
            url, "SELECT count(*) AS n FROM incidents WHERE escalation_status = 'active'"
        )
        return rows[0]["n"] == 0 or None

    started = time.monotonic()
    await wait_until("every escalation to complete", finished, seconds=40)
    settle = time.monotonic() - started

    # Only accepted alerts and answers from a process that is not there (killed).
    assert answers.unexpected({202, "ConnectError", "ReadError", "RemoteProtocolError"}) == []
    assert len(stored) >= SENDERS * 3, answers.statuses()
    incidents = {
        r["dedup_key"]: r for r in await fetch(url, "SELECT id, dedup_key, status FROM incidents")
    }
    assert {k: incidents.get(k, {}).get("id") for k in stored} == stored
    assert await open_twice(url) == []
    problems = await escalation_problems(url)
    assert problems == [], "\n".join(problems)
    # All steps of all incidents fired (nobody acknowledged): exactly STEPS × CYCLES each.
    per_incident = await fetch(
        url,
        "SELECT incident_id, count(*) FILTER (WHERE status = 'executed') AS executed, "
        "count(*) AS n FROM escalation_events GROUP BY incident_id",
    )
    assert len(per_incident) == len(incidents)
    assert {(r["executed"], r["n"]) for r in per_incident} == {(STEPS * CYCLES, STEPS * CYCLES)}

    # The person with rules: one page per rule per step, never two; those due went out (no
    # SMTP or Twilio settings here: the log; a send cut by a kill stays `sending` until its
    # lease ends, then goes again), the minute-later one waits for its minute.
    async def delivered() -> bool | None:
        rows = await fetch(
            url,
            "SELECT count(*) AS n FROM notifications WHERE status = 'pending' "
            "AND next_attempt_at <= now()",
        )
        return rows[0]["n"] == 0 or None

    await wait_until("the pages due to be delivered", delivered, seconds=30)
    pages = await fetch(
        url,
        "SELECT n.key, n.escalation_event_id AS step, n.status, n.attempts, "
        "n.next_attempt_at - e.executed_at AS after FROM notifications n "
        "JOIN escalation_events e ON e.id = n.escalation_event_id "
        f"WHERE n.user_id = {ruled} AND n.event = 'escalated'",
    )
    executed = sum(r["executed"] for r in per_incident)
    assert len(pages) == executed * len(rules)
    by_rule = {
        rule["id"]: [p for p in pages if p["key"].endswith(f":rule:{rule['id']}")] for rule in rules
    }
    assert {rule_id: len(rows) for rule_id, rows in by_rule.items()} == {
        rule["id"]: executed for rule in rules
    }
    for rule in rules[:2]:
        states = [(p["status"], p["attempts"]) for p in by_rule[rule["id"]]]
        assert ("sent", 1) in states and set(states) <= {("sent", 1), ("sending", 1)}, states
    assert {p["status"] for p in by_rule[rules[2]["id"]]} <= {"pending", "sent"}
    assert {p["after"].total_seconds() for p in by_rule[rules[2]["id"]]} == {60.0}
    late = await fetch(
        url,
        "SELECT max(executed_at - due_at) AS most, count(*) FILTER "
        "(WHERE executed_at - due_at > interval '1 s') AS over_1s FROM escalation_events",
    )
    print(
        f"kills {kills}; answers {answers.statuses()}; incidents {len(incidents)}; "
        f"steps {sum(r['n'] for r in per_incident)}; latest step {late[0]['most']}, "
        f"{late[0]['over_1s']} over 1 s late; settled in {settle:.1f} s"
    )
