"""The analytics page: the figures of the hand-computed data set of tests/analytics, drawn."""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta

from sqlalchemy import select, text

from app.analytics import snapshots
from app.analytics.models import AnalyticsSnapshot
from app.analytics.schemas import IncidentAnalytics
from app.core.db import reading_scope, session_scope
from app.main import create_app
from app.worker import runner
from app.worker.runner import ANALYTICS_JOBS, JOBS, Worker
from tests.support.analytics import URL, at
from tests.support.settings import make_settings

SVG = re.compile(r"<svg\b.*?</svg>", re.S)


def stat(html: str, name: str) -> str:
    found = re.search(rf'<li data-stat="{name}">(.*?)</li>', html, re.S)
    assert found, name
    return re.sub(r"<[^>]+>", "", found.group(1)).split()


def bars(svg: str) -> list[tuple[str, str]]:
    tree = ET.fromstring(svg)  # noqa: S314
    labels = [
        t.text
        for t in tree.iter("{http://www.w3.org/2000/svg}text")
        if t.get("class") == "bar-label"
    ]
    values = [
        t.text
        for t in tree.iter("{http://www.w3.org/2000/svg}text")
        if t.get("class") == "bar-value"
    ]
    return list(zip(labels, values, strict=True))


async def test_the_page_shows_the_hand_computed_figures(harness, signed_in, user, world):
    # The 7 days ending at 2026-01-04T00:00Z: i1–i6 and i8 (a microsecond before Jan 1), not i7.
    harness.clock.set(at(4))
    browser, _ = await signed_in(user)
    answer = await browser.get("/ui/analytics?days=7")
    assert answer.status_code == 200
    html = answer.text
    assert stat(html, "opened") == ["Incidents", "opened", "7"]
    # Acknowledged 60, 120.5, 300, 30 s: mean 127.6 s, p90 300 s. Resolved 600, 1200, 1800, 90 s:
    # mean 922.5 s, p90 1800 s (worked out in tests/analytics/test_analytics.py).
    assert stat(html, "mtta")[:9] == [
        "Time",
        "to",
        "acknowledge",
        "2",
        "min",
        "mean",
        "·",
        "p90",
        "5",
    ]
    assert stat(html, "mttr")[:9] == [
        "Time",
        "to",
        "resolve",
        "15",
        "min",
        "mean",
        "·",
        "p90",
        "30",
    ]
    assert "(4 acknowledged)" in html and "(4 resolved)" in html
    assert stat(html, "steps") == [
        "Escalation",
        "steps",
        "fired",
        "5",
        "3",
        "paged",
        "·",
        "1",
        "skipped",
        "·",
        "1",
        "failed",
    ]
    charts = SVG.findall(html)
    assert len(charts) == 3
    # Pages per person, and the services by incidents (search has i8 here too: 3, as checkout).
    assert bars(charts[1]) == [("Ana Oncall", "3"), ("Ben Oncall", "1"), ("Cleo Oncall", "1")]
    assert sorted(bars(charts[2])) == [("checkout", "3"), ("search", "3")]
    # One column segment per severity present on each day, 7 days drawn.
    opened = ET.fromstring(charts[0])  # noqa: S314
    titles = [t.text for t in opened.iter("{http://www.w3.org/2000/svg}title")]
    assert "2026-01-01: 1 critical" in titles and "2026-01-02: 1 medium" in titles
    assert "2025-12-31: 1 high" in titles  # i8
    rows = re.findall(r"<tr><td><code>([^<]+)</code></td><td>(\d+)</td><td>(\d+)</td></tr>", html)
    assert rows == [("db-down", "2", "8"), ("slow-query", "2", "3"), ("disk", "1", "10")]


async def test_one_service_and_bad_choices(harness, signed_in, user, world):
    harness.clock.set(at(4))
    browser, _ = await signed_in(user)
    search = world["search"].id
    html = (await browser.get(f"/ui/analytics?days=7&service={search}")).text
    assert stat(html, "opened") == ["Incidents", "opened", "3"]  # i3, i5, i8
    for query in ("days=5", "days=abc", "service=x"):
        answer = await browser.get(f"/ui/analytics?{query}")
        assert answer.status_code == 400, query


async def test_an_empty_range_says_so(harness, signed_in, user):
    browser, _ = await signed_in(user)
    html = (await browser.get("/ui/analytics")).text
    assert "No incidents in this range" in html and "Nothing in this range" in html
    assert stat(html, "mtta")[3] == "—"


# Snapshots (app/analytics/snapshots.py): the page reads a stored report while it is fresh; the
# worker computes it again every minute while someone looks; the API always computes.


