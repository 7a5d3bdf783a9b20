"""The database restarts (a clean stop, then a crash) while alerts and other writes pour in.

A live API process (with its in-process worker) runs against a private PostgreSQL cluster that
the test stops and starts. While the database is down every request is answered promptly with
a 503, `Retry-After` and the API's `{"detail": …}` body: never a 500, never a hang. When the
database is back, the same process serves again by itself, and every write that was answered
with a 2xx is in the database.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import httpx
from asyncpg import Record

from tests.support.api import Admin
from tests.support.databases import PostgresDatabase, PrivatePostgres, fetch
from tests.support.invariants import escalation_problems
from tests.support.load import Answers, load_client
from tests.support.processes import Processes
from tests.support.receivers import HTTPReceiver
from tests.support.settings import service_env
from tests.support.waiting import wait_until

SENDERS = 6  # concurrent alert senders
WRITERS = 2  # concurrent users opening incidents and commenting
DOWN_SECONDS = 3.0  # how long the database stays stopped each time
LOADED_SECONDS = 1.5  # how long the load runs against a database that is up, before each stop
MAX_REQUESTS = 1500  # per sender: the load is bounded whatever happens
ALLOWED = {200, 201, 202, 503}
STEP = 0.05  # minutes: a policy's second step 3 s after the first
PAGES = 6  # incidents paged by email and webhook while the database stops


class Load:
    """Alert senders and incident writers, each recording what it was answered."""

    def __init__(self, base_url: str, key: str, token: str, incident_id: int) -> None:
        self.alerts = load_client(base_url)
        self.users = load_client(base_url, token=token)
        self.key, self.incident_id = key, incident_id
        self.answers = Answers()
        self.stored_keys: set[str] = set()  # dedup keys answered 2xx
        self.stored_incidents: set[int] = set()  # incidents answered 201
        self.stored_comments: set[int] = set()  # comments answered 201
        self.last_ok: dict[str, float] = {}  # per task: when it last got a 2xx
        self.stopping = asyncio.Event()

    async def _pause(self, answer: httpx.Response | None) -> None:
        # A 503 asks the sender to wait; a short wait keeps the pressure on without spinning.
        await asyncio.sleep(0.05 if answer is None or answer.status_code >= 500 else 0)

    async def sender(self, n: int) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        for i in range(MAX_REQUESTS):
            if self.stopping.is_set():
                return
            keys = [f"s{n}-{i}"] if i % 5 else [f"s{n}-{i}-a", f"s{n}-{i}-b", f"s{n}-{i}-c"]
            body = (
                {"summary": f"alert {keys[0]}", "dedup_key": keys[0]}
                if len(keys) == 1
                else {"alerts": [{"summary": f"alert {k}", "dedup_key": k} for k in keys]}
            )
            answer = await self.answers.call(
                self.alerts, "alert", "POST", "/v1/alerts/generic", json=body, headers=headers
            )
            if answer is not None and answer.status_code == 202:
                self.stored_keys.update(keys)
                self.last_ok[f"sender {n}"] = time.monotonic()
            await self._pause(answer)

    async def writer(self, n: int) -> None:
        for i in range(MAX_REQUESTS):
            if self.stopping.is_set():
                return
            answer = await self.answers.call(
                self.users, "incident", "POST", "/v1/incidents/", json={"title": f"w{n}-{i}"}
            )
            if answer is not None and answer.status_code == 201:
                self.stored_incidents.add(answer.json()["id"])
            await self._pause(answer)
            answer = await self.answers.call(
                self.users, "comment", "POST", f"/v1/incidents/{self.incident_id}/comments",
                json={"content": f"comment {n}-{i}"},
            )  # fmt: skip
            if answer is not None and answer.status_code == 201:
                self.stored_comments.add(answer.json()["id"])
                self.last_ok[f"writer {n}"] = time.monotonic()
            await self._pause(answer)

    async def everyone_succeeded_since(self, moment: float, seconds: float) -> None:
        tasks = [f"sender {n}" for n in range(SENDERS)] + [f"writer {n}" for n in range(WRITERS)]

        async def probe() -> bool | None:
            return all(self.last_ok.get(task, 0) > moment for task in tasks) or None

        await wait_until("a 2xx for every sender and writer", probe, seconds=seconds)

    async def close(self) -> None:
        await self.alerts.aclose()
        await self.users.aclose()


async def test_a_database_restart_under_load_loses_no_acknowledged_write(
    private_postgres: PrivatePostgres, processes: Processes
) -> None:
    cluster = private_postgres
    url = await PostgresDatabase(cluster.url, name="ims").create()
    env = service_env(url, DATABASE_POOL_SIZE="5")  # one process, eight busy clients
    processes.migrate(env)
    api = processes.api("api", env)
    api.start()
    await api.healthy()
    admin = Admin(api.base_url)
    await admin.sign_up()
    oncall = await admin.user("oncall@example.com")
    # Steps come due while the database is down: the in-process worker fires them once it is back.
    target = [{"type": "user", "id": oncall["id"]}]
    await admin.policy([{"delay_minutes": 0, "targets": target},
                        {"delay_minutes": STEP, "targets": target}])  # fmt: skip
    service = await admin.service("checkout")
    key = await admin.integration(service["id"])
    incident = await admin.call("POST", "/v1/incidents/", 201, json={"title": "commented"})
    await admin.close()

    load = Load(api.base_url, key, admin.token, incident["id"])
    tasks = [asyncio.create_task(load.sender(n)) for n in range(SENDERS)]
    tasks += [asyncio.create_task(load.writer(n)) for n in range(WRITERS)]
    outages: list[tuple[int, int]] = []  # where each outage's answers start and end in the log
    try:
        await load.everyone_succeeded_since(0, seconds=30)
        for mode in ("fast", "immediate"):  # a clean shutdown, then a crash
            await asyncio.sleep(LOADED_SECONDS)  # writes in flight when it stops
            await asyncio.to_thread(cluster.stop, mode)
            start = len(load.answers.log)
            await asyncio.sleep(DOWN_SECONDS)
            async with load_client(api.base_url, seconds=10) as probe:
                health = await probe.get("/health")
            assert health.status_code == 503, health.text
            assert health.headers.get("Retry-After"), health.headers
            outages.append((start, len(load.answers.log)))
            await asyncio.to_thread(cluster.start)
            back = time.monotonic()
            # Recovery without a restart: the same process answers 2xx again, to everyone.
            await load.everyone_succeeded_since(back, seconds=30)
    finally:
        load.stopping.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=30)
        await load.close()
    assert api.running, "the API process died"

    # No 500, no hang, no dropped connection: only 2xx and clean 503s.
    assert load.answers.unexpected(ALLOWED) == [], load.answers.statuses()
    for start, end in outages:
        during = [a for _, status, a in load.answers.log[start:end] if status == 503]
        assert during, f"no 503 while the database was down: {load.answers.statuses()}"
    for what, status, answer in load.answers.log:
        if status == 503:
            assert answer is not None
            assert answer.headers.get("Retry-After", "").isdigit(), (what, answer.headers)
            assert isinstance(answer.json().get("detail"), str), (what, answer.text)

    # The worker came back by itself too: every step that came due fired once, late or not.
    async def finished() -> bool | None:
        rows = await fetch(
            url, "SELECT count(*) AS n FROM incidents WHERE escalation_status = 'active'"
        )
        return rows[0]["n"] == 0 or None

    await wait_until("every escalation to complete", finished, seconds=30)
    problems = await escalation_problems(url)
    assert problems == [], "\n".join(problems)
    late = await fetch(
        url, "SELECT count(*) AS n FROM escalation_events WHERE executed_at - due_at > '1 s'"
    )

    # Every 2xx is in the database.
    found_keys = {r["dedup_key"] for r in await fetch(url, "SELECT dedup_key FROM incidents")}
    assert load.stored_keys - found_keys == set()
    found = {r["id"] for r in await fetch(url, "SELECT id FROM incidents")}
    assert load.stored_incidents - found == set()
    comments = {r["id"] for r in await fetch(url, "SELECT id FROM incident_comments")}
    assert load.stored_comments - comments == set()
    # And each dedup key opened one incident, however often its request was retried.
    twice = await fetch(
        url,
        "SELECT dedup_key FROM incidents WHERE dedup_key IS NOT NULL "
        "GROUP BY service_id, dedup_key HAVING count(*) > 1",
    )
    assert twice == []
    print(
        "answers:", load.answers.statuses(), f"slowest {load.answers.slowest:.2f} s;",
        "stored alerts:", len(load.stored_keys),
        "incidents:", len(load.stored_incidents), "comments:", len(load.stored_comments),
        "steps fired over 1 s late (due during an outage):", late[0]["n"],
        sep=" ",
    )  # fmt: skip


async def test_pages_in_flight_when_the_database_stops_are_recorded_once_it_is_back(
    private_postgres: PrivatePostgres, processes: Processes
) -> None:
    """The worker has leased pages and is sending them when the database stops: what it sent is
    recorded when the database is back, not left `sending` until the lease ends (two minutes
    late) and then sent a second time."""
    cluster = private_postgres
    url = await PostgresDatabase(cluster.url, name="ims").create()
    receiver = HTTPReceiver()
    receiver.delay = 1.5  # every delivery is in flight for 1.5 s
    receiver.start()
    try:
        env = service_env(url)
        processes.migrate(env)
        api = processes.api("api", env)
        api.start()
        await api.healthy()
        admin = Admin(api.base_url)
        await admin.sign_up()
        oncall = await admin.user("oncall@example.com")
        step = {
            "delay_minutes": 0,
            "targets": [{"type": "user", "id": oncall["id"]}],
            "actions": [{"type": "notify"}, {"type": "webhook", "url": f"{receiver.url}/page"}],
        }
        await admin.policy([step])
        incidents = [
            await admin.call("POST", "/v1/incidents/", 201, json={"title": f"in flight {n}"})
            for n in range(PAGES)
        ]
        await admin.close()

        async def sending() -> bool | None:
            return len(receiver.requests) >= 1 or None

        await wait_until("the first webhook delivery", sending, seconds=20, every=0.05)
        await asyncio.to_thread(cluster.stop, "fast")  # while the receiver holds the requests
        await asyncio.sleep(DOWN_SECONDS)
        await asyncio.to_thread(cluster.start)

        async def recorded() -> list[Record] | None:
            rows = await fetch(url, "SELECT id, channel, status, attempts FROM notifications")
            done = len(rows) == 2 * PAGES and all(r["status"] == "sent" for r in rows)
            return rows if done else None

        rows = await wait_until("every page recorded as sent", recorded, seconds=30)
        await asyncio.sleep(1.0)  # a few more worker passes: a second send would show now
    finally:
        receiver.stop()
    posted = Counter(json.loads(r["body"])["incident"]["id"] for r in receiver.requests)
    assert posted == Counter({incident["id"]: 1 for incident in incidents})
    assert all(r["attempts"] == 1 for r in rows if r["channel"] == "webhook"), rows
