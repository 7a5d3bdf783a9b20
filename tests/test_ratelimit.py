"""Abuse limits: buckets in the database, shared by every API process (see app.core.ratelimit)."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from app.core import ratelimit
from app.core.ratelimit import Limit, RateLimitState
from app.incidents.models import Incident
from app.main import create_app
from tests.support.data import make_integration
from tests.support.settings import make_settings

PASSWORD = "correct horse battery"


@asynccontextmanager
async def second_instance(harness):
    """Another app on the same database: a second API process, as far as limits can tell."""
    other = create_app(harness.settings, clock=harness.clock)
    async with other.router.lifespan_context(other), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=other), base_url="http://test"
    ) as client:  # fmt: skip
        yield client


async def login(client, email, password=PASSWORD):
    return await client.post(
        "/v1/auth/login/access-token", data={"username": email, "password": password}
    )


async def buckets(harness) -> dict[str, int]:
    async with harness.app.state.sessionmaker() as session:
        rows = await session.execute(select(RateLimitState.key, RateLimitState.tat))
        return dict(rows.all())


# --- the bucket itself -------------------------------------------------------------------------


async def test_a_bucket_admits_its_capacity_then_one_per_interval(harness):
    sessions, now = harness.app.state.sessionmaker, harness.clock.now()
    limit = Limit(capacity=3, interval=10.0)
    first = await ratelimit.take(sessions, {"b": 5}, limit, now=now)
    assert first["b"] == ratelimit.Grant(requested=5, admitted=3, retry_after=10)
    assert (await ratelimit.take(sessions, {"b": 1}, limit, now=now))["b"].admitted == 0
    later = now + timedelta(seconds=9)
    assert (await ratelimit.take(sessions, {"b": 1}, limit, now=later))["b"].retry_after == 1
    later = now + timedelta(seconds=10)
    assert (await ratelimit.take(sessions, {"b": 2}, limit, now=later))["b"].admitted == 1
    # A long quiet spell fills it up to its capacity, never beyond.
    later = now + timedelta(hours=1)
    assert (await ratelimit.take(sessions, {"b": 9}, limit, now=later))["b"].admitted == 3


async def test_one_statement_takes_from_several_buckets_each_on_its_own(harness):
    sessions, now = harness.app.state.sessionmaker, harness.clock.now()
    limit = Limit(capacity=4, interval=1.0)
    await ratelimit.take(sessions, {"a": 3}, limit, now=now)
    grants = await ratelimit.take(sessions, {"a": 3, "b": 3, "c": 9}, limit, now=now)
    assert {k: g.admitted for k, g in grants.items()} == {"a": 1, "b": 3, "c": 4}
    assert grants["b"].retry_after == 0 and grants["a"].retry_after == 1


async def test_takes_from_many_tasks_at_once_never_overdraw(harness):
    sessions, now = harness.app.state.sessionmaker, harness.clock.now()
    limit = Limit(capacity=25, interval=60.0)
    grants = await asyncio.gather(
        *(ratelimit.take(sessions, {"shared": 1}, limit, now=now) for _ in range(60))
    )
    assert sum(g["shared"].admitted for g in grants) == 25


def test_a_limit_of_zero_is_off():
    assert Limit.per(0, 60) is None
    assert Limit.per(30, 60) == Limit(capacity=30, interval=2.0)
    assert Limit.per(50, 1, burst=1000) == Limit(capacity=1000, interval=0.02)


async def test_the_worker_drops_full_buckets_and_only_those(harness):
    sessions, now = harness.app.state.sessionmaker, harness.clock.now()
    await ratelimit.take(sessions, {"short": 1}, Limit(1, 1.0), now=now)
    await ratelimit.take(sessions, {"long": 1}, Limit(1, 3600.0), now=now)
    harness.clock.advance(seconds=2)
    assert (await harness.run_jobs())["purge_rate_limits"] == 1
    assert set(await buckets(harness)) == {"long"}


# --- login ------------------------------------------------------------------------------------


@pytest.fixture
def settings(database_url):
    return make_settings(
        database_url,
        rate_limit_login_per_ip_per_minute=6,
        login_lockout_failures=3,
        login_lockout_minutes=15,
        rate_limit_recovery_per_account_per_hour=2,
        rate_limit_recovery_per_ip_per_hour=5,
        rate_limit_ingest_per_second=1,
        rate_limit_ingest_burst=4,
    )


async def test_failed_logins_lock_the_account_and_unknown_emails_look_the_same(
    client, factory, harness
):
    await factory.user(email="ops@example.com", password=PASSWORD)
    for email in ("ops@example.com", "nobody@example.com"):
        statuses = [(await login(client, email, "wrong")).status_code for _ in range(3)]
        assert statuses == [401, 401, 401]
    harness.clock.advance(minutes=1)  # the per-address bucket has room again
    locked = await login(client, "ops@example.com")  # the right password, refused all the same
    unknown = await login(client, "nobody@example.com")
    assert (locked.status_code, unknown.status_code) == (429, 429)
    assert locked.json() == unknown.json()
    assert locked.headers["retry-after"] == unknown.headers["retry-after"]
    assert 800 <= int(locked.headers["retry-after"]) <= 900
    assert "nobody@example.com" not in str(await buckets(harness))  # addresses are not stored
    harness.clock.advance(minutes=15)
    assert (await login(client, "ops@example.com")).status_code == 200


async def test_a_successful_login_clears_the_failures(client, factory, harness):
    await factory.user(email="ops@example.com", password=PASSWORD)
    for _ in range(2):
        assert (await login(client, "ops@example.com", "wrong")).status_code == 401
        assert (await login(client, "ops@example.com")).status_code == 200
        harness.clock.advance(minutes=1)
    assert (await login(client, "ops@example.com", "wrong")).status_code == 401


async def test_logins_are_limited_per_client_address_across_accounts(client, factory, harness):
    statuses = [(await login(client, f"p{n}@example.com")).status_code for n in range(8)]
    assert statuses == [401] * 6 + [429] * 2
    harness.clock.advance(seconds=10)  # one attempt every 10 s refills
    assert (await login(client, "p9@example.com")).status_code == 401


async def test_two_api_instances_share_the_lockout(client, factory, harness):
    await factory.user(email="ops@example.com", password=PASSWORD)
    async with second_instance(harness) as other:
        answers = [(await login((client, other)[n % 2], "ops@example.com", "x")) for n in range(3)]
        assert [a.status_code for a in answers] == [401, 401, 401]
        assert (await login(other, "ops@example.com")).status_code == 429
        assert (await login(client, "ops@example.com")).status_code == 429


async def test_guessing_the_current_password_with_a_token_counts_as_failed_logins(
    client, factory, harness
):
    await factory.user(email="ops@example.com", password=PASSWORD)
    token = (await login(client, "ops@example.com")).json()["access_token"]
    me = {"Authorization": f"Bearer {token}"}
    wrong_email_change = {"email": "thief@example.com", "current_password": "guess"}
    statuses = [
        (await client.put("/v1/users/me", json=wrong_email_change, headers=me)).status_code,
        *[
            (
                await client.post(
                    "/v1/users/me/password",
                    json={"current_password": f"guess {n}", "new_password": "a new passphrase"},
                    headers=me,
                )
            ).status_code
            for n in range(2)
        ],
    ]
    assert statuses == [403, 401, 401]
    harness.clock.advance(minutes=1)  # the per-address bucket has room again
    right = {"current_password": PASSWORD, "new_password": "a new passphrase"}
    refused = await client.post("/v1/users/me/password", json=right, headers=me)
    assert refused.status_code == 429  # the right password, refused while the account is locked
    email_change = {"email": "new@example.com", "current_password": PASSWORD}
    assert (await client.put("/v1/users/me", json=email_change, headers=me)).status_code == 429
    assert (await login(client, "ops@example.com")).status_code == 429
    harness.clock.advance(minutes=15)
    assert (await client.post("/v1/users/me/password", json=right, headers=me)).status_code == 200


# --- password recovery ------------------------------------------------------------------------


async def test_recovery_is_limited_per_account_and_per_address(client, factory, harness):
    await factory.user(email="ops@example.com")
    answers = [await client.post("/v1/auth/password-recovery/ops@example.com") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    others = [await client.post(f"/v1/auth/password-recovery/x{n}@example.com") for n in range(3)]
    assert [a.status_code for a in others] == [200, 200, 429]  # 5 per address in all
    unknown = others
    assert unknown[2].json()["detail"].startswith("Too many recovery requests")
    reset = await client.post(
        "/v1/auth/reset-password/", json={"token": "x" * 43, "new_password": "another passphrase"}
    )
    assert reset.status_code == 429 and int(reset.headers["retry-after"]) > 0
    harness.clock.advance(hours=1)
    answer = await client.post("/v1/auth/password-recovery/ops@example.com")
    assert answer.status_code == 200


# --- alert ingestion --------------------------------------------------------------------------


async def incident_count(harness) -> int:
    async with harness.app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(Incident)) or 0)


async def test_ingestion_is_limited_per_integration_key(client, admin_client, harness):
    key, _ = await make_integration(admin_client, "generic")
    other_key, _ = await make_integration(admin_client, "generic", service="billing")

    async def send(n, with_key=key):
        alert = {"summary": f"alert {n}", "dedup_key": f"k{n}"}
        return await client.post("/v1/alerts/generic", json=alert, params={"key": with_key})

    answers = [await send(n) for n in range(6)]
    assert [a.status_code for a in answers] == [202] * 4 + [429] * 2
    assert answers[4].headers["retry-after"] == "1"
    assert "integration key" in answers[4].json()["detail"]
    assert (await send(99, other_key)).status_code == 202  # each key has its own bucket
    assert await incident_count(harness) == 5  # refused alerts are not stored
    harness.clock.advance(seconds=2)
    assert [(await send(n)).status_code for n in range(10, 13)] == [202, 202, 429]


async def test_ingestion_counts_alerts_not_requests(client, admin_client, harness):
    """One request of many alerts used to count as one: a 64 KiB Alertmanager request opened 969
    incidents past a limit of requests."""
    key, _ = await make_integration(admin_client, "generic")

    async def send(*keys):
        alerts = [{"summary": f"alert {k}", "dedup_key": k} for k in keys]
        return await client.post("/v1/alerts/generic", json={"alerts": alerts}, params={"key": key})

    assert (await send("a", "b", "c")).status_code == 202  # 3 of the burst of 4
    refused = await send("d", "e")  # 5 > 4: refused whole, nothing stored
    assert refused.status_code == 429 and "integration key" in refused.json()["detail"]
    assert refused.headers["retry-after"] == "1"  # one more unit a second: the second in 1 s
    assert await incident_count(harness) == 3
    # The refused request used up nothing: the unit left is still there for one alert.
    assert (await send("d")).status_code == 202
    assert (await send("e")).status_code == 429
    assert await incident_count(harness) == 4
    harness.clock.advance(seconds=10)
    too_many = await send("f", "g", "h", "i", "j")  # more than a burst: never possible
    assert too_many.status_code == 422
    assert "5 alerts in one request" in too_many.json()["detail"]
    assert (await send("f", "g", "h", "i")).status_code == 202
    assert await incident_count(harness) == 8


async def test_simultaneous_alerts_through_two_instances_share_one_bucket(
    client, admin_client, harness
):
    key, _ = await make_integration(admin_client, "generic")
    async with second_instance(harness) as other:
        answers = await asyncio.gather(*(
            (client, other)[n % 2].post("/v1/alerts/generic", params={"key": key},
                                        json={"summary": "a", "dedup_key": f"k{n}"})
            for n in range(12)
        ))  # fmt: skip
    assert sorted(a.status_code for a in answers) == [202] * 4 + [429] * 8
    assert await incident_count(harness) == 4


async def test_refused_keys_take_nothing_from_the_bucket(client, admin_client, harness):
    key, _ = await make_integration(admin_client, "generic")
    for _ in range(6):  # the right key on another source's endpoint: 403, not counted
        answer = await client.post("/v1/alerts/grafana", json={"alerts": []}, params={"key": key})
        assert answer.status_code == 403
    statuses = [
        (await client.post("/v1/alerts/generic", json={"summary": "a", "dedup_key": f"k{n}"},
                           params={"key": key})).status_code
        for n in range(5)
    ]  # fmt: skip
    assert statuses == [202] * 4 + [429]  # the whole burst was still there


async def test_a_batch_retried_one_by_one_counts_each_request_once(harness, factory):
    """A batch that fails is retried job by job; the bucket is taken from once per request and
    alert. A request whose body cannot be parsed (here a parser's bug) takes nothing: bodies are
    parsed before the take, which counts their alerts."""
    from app.alerts.alert import Alert
    from app.flows.ingest import AlertBatcher
    from tests.support.data import keyed_integration as _keyed_integration

    key = await _keyed_integration(harness, factory)
    batcher = AlertBatcher(
        harness.app.state.sessionmaker, harness.clock, reopen_window=timedelta(0),
        limit=Limit(capacity=3, interval=3600.0),
    )  # fmt: skip

    def broken():
        raise RuntimeError("a bug in one source's parser")

    def good(name):
        return lambda: [Alert(action="trigger", dedup_key=name)]

    answers = await asyncio.gather(
        batcher.alerts(key, "alertmanager", good("a")),
        batcher.alerts(key, "alertmanager", broken),
        batcher.alerts(key, "alertmanager", good("b")),
        return_exceptions=True,
    )
    assert [type(a).__name__ for a in answers] == ["list", "RuntimeError", "list"]
    later = await batcher.alerts(key, "alertmanager", good("c"))  # the third unit of three
    assert [r.outcome for r in later] == ["incident_created"]
    with pytest.raises(ratelimit.TooManyRequests):
        await batcher.alerts(key, "alertmanager", good("over"))


@pytest.mark.parametrize(
    ("host", "bucket"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
    ],
)
def test_client_addresses_are_bucketed_by_host_and_ipv6_by_its_64(host, bucket):
    from starlette.requests import Request

    from app.auth.signin import client_bucket as _address

    assert _address(Request({"type": "http", "client": (host, 1234)})) == bucket


async def test_a_client_address_that_is_no_address_gets_a_short_bucket_not_a_500(harness, factory):
    """A forwarded header can say anything once FORWARDED_ALLOW_IPS trusts it."""
    odd = httpx.ASGITransport(app=harness.app, client=("unknown, " + "x" * 200, 1))
    async with httpx.AsyncClient(transport=odd, base_url="http://test") as client:
        assert (await login(client, "ops@example.com")).status_code == 401
        recovery = await client.post("/v1/auth/password-recovery/ops@example.com")
        assert recovery.status_code == 200
    assert all(len(key) <= 60 for key in await buckets(harness))


async def test_a_purge_skips_buckets_being_taken_from(harness, postgres_only):
    """A take holds a bucket's row (here, a transaction left open after it): a purge passing by
    neither waits for it nor deletes the bucket it is emptying."""
    sessions, now = harness.app.state.sessionmaker, harness.clock.now()
    await ratelimit.take(sessions, {"busy": 1}, Limit(5, 1.0), now=now)
    harness.clock.advance(seconds=10)  # full again: a purge would drop it
    async with sessions() as holder:
        await ratelimit.take_in(holder, {"busy": 5}, Limit(5, 1.0), now=harness.clock.now())
        async with sessions() as purger:
            assert (
                await asyncio.wait_for(
                    ratelimit.purge(purger, now=harness.clock.now(), batch=10), timeout=5
                )
                == 0
            )
            await purger.commit()
        await holder.commit()
    assert "busy" in await buckets(harness)


async def test_pagerduty_senders_get_pagerdutys_throttle_answer(client, admin_client, harness):
    key, _ = await make_integration(admin_client, "pagerduty")
    payload = {"summary": "disk full", "source": "db-1", "severity": "critical"}
    event = {"routing_key": key, "event_action": "trigger", "payload": payload}
    answers = [await client.post("/v2/enqueue", json=event) for _ in range(5)]
    assert [a.status_code for a in answers] == [202] * 4 + [429]
    throttled = answers[4]
    assert throttled.json()["status"] == "throttle event"
    assert int(throttled.headers["retry-after"]) >= 1