def as_of(html: str) -> str:
    found = re.search(r'data-computed-at="([^"]+)"', html)
    assert found
    return found.group(1)


async def snapshot_scopes(harness) -> dict[str, tuple[datetime, datetime]]:
    async with harness.app.state.sessionmaker() as session:
        rows = await session.execute(
            select(
                AnalyticsSnapshot.scope, AnalyticsSnapshot.computed_at, AnalyticsSnapshot.viewed_at
            )
        )
        return {scope: (computed, viewed) for scope, computed, viewed in rows}


async def test_the_page_reads_its_snapshot_and_the_worker_refreshes_it(
    harness,
    signed_in,
    user,
    user_client,
    world,
):
    harness.clock.set(at(4))
    browser, _ = await signed_in(user)
    html = (await browser.get("/ui/analytics?days=7")).text
    assert stat(html, "opened")[-1] == "7" and as_of(html) == at(4).isoformat()
    # A new incident inside the range: the page keeps its snapshot; the API computes afresh.
    await harness.factory.incident(created_at=at(3, 12), severity="low", alert_count=1)
    html = (await browser.get("/ui/analytics?days=7")).text
    assert stat(html, "opened")[-1] == "7" and as_of(html) == at(4).isoformat()
    api = await user_client.get(
        URL, params={"start": "2025-12-28T00:00:00Z", "end": "2026-01-04T00:00:00Z"}
    )
    assert api.json()["incidents"]["total"] == 8
    # Under a minute old: the worker leaves it.
    harness.clock.advance(seconds=59)
    assert (await harness.run_jobs())["refresh_analytics"] == 0
    # A minute old and viewed: the worker computes it again, over [Dec 28 00:01, Jan 4 00:01),
    # which now takes in i7 (Jan 4 00:00) as well as the new incident.
    harness.clock.advance(seconds=1)
    assert (await harness.run_jobs())["refresh_analytics"] == 1
    html = (await browser.get("/ui/analytics?days=7")).text
    assert stat(html, "opened")[-1] == "9" and as_of(html) == harness.clock.now().isoformat()
    assert "Figures as of 2026-01-04 00:01" in html
    # Other ranges are separate reports, each computed on its first view.
    html = (await browser.get("/ui/analytics?days=30")).text
    assert stat(html, "opened")[-1] == "9"
    assert set(await snapshot_scopes(harness)) == {"7d", "30d"}


async def test_only_reports_in_use_are_refreshed_and_old_ones_are_forgotten(
    harness,
    signed_in,
    user,
    world,
):
    harness.clock.set(at(4))
    browser, _ = await signed_in(user)
    search = world["search"].id
    await browser.get(f"/ui/analytics?days=7&service={search}")
    scope = f"7d:service={search}"
    # Viewed within the last 10 minutes: computed again once a minute old.
    harness.clock.advance(minutes=9)
    assert (await harness.run_jobs())["refresh_analytics"] == 1
    assert (await snapshot_scopes(harness))[scope][0] == harness.clock.now()
    # Not viewed for over 10 minutes: left alone however old it gets.
    harness.clock.advance(minutes=2)
    assert (await harness.run_jobs())["refresh_analytics"] == 0
    computed, viewed = (await snapshot_scopes(harness))[scope]
    assert computed == at(4) + timedelta(minutes=9) and viewed == at(4)
    # Viewed again while over 10 minutes old: computed on the spot, not served stale.
    harness.clock.advance(minutes=10)
    html = (await browser.get(f"/ui/analytics?days=7&service={search}")).text
    assert as_of(html) == harness.clock.now().isoformat()
    harness.clock.advance(minutes=1)
    assert (await harness.run_jobs())["refresh_analytics"] == 1
    # Nobody looks for a day: deleted.
    harness.clock.advance(days=1, seconds=1)
    assert (await harness.run_jobs())["refresh_analytics"] == 0
    assert await snapshot_scopes(harness) == {}


async def test_a_page_in_continuous_use_stays_fresh(harness, signed_in, user, world):
    # Each view of a fresh report marks it in use (at most once a minute), so the worker keeps
    # computing it for as long as people look, not just for 10 minutes after the first view.
    harness.clock.set(at(4))
    browser, _ = await signed_in(user)
    await browser.get("/ui/analytics?days=7")
    for _ in range(6):
        harness.clock.advance(minutes=5)
        assert (await harness.run_jobs())["refresh_analytics"] == 1
        html = (await browser.get("/ui/analytics?days=7")).text
        assert as_of(html) == harness.clock.now().isoformat()


