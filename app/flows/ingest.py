"""Alerts into incidents: an alert triggers, acknowledges or resolves the incident of its
integration's service and its dedup key.

At most one incident per (service, dedup key) is open at a time: a transaction-scoped lock on the
key serialises senders, and a partial unique index in the database backs it up. Many alerts are
ingested together (`ingest_many`, one transaction for the requests in hand; see
`app.core.batching`) with the same outcome as one at a time in order.

In a batch, the keys are checked with one read and, when RATE_LIMIT_INGEST_PER_SECOND is set,
each integration's bucket (see `app.core.ratelimit`) is taken from for its requests by one
statement that commits at once on its own (on PostgreSQL), so a bucket's row is locked only for
that statement: requests beyond what the bucket holds get a 429 with `Retry-After`, in arrival
order. A request's own problem (an unknown key, the wrong kind, a body that does not fit) is its
answer alone.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.alerts.alert import MAX_TITLE, Alert, Outcome, Result, clean_labels
from app.core import bulk, metrics, ratelimit
from app.core.actors import Actor
from app.core.batching import Batcher, Job
from app.core.clock import Clock
from app.core.errors import DomainError, Forbidden, Unauthorized, Unprocessable
from app.core.logging import acting_for
from app.flows import incidents as incident_flow
from app.incidents import service as incident_service
from app.incidents import timeline
from app.incidents.models import Incident, Status, TimelineEntry
from app.incidents.timeline import Row
from app.integrations import service as integration_service
from app.integrations.models import Integration

logger = logging.getLogger(__name__)

INCIDENTS = cast(Table, Incident.__table__)
ENTRIES = cast(Table, TimelineEntry.__table__)


def actor_of(integration: Integration) -> Actor:
    return Actor("integration", integration.id, integration.name)


def _received(incident_id: int, alert: Alert, integration: Integration, now: datetime) -> Row:
    """The `alert_received` entry, with the alert as the source sent it (and its request's id)."""
    with acting_for(alert.request_id):
        return timeline.alert_received(
            incident_id, actor=actor_of(integration), now=now, integration_id=integration.id,
            kind=integration.kind, action=alert.action, title=alert.title[:MAX_TITLE],
            severity=alert.severity.value, raw=alert.raw,
        )  # fmt: skip


def _opening(integration: Integration, alert: Alert, now: datetime) -> incident_flow.Opening:
    """The incident an alert opens, with its `alert_received` entry."""
    row = incident_service.new_row(
        title=(alert.title or alert.dedup_key)[:MAX_TITLE], description=alert.description,
        severity=alert.severity, service_id=integration.service_id, source=integration.kind,
        dedup_key=alert.dedup_key, labels=clean_labels(alert.labels),
        custom_fields=alert.details, created_by=None, last_alert_at=now, now=now,
    )  # fmt: skip
    opening = incident_flow.Opening(row, actor_of(integration), request_id=alert.request_id)
    opening.followers.append(lambda incident_id: _received(incident_id, alert, integration, now))
    return opening


async def ingest(
    session: AsyncSession,
    *,
    integration: Integration,
    alert: Alert,
    now: datetime,
    reopen_window: timedelta,
) -> Result:
    """One alert, whatever its action."""
    actor = actor_of(integration)
    pair = (integration.service_id, alert.dedup_key)
    key = alert.dedup_key
    await incident_service.lock_dedup_keys(session, [pair])
    open_id = (await incident_service.find_open(session, [pair])).get(pair)
    if alert.action == "trigger":
        if open_id is not None:
            return await _repeat(session, open_id, alert, integration, now)
        if reopen_window > timedelta(0):
            reopened = await _reopen_recent(session, alert, integration, now, reopen_window)
            if reopened is not None:
                return reopened
        # The key is locked and has no open incident: open one (its service exists, by the FK).
        opening = _opening(integration, alert, now)
        await incident_flow.open_many(session, [opening], now=now)
        return Result(opening.id, "incident_created", key)
    if open_id is None:
        return Result(None, "no_changes", key)  # as PagerDuty: accepted and ignored
    found = await incident_service.get(session, open_id, lock=True)
    assert found is not None
    session.add(TimelineEntry(**_received(found.id, alert, integration, now)))
    if alert.action == "acknowledge":
        if found.status != Status.triggered.value:
            return Result(found.id, "no_changes", key)
        await incident_flow.acknowledge(session, incident=found, actor=actor, now=now)
        return Result(open_id, "incident_acknowledged", key)
    await incident_flow.resolve(session, incident=found, actor=actor, now=now)
    return Result(open_id, "incident_resolved", key)


async def _repeat(
    session: AsyncSession,
    incident_id: int,
    alert: Alert,
    integration: Integration,
    now: datetime,
) -> Result:
    """Another alert for an open incident: counted, recorded; never re-pages by itself."""
    await session.execute(
        update(Incident)
        .where(Incident.id == incident_id)
        .values(
            alert_count=Incident.alert_count + 1,
            last_alert_at=now,
            updated_at=now,
            version=Incident.version + 1,
        )
    )
    session.add(TimelineEntry(**_received(incident_id, alert, integration, now)))
    return Result(incident_id, "incident_updated", alert.dedup_key)


async def _reopen_recent(
    session: AsyncSession, alert: Alert, integration: Integration, now: datetime, window: timedelta
) -> Result | None:
    recent = await session.scalar(
        select(Incident.id)
        .where(
            Incident.service_id == integration.service_id,
            Incident.dedup_key == alert.dedup_key,
            Incident.status == Status.resolved.value,
            Incident.resolved_at >= now - window,
        )
        .order_by(Incident.resolved_at.desc())
        .limit(1)
    )
    if recent is None:
        return None
    incident = await incident_service.get(session, recent, lock=True)
    if incident is None or incident.status != Status.resolved.value:
        return None
    # Counted in the same write as the reopen (one version step).
    incident.alert_count += 1
    incident.last_alert_at = now
    await incident_flow.reopen(
        session, incident=incident, actor=actor_of(integration), now=now,
        note="a new alert within the window",
    )  # fmt: skip
    session.add(TimelineEntry(**_received(recent, alert, integration, now)))
    return Result(recent, "incident_reopened", alert.dedup_key)


# ---- many alerts at once -------------------------------------------------------------------------


@dataclass(eq=False)
class _Target:
    """The incident some alerts of a batch go to: one already open, or one the batch opens."""

    id: int | None
    opening: incident_flow.Opening | None = None  # of an incident to open
    received: list[tuple[Alert, Integration]] = field(default_factory=list)


class _Plan:
    """Alerts that open or add to incidents, written together: a few statements for any number."""

    def __init__(self) -> None:
        self.targets: list[_Target] = []

    def open(self, integration: Integration, alert: Alert, now: datetime) -> _Target:
        return self.open_with(_opening(integration, alert, now))

    def open_with(self, opening: incident_flow.Opening) -> _Target:
        target = _Target(None, opening=opening)
        self.targets.append(target)
        return target

    def add(self, target: _Target, integration: Integration, alert: Alert, now: datetime) -> None:
        opening = target.opening
        if opening is not None:  # opened by this batch, not yet written: one alert more
            opening.row["alert_count"] += 1
            opening.row["version"] += 1
            opening.followers.append(
                lambda incident_id: _received(incident_id, alert, integration, now)
            )
            return
        if not target.received:
            self.targets.append(target)
        target.received.append((alert, integration))

    async def write(self, session: AsyncSession, now: datetime) -> None:
        targets, self.targets = self.targets, []
        openings = [t.opening for t in targets if t.opening is not None]
        await incident_flow.open_many(session, openings, now=now)
        for target in targets:
            if target.opening is not None:
                # Opened now: further alerts add to it like to any open incident.
                target.id, target.opening = target.opening.id, None
        repeated = [t for t in targets if t.received]
        entries = [
            _received(cast(int, t.id), alert, integration, now)
            for t in repeated
            for alert, integration in t.received
        ]
        await bulk.insert_rows(session, ENTRIES, entries)
        if repeated:
            await session.execute(
                update(INCIDENTS)
                .where(INCIDENTS.c.id == bindparam("target"))
                .values(
                    alert_count=INCIDENTS.c.alert_count + bindparam("count"),
                    version=INCIDENTS.c.version + bindparam("count"),
                    last_alert_at=bindparam("now"),
                    updated_at=bindparam("now"),
                ),
                [{"target": t.id, "count": len(t.received), "now": now} for t in repeated],
            )
        for target in repeated:
            target.received = []


async def ingest_many(
    session: AsyncSession,
    items: Sequence[tuple[Integration, Alert]],
    *,
    now: datetime,
    reopen_window: timedelta,
    storm: int | None = None,
) -> list[Result]:
    """`ingest` for many alerts in one transaction, with the same outcome as one at a time in
    order, in a handful of statements: one lock statement for every key, one read of the open
    incidents, then the new incidents, timeline entries, first escalation steps, counts and
    notifications each written for all alerts at once. The rarer alerts (acknowledge, resolve,
    a trigger that may reopen) go through `ingest`, after what comes before them is written.

    With `storm` (INGEST_NEW_INCIDENTS_PER_MINUTE), an integration past its budget of new
    incidents has its further new alerts kept on one "alert storm" incident of its service."""
    pairs = {(integration.service_id, alert.dedup_key) for integration, alert in items}
    open_now: dict[tuple[int | None, str], _Target | None] = {}
    await _lock_and_find(session, pairs, open_now)
    budgets, storming = await _storm_budgets(session, items, open_now, storm, now)
    if storming:  # only in a storm: its incidents' keys, locked after the alerts' (see below)
        await _lock_and_find(session, {(i.service_id, storm_key(i)) for i in storming}, open_now)
    plan = _Plan()
    answers: list[tuple[_Target | None, Outcome, str]] = []
    for integration, alert in items:
        pair = (integration.service_id, alert.dedup_key)
        target = open_now.get(pair)
        budget = (integration.service_id, integration.kind)
        budgeted = budgets is not None and budget in budgets
        if alert.action == "trigger" and target is None and budgets is not None and budgeted:
            if budgets[budget] <= 0:
                if integration not in storming:  # a key resolved and new again in the batch
                    storm_pair = (integration.service_id, storm_key(integration))
                    await _lock_and_find(session, [storm_pair], open_now)
                    storming.add(integration)
                answers.append(_to_storm(plan, open_now, integration, alert, storm, now))
                continue
            budgets[budget] -= 1
        if alert.action == "trigger" and target is not None:
            plan.add(target, integration, alert, now)
            answers.append((target, "incident_updated", alert.dedup_key))
        elif alert.action == "trigger" and reopen_window <= timedelta(0):
            open_now[pair] = plan.open(integration, alert, now)
            answers.append((open_now[pair], "incident_created", alert.dedup_key))
        else:
            await plan.write(session, now)
            with acting_for(alert.request_id):
                result = await ingest(
                    session, integration=integration, alert=alert, now=now,
                    reopen_window=reopen_window,
                )  # fmt: skip
            await session.flush()  # its entries before those of the alerts after it
            if result.outcome == "incident_resolved":
                open_now[pair] = None
            elif result.incident_id is not None:
                open_now[pair] = _Target(result.incident_id)
            answers.append((_Target(result.incident_id), result.outcome, result.dedup_key))
    await plan.write(session, now)
    return [Result(target.id if target else None, outcome, key) for target, outcome, key in answers]


async def _lock_and_find(
    session: AsyncSession,
    pairs: Collection[tuple[int | None, str]],
    open_now: dict[tuple[int | None, str], _Target | None],
) -> None:
    """Lock the keys, then add their open incidents to `open_now`."""
    await incident_service.lock_dedup_keys(session, pairs)
    found = await incident_service.find_open(session, pairs)
    open_now |= {pair: _Target(incident_id) for pair, incident_id in found.items()}


# ---- alert storms: past an integration's budget of new incidents, one incident for the rest -----
#
# A storm incident's key is locked after the batch's alert keys, in a second statement. No
# deadlock: whoever holds a storm key took it last and waits for nothing more.


def storm_key(integration: Integration) -> str:
    """The dedup key of an integration's alert-storm incident (on its service)."""
    return f"alert-storm:{integration.id}"


async def _storm_budgets(
    session: AsyncSession,
    items: Sequence[tuple[Integration, Alert]],
    open_now: dict[tuple[int | None, str], _Target | None],
    storm: int | None,
    now: datetime,
) -> tuple[dict[tuple[int, str], int] | None, set[Integration]]:
    """How many incidents may still be opened, by (service, kind) with new keys in the batch:
    `storm` less those alerts of that kind opened on the service in the last minute (incidents
    do not name their integration, so integrations of one kind on one service share a budget);
    and the integrations whose new keys exceed it. Counted in this transaction: two processes'
    batches at the same moment may each open up to the rest, once."""
    if not storm:
        return None, set()
    new: dict[tuple[int, str], set[str]] = {}
    integrations: dict[tuple[int, str], set[Integration]] = {}
    for integration, alert in items:
        pair = (integration.service_id, alert.dedup_key)
        if alert.action == "trigger" and open_now.get(pair) is None:
            group = (integration.service_id, integration.kind)
            new.setdefault(group, set()).add(alert.dedup_key)
            integrations.setdefault(group, set()).add(integration)
    budgets: dict[tuple[int, str], int] = {}
    storming: set[Integration] = set()
    for (service_id, kind), keys in sorted(new.items()):
        opened = await incident_service.opened_since(
            session, service_id=service_id, source=kind, since=now - timedelta(minutes=1),
            cap=storm,
        )  # fmt: skip
        budgets[(service_id, kind)] = storm - opened
        if len(keys) > storm - opened:
            storming |= integrations[(service_id, kind)]
    return budgets, storming


def _to_storm(
    plan: _Plan,
    open_now: dict[tuple[int | None, str], _Target | None],
    integration: Integration,
    alert: Alert,
    storm: int | None,
    now: datetime,
) -> tuple[_Target, Outcome, str]:
    """Keep `alert` on its integration's alert-storm incident, opening it if none is open."""
    pair = (integration.service_id, storm_key(integration))
    target = open_now.get(pair)
    if target is not None:
        plan.add(target, integration, alert, now)
        return target, "incident_updated", alert.dedup_key
    per_minute = storm or 0
    name = integration.name
    opening = _opening(
        integration,
        Alert(
            action="trigger", dedup_key=storm_key(integration), severity=alert.severity,
            title=f"Alert storm: {name} opened more than {per_minute} incidents in a minute",
            description=(
                f"Integration {name} (id {integration.id}) opened {per_minute} incidents within a "
                "minute (INGEST_NEW_INCIDENTS_PER_MINUTE). Its further new alerts are kept on this "
                "incident, each in its timeline, instead of opening and paging one incident each, "
                "until its rate falls back under the limit. Resolve this incident once the storm "
                "is handled."
            ),
            request_id=alert.request_id,
        ),
        now,
    )  # fmt: skip
    opening.followers[:] = [lambda incident_id: _received(incident_id, alert, integration, now)]
    target = open_now[pair] = plan.open_with(opening)
    logger.warning(
        "alert storm: integration %s opened more than %d incidents in a minute; its new alerts "
        "go to one incident", integration.id, per_minute,
        extra={"integration_id": integration.id, "service_id": integration.service_id},
    )  # fmt: skip
    return target, "incident_created", alert.dedup_key


# ---- alerts as they arrive: a batch of requests in one transaction -------------------------------

# `session.info` key: the jobs whose buckets were taken from inside the session's transaction.
TAKEN_HERE = "alerts_taken_here"


@dataclass(eq=False)
class AlertJob(Job[list[Result]]):
    """One request's alerts: the key it presented, the kind of endpoint, how to parse its body."""

    key: str
    kind: str
    parse: Callable[[], list[Alert]]  # raises a DomainError for a body that does not fit
    taken: bool = False  # its integration's bucket has been taken from (see `_admit`)
    alerts: list[Alert] | None = None  # parsed once its key is known good (see `_admit`)
    integration: Integration | None = None  # of the transaction at hand
    refusal: DomainError | None = None  # 401, 403 or 429: its answer, through retries

    def on_settled(self, outcome: list[Result] | BaseException) -> None:
        _count(self.kind, outcome)


class AlertBatcher(Batcher[AlertJob]):
    """The batcher of a process's alert requests."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        clock: Clock,
        *,
        reopen_window: timedelta,
        limit: ratelimit.Limit | None = None,
        storm: int | None = None,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        work = Ingestion(reopen_window=reopen_window, limit=limit, storm=storm)
        super().__init__(sessionmaker, clock, work, wake=wake)

    async def alerts(self, key: str, kind: str, parse: Callable[[], list[Alert]]) -> list[Result]:
        """Authenticate `key` for endpoints of `kind`, parse, and ingest: the alerts' results."""
        results: list[Result] = await self.submit(AlertJob(key, kind, parse))
        return results


class Ingestion:
    """The work of a batch of alert requests (`app.core.batching.Work`)."""

    def __init__(
        self,
        *,
        reopen_window: timedelta,
        limit: ratelimit.Limit | None = None,
        storm: int | None = None,
    ) -> None:
        self.reopen_window = reopen_window
        self.limit = limit
        self.storm = storm

    async def __call__(
        self, session: AsyncSession, jobs: Sequence[AlertJob], now: datetime
    ) -> list[Any]:
        await self._admit(session, jobs, now)
        outcomes: list[list[Result] | BaseException] = []
        items: list[tuple[Integration, Alert]] = []
        owners: list[list[Result]] = []
        for job in jobs:
            integration, alerts = job.integration, job.alerts
            if job.refusal is not None or integration is None or alerts is None:
                outcomes.append(job.refusal or Unauthorized("A valid integration key is required"))
                continue
            for alert in alerts:
                alert.request_id = job.request_id
            mine: list[Result] = []
            outcomes.append(mine)
            items += [(integration, alert) for alert in alerts]
            owners += [mine] * len(alerts)
        if items:
            results = await ingest_many(
                session, items, now=now, reopen_window=self.reopen_window, storm=self.storm
            )
            for owner, result in zip(owners, results, strict=True):
                owner.append(result)
        return outcomes

    def rolled_back(self, session: AsyncSession, jobs: Sequence[AlertJob]) -> None:
        for job in session.info.get(TAKEN_HERE, ()):  # SQLite: the units are back
            job.taken = False
            if isinstance(job.refusal, ratelimit.TooManyRequests):
                job.refusal = None

    async def _admit(self, session: AsyncSession, jobs: Sequence[AlertJob], now: datetime) -> None:
        """Check the jobs' keys (in this transaction: its integrations are the ones written
        with) and, once per job whatever the retries, take their integrations' buckets; each job
        gets its integration, or its refusal (401, 403, 429) which it keeps."""
        keys = {job.key for job in jobs if job.refusal is None}
        known = await integration_service.by_keys(session, keys)
        integrations: dict[int, Integration] = {}  # by the job's place in `jobs`
        refusals: dict[int, DomainError] = {}
        for n, job in enumerate(jobs):
            if job.refusal is not None:
                continue
            try:
                integrations[n] = _check(known, job)
            except DomainError as exc:
                refusals[n] = exc
        # Parsed once the key is good (a body is never parsed for a stranger), and only once.
        for n in list(integrations):
            job = jobs[n]
            if job.alerts is None:
                try:
                    job.alerts = job.parse()
                except DomainError as exc:
                    refusals[n] = exc
                    del integrations[n]
                    continue
            if self.limit is not None and len(job.alerts) > self.limit.capacity:
                refusals[n] = Unprocessable(
                    f"{len(job.alerts)} alerts in one request, more than this integration may "
                    f"send at once ({self.limit.capacity}, RATE_LIMIT_INGEST_BURST): send them "
                    "in smaller requests"
                )
                del integrations[n]
        untaken = {n: i for n, i in integrations.items() if not jobs[n].taken}
        if self.limit is not None and untaken:
            # Each alert counts: one request of a thousand alerts is a thousand, not one.
            units = {n: max(1, len(jobs[n].alerts or ())) for n in untaken}
            wanted: Counter[str] = Counter()
            for n, integration in untaken.items():
                wanted[_bucket(integration)] += units[n]
            grants = await ratelimit.take_soon(session, wanted, self.limit, now=now)
            # Whole requests, in arrival order, while what was granted holds them; units granted
            # to no admitted request go back, so that a refused request uses up nothing.
            used: Counter[str] = Counter()
            for n, integration in untaken.items():
                bucket = _bucket(integration)
                if used[bucket] + units[n] <= grants[bucket].admitted:
                    used[bucket] += units[n]
                    continue
                short = units[n] - (grants[bucket].admitted - used[bucket])
                wait = grants[bucket].retry_after + math.ceil((short - 1) * self.limit.interval)
                refusals[n] = self._too_many(max(1, wait))
            unused = {b: grants[b].admitted - used[b] for b in grants}
            await ratelimit.give_back_soon(session, unused, self.limit)
        if self.limit is not None and untaken and session.get_bind().dialect.name != "postgresql":
            # Taken in this transaction (see `ratelimit.take_soon`): a rollback gives them back.
            session.info.setdefault(TAKEN_HERE, []).extend(jobs[n] for n in untaken)
        # Only now, once the buckets are taken from: a failure above leaves the jobs untaken.
        for n, job in enumerate(jobs):
            job.taken = True
            job.refusal = job.refusal or refusals.get(n)
            job.integration = integrations.get(n) if job.refusal is None else None

    def _too_many(self, retry_after: int) -> ratelimit.TooManyRequests:
        assert self.limit is not None
        return ratelimit.TooManyRequests(
            f"Too many alerts for this integration key (over {self.limit.capacity} at once, "
            f"then one every {self.limit.interval:g} s); try again in {retry_after} s",
            retry_after=retry_after,
        )


# What each ingestion outcome is called in the metrics.
OUTCOMES = {
    "incident_created": "new",
    "incident_updated": "deduplicated",
    "incident_acknowledged": "acknowledged",
    "incident_resolved": "resolved",
    "incident_reopened": "reopened",
    "no_changes": "unchanged",
}


def _count(kind: str, outcome: list[Result] | BaseException) -> None:
    """`ims_alerts_received`: each stored alert by its outcome; a request refused (bad key, body,
    or over the limit) as one `rejected`, one that could not be stored (database) as `failed`."""
    if isinstance(outcome, BaseException):
        name = "rejected" if isinstance(outcome, DomainError) else "failed"
        metrics.ALERTS.labels(kind, name).inc()
        return
    for name, count in Counter(OUTCOMES[r.outcome] for r in outcome).items():
        metrics.ALERTS.labels(kind, name).inc(count)


def _bucket(integration: Integration) -> str:
    return f"ingest:{integration.id}"


def _check(known: dict[str, Integration], job: AlertJob) -> Integration:
    integration = known.get(job.key)
    if integration is None:
        raise Unauthorized("A valid integration key is required")
    if integration.kind != job.kind:
        raise Forbidden(
            f"This key belongs to a {integration.kind} integration; "
            f"send its alerts to the {integration.kind} endpoint"
        )
    return integration
