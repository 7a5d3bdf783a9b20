"""The SMTP server and the webhook receiver are down when the pages are due, and come up later.

A live API process (with its in-process worker) pages three people by email and posts a webhook
for each of several incidents while nothing listens on the SMTP and webhook ports. The pages
wait and are retried (the retry delays made short through NOTIFY_RETRY_*), none is given up,
and once the peers are started every page arrives exactly once: none lost, none doubled.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter

from tests.support.api import Admin
from tests.support.databases import fetch
from tests.support.processes import Processes
from tests.support.receivers import HTTPReceiver
from tests.support.settings import service_env
from tests.support.smtp import SMTPInbox
from tests.support.waiting import wait_until

INCIDENTS = 8
USERS = 3


async def test_pages_wait_for_peers_that_are_down_and_arrive_once_when_they_are_back(
    fault_database: str, processes: Processes
) -> None:
    url = fault_database
    inbox, receiver = SMTPInbox(), HTTPReceiver()  # their ports are chosen; nothing listens yet
    env = service_env(
        url,
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(inbox.port),
        SMTP_TIMEOUT_SECONDS="5",
        NOTIFY_RETRY_BASE_SECONDS="0.3",
        NOTIFY_RETRY_MAX_SECONDS="1",
        NOTIFY_MAX_ATTEMPTS="20",
    )
    processes.migrate(env)
    api = processes.api("api", env)
    api.start()
    try:
        await api.healthy()
        admin = Admin(api.base_url)
        await admin.sign_up()
        users = [await admin.user(f"oncall{n}@example.com") for n in range(USERS)]
        step = {
            "delay_minutes": 0,
            "targets": [{"type": "user", "id": user["id"]} for user in users],
            "actions": [{"type": "notify"}, {"type": "webhook", "url": f"{receiver.url}/page"}],
        }
        await admin.policy([step])
        titles = [f"fault incident {n}" for n in range(INCIDENTS)]
        incidents = [
            await admin.call("POST", "/v1/incidents/", 201, json={"title": t, "severity": "high"})
            for t in titles
        ]
        await admin.close()
        expected_rows = INCIDENTS * (USERS + 1)

        # Every page is tried, fails (nothing listens), and is retried; none is given up.
        async def retried() -> bool | None:
            rows = await fetch(url, "SELECT status, attempts FROM notifications")
            if len(rows) < expected_rows:
                return None
            assert {r["status"] for r in rows} <= {"pending", "sending"}, rows
            return all(r["attempts"] >= 3 for r in rows) or None

        await wait_until("every page retried twice", retried, seconds=40)

        inbox.start()
        receiver.start()

        async def all_sent() -> bool | None:
            rows = await fetch(url, "SELECT status FROM notifications")
            assert "failed" not in {r["status"] for r in rows}, rows
            return all(r["status"] == "sent" for r in rows) or None

        await wait_until("every page sent", all_sent, seconds=40)
        # A few more worker passes: anything sent twice would show up now.
        await asyncio.sleep(1.5)
    finally:
        inbox.stop()
        receiver.stop()

    rows = await fetch(url, "SELECT channel, status, attempts FROM notifications")
    assert len(rows) == expected_rows
    assert all(r["status"] == "sent" for r in rows)
    # Each person got each incident's page once.
    mails = Counter(
        (tuple(rcpt), title)
        for rcpt, mail in zip(inbox.recipients, inbox.messages, strict=True)
        for title in titles
        if str(mail["Subject"]).endswith(title)
    )
    assert len(inbox.messages) == INCIDENTS * USERS, [m["Subject"] for m in inbox.messages]
    assert set(mails.values()) == {1}
    assert {rcpt for rcpt, _ in mails} == {(user["email"],) for user in users}
    # Each incident's webhook action was posted once.
    posted = Counter(json.loads(r["body"])["incident"]["id"] for r in receiver.requests)
    assert posted == Counter({incident["id"]: 1 for incident in incidents})
    # The timeline says so: one `notified` entry per page, no `notification_failed`.
    entries = await fetch(
        url,
        "SELECT type, count(*) AS n FROM timeline_entries "
        "WHERE type IN ('notified', 'notification_failed') GROUP BY type",
    )
    assert {r["type"]: r["n"] for r in entries} == {"notified": expected_rows}
    print("attempts per page:", sorted(Counter(r["attempts"] for r in rows).items()))