async def test_the_worker_has_a_budget(harness, signed_in, user, factory, world):
    # Glancing at every range of 6 services makes 28 reports; the worker computes at most
    # PER_TICK of them a tick, oldest first, whoever asked.
    harness.clock.set(at(4))
    services = [world["checkout"], world["search"]]
    services += [await factory.service(name=f"s{n}") for n in range(4)]
    browser, _ = await signed_in(user)
    for days in snapshots.RANGES:
        await browser.get(f"/ui/analytics?days={days}")
        for service in services:
            await browser.get(f"/ui/analytics?days={days}&service={service.id}")
    assert len(await snapshot_scopes(harness)) == 28
    harness.clock.advance(minutes=1)
    assert (await harness.run_jobs())["refresh_analytics"] == snapshots.PER_TICK
    assert (await harness.run_jobs())["refresh_analytics"] == snapshots.PER_TICK
    fresh = [
        s for s, (at_, _) in (await snapshot_scopes(harness)).items() if at_ == harness.clock.now()
    ]
    assert len(fresh) == 2 * snapshots.PER_TICK


async def test_a_service_that_does_not_exist_is_not_stored(harness, signed_in, user, world):
    harness.clock.set(at(4))
    browser, _ = await signed_in(user)
    html = (await browser.get("/ui/analytics?days=7&service=987654321")).text
    assert stat(html, "opened")[-1] == "0"
    assert await snapshot_scopes(harness) == {}


async def test_two_workers_compute_a_report_once(harness, signed_in, user, world):
    harness.clock.set(at(4))
    browser, _ = await signed_in(user)
    await browser.get("/ui/analytics?days=365")
    harness.clock.advance(minutes=1)
    sessions = harness.app.state.sessionmaker
    done = await asyncio.gather(
        snapshots.refresh_due(sessions, clock=harness.clock),
        snapshots.refresh_due(sessions, clock=harness.clock),
    )
    assert sorted(done) == [0, 1]
    # A claim is a lease: taken, it cannot be taken again until it runs out (a worker that died
    # while computing leaves its report to the next one).
    harness.clock.advance(minutes=1)
    now = harness.clock.now()
    assert await snapshots._claim(sessions, "365d", now)
    assert not await snapshots._claim(sessions, "365d", now)
    assert (await harness.run_jobs())["refresh_analytics"] == 0
    harness.clock.advance(snapshots.LEASE)
    assert (await harness.run_jobs())["refresh_analytics"] == 1


async def store(harness, days: int, service_id: int | None = None) -> None:
    async with session_scope(harness.app.state.sessionmaker) as session:
        await snapshots.read(session, days=days, service_id=service_id, now=harness.clock.now())


async def row(harness, scope: str) -> AnalyticsSnapshot:
    async with session_scope(harness.app.state.sessionmaker) as session:
        found = await session.get(AnalyticsSnapshot, scope)
        assert found is not None
        return found


async def test_failing_reports_wait_out_their_lease_and_the_others_go_on(
    harness,
    monkeypatch,
    caplog,
    world,
):
    # Two reports that keep failing (a statement timeout, say) must not take the budget of
    # every tick from the third.
    harness.clock.set(at(4))
    for days in (365, 90, 7):
        await store(harness, days)
        harness.clock.advance(seconds=1)
    harness.clock.advance(minutes=1)
    real = snapshots.compute

    async def failing(session, *, days, service_id, now):
        if days in (365, 90):
            raise RuntimeError("statement timeout")
        return await real(session, days=days, service_id=service_id, now=now)

    monkeypatch.setattr(snapshots, "compute", failing)
    assert (await harness.run_jobs())["refresh_analytics"] == 0  # 365 and 90: the oldest two
    assert "analytics report 365d could not be computed" in caplog.text
    assert (await harness.run_jobs())["refresh_analytics"] == 1  # 7 next, as they wait
    assert (await row(harness, "7d")).computed_at == harness.clock.now()
    failed_at = harness.clock.now()
    assert (await row(harness, "365d")).lease_until == failed_at + snapshots.LEASE
    # Once the lease runs out they are tried again.
    monkeypatch.setattr(snapshots, "compute", real)
    harness.clock.advance(snapshots.LEASE)
    assert (await harness.run_jobs())["refresh_analytics"] == 2
    assert (await row(harness, "365d")).computed_at == harness.clock.now()


async def test_the_budget_holds_whatever_the_batch_size(harness, world):
    harness.clock.set(at(4))
    for days in snapshots.RANGES:
        await store(harness, days)
    harness.clock.advance(minutes=1)
    worker = Worker(harness.app.state.sessionmaker, harness.clock, batch=2)
    done = await worker.run_once(ANALYTICS_JOBS)
    assert done["refresh_analytics"] == snapshots.PER_TICK


async def test_computing_holds_up_no_writer(harness, world, monkeypatch):
    # On SQLite every transaction but the report's is BEGIN IMMEDIATE: a writer started while
    # the worker computes must go through at once, not wait for the report (busy_timeout 30 s).
    harness.clock.set(at(4))
    await store(harness, 365)
    harness.clock.advance(minutes=1)
    real = snapshots.compute
    wrote = []

    async def computing_while_someone_writes(session, **kwargs):
        report = await real(session, **kwargs)
        async with session_scope(harness.app.state.sessionmaker) as writer:
            await writer.execute(text("UPDATE services SET description = 'changed'"))
        wrote.append(True)
        return report

    monkeypatch.setattr(snapshots, "compute", computing_while_someone_writes)
    done = await asyncio.wait_for(harness.run_jobs(), timeout=10)
    assert done["refresh_analytics"] == 1 and wrote == [True]


async def test_a_stopping_worker_finishes_the_report_in_hand_only(harness, world, monkeypatch):
    harness.clock.set(at(4))
    for days in (7, 30):
        await store(harness, days)
    harness.clock.advance(minutes=1)
    worker = harness.app.state.worker
    real = snapshots.compute

    async def stopped_meanwhile(session, **kwargs):
        worker.stop()  # SIGTERM while the first report is being computed
        return await real(session, **kwargs)

    monkeypatch.setattr(snapshots, "compute", stopped_meanwhile)
    done = await worker.run_once(ANALYTICS_JOBS)
    assert done["refresh_analytics"] == 1
    fresh = [
        s for s, (c, _) in (await snapshot_scopes(harness)).items() if c == harness.clock.now()
    ]
    assert len(fresh) == 1  # of the two due


async def test_a_view_that_stores_a_fresher_report_meanwhile_is_kept(harness, world, monkeypatch):
    harness.clock.set(at(4))
    await store(harness, 7)
    harness.clock.advance(minutes=1)
    real = snapshots.compute

    async def overtaken(session, **kwargs):
        report = await real(session, **kwargs)
        # A view computes and stores its own (here marked) while the worker is computing.
        async with session_scope(harness.app.state.sessionmaker) as other:
            await snapshots._store(
                other, "7d", report.model_copy(update={"service_id": 777}), harness.clock.now()
            )
        return report

    monkeypatch.setattr(snapshots, "compute", overtaken)
    await harness.run_jobs()
    stored = await row(harness, "7d")
    assert IncidentAnalytics.model_validate_json(stored.report).service_id == 777


async def test_wakes_do_not_drive_the_analytics_loop(harness, monkeypatch):
    calls = []

    async def counting(sessions, **kwargs):
        calls.append(True)
        return 0

    monkeypatch.setattr(runner.analytics_snapshots, "refresh_due", counting)
    worker = Worker(harness.app.state.sessionmaker, harness.clock, jobs=JOBS, poll_interval=30)
    task = asyncio.create_task(worker.run())
    for _ in range(100):  # bounded: the first tick runs at start
        if calls:
            break
        await asyncio.sleep(0.02)
    for _ in range(20):  # new steps, pages: the other loops run again, this one does not
        worker.wake()
        await asyncio.sleep(0.02)
    worker.stop()
    await task
    assert calls == [True]


async def test_the_running_worker_refreshes_reports(harness, database_url, world):
    clock = harness.clock
    clock.set(at(4))
    await store(harness, 7)
    clock.advance(minutes=1)
    settings = make_settings(
        database_url, worker_in_process=True, worker_poll_interval_seconds=0.05
    )
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        for _ in range(100):  # bounded: at most 5 s; the loop's first tick runs at start
            if (await row(harness, "7d")).computed_at == clock.now():
                break
            await asyncio.sleep(0.05)
    assert (await row(harness, "7d")).computed_at == clock.now()


async def test_a_report_reads_one_snapshot_on_postgresql(harness, postgres_only):
    # Its queries must agree with one another while alerts keep arriving; the next user of the
    # pooled connection gets the ordinary isolation back.
    sessions = harness.app.state.sessionmaker
    async with reading_scope(sessions) as session:
        isolation = await session.scalar(text("SHOW transaction_isolation"))
        read_only = await session.scalar(text("SHOW transaction_read_only"))
    assert (isolation, read_only) == ("repeatable read", "on")
    for _ in range(3):  # the pooled connection, used again
        async with session_scope(sessions) as session:
            assert await session.scalar(text("SHOW transaction_isolation")) == "read committed"
