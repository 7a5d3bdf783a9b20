"""An incident's life across domains: opening, every change of state, assignments, comments.

Each change goes through `changed`: the one place that says what follows what. Leaving
`triggered` (acknowledged, snoozed, resolved) stops the escalation run and cancels pages not yet
sent; coming back to it (unsnoozed, unacknowledged, reopened) starts a new run; the changes
people may ask to hear of are announced; and the metrics count them. All of it is written in the
transaction of the change. The API, the console, ingestion and the worker all come through here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import policy as authz
from app.auth.policy import Action, Principal
from app.core import bulk, metrics
from app.core.actors import SYSTEM, Actor
from app.core.batching import Job
from app.core.db import WAKE_WORKER
from app.core.errors import DomainError, NotFound, Unauthorized, Unprocessable
from app.core.logging import acting_for
from app.escalation import runs
from app.escalation.models import EscalationEvent
from app.incidents import service as incident_service
from app.incidents import timeline
from app.incidents.models import Comment, Incident, Severity, Status, TimelineEntry
from app.incidents.timeline import EntryType, Row
from app.notifications import compose, outbox
from app.services import service as service_service
from app.users import queries as user_queries
from app.users.models import User

INCIDENTS = cast(Table, Incident.__table__)
ENTRIES = cast(Table, TimelineEntry.__table__)
EVENTS = cast(Table, EscalationEvent.__table__)

# What follows each kind of change (see `changed`).
STOPS_ESCALATION = frozenset({EntryType.acknowledged, EntryType.snoozed, EntryType.resolved})
STARTS_ESCALATION = frozenset({EntryType.unsnoozed, EntryType.unacknowledged, EntryType.reopened})
# The changes people may ask to be told about (notification preferences' `events`).
ANNOUNCED = frozenset({EntryType.acknowledged, EntryType.resolved, EntryType.reopened})
# The changes counted by the metrics (with `opened`, counted in `open_many`).
COUNTED = frozenset({EntryType.acknowledged, EntryType.resolved, EntryType.reopened})


async def changed(
    session: AsyncSession, *, incident: Incident, entry: Row | None, actor: Actor, now: datetime
) -> Incident:
    """What follows a change of `incident`, recorded by `entry` (None: nothing changed), in the
    change's transaction; answers the incident as stored."""
    if entry is None:
        return incident
    kind = timeline.type_of(entry)
    if kind in STOPS_ESCALATION:
        await runs.stop(session, incident=incident, reason=kind.value)
        await outbox.cancel_pending_pages(session, incident_id=incident.id, now=now)
    recorded = timeline.record(session, entry)
    if kind in STARTS_ESCALATION:
        await runs.start(session, incident=incident, now=now)
    await session.flush()
    await compose.update_slack_messages(session, incident=incident, entry=recorded, now=now)
    if kind in ANNOUNCED:
        await compose.announce(
            session, incident=incident, entry=recorded, event=kind.value, actor=actor, now=now
        )
    if kind in COUNTED:
        metrics.count_incidents(session, kind.value, [incident.severity])
    return await incident_service.reload(session, incident)


# ---- opening -------------------------------------------------------------------------------------


@dataclass(eq=False)
class Opening:
    """An incident to open: its row (`incident_service.new_row`), who opens it, and the entries
    that follow its `created` and `policy_applied` ones (the alerts that came with it), each made
    from the incident's id once it has one."""

    row: Row
    actor: Actor
    request_id: str | None = None  # of the request that opens it, when not the current one
    followers: list[Callable[[int], Row]] = field(default_factory=list)
    id: int | None = None  # once opened


async def open_many(session: AsyncSession, openings: Sequence[Opening], *, now: datetime) -> None:
    """Open incidents, each with its `created` entry, its escalation policy and first step, and
    its notifications; counted once committed. A handful of statements for any number (the API
    opens one at a time, ingestion many). The caller has checked the service and the dedup key.
    Sets each opening's id."""
    if not openings:
        return
    rows = [opening.row for opening in openings]
    choices = await runs.choose_policies(session, [SimpleNamespace(**row) for row in rows])
    for row, (policy, _) in zip(rows, choices, strict=True):
        row.update(runs.escalation_fields(policy, run=1))
    inserted = await bulk.insert_rows(session, INCIDENTS, rows, returning=("id",), ordered=True)
    entries: list[Row] = []
    steps: list[Row] = []
    told: list[tuple[Opening, dict[str, Any]]] = []
    for opening, row, (_, reason), (incident_id,) in zip(
        openings, rows, choices, inserted, strict=True
    ):
        opening.id = row["id"] = incident_id
        with acting_for(opening.request_id) if opening.request_id else nullcontext():
            created = timeline.created(
                incident_id, actor=opening.actor, now=now, title=row["title"],
                severity=row["severity"], service_id=row["service_id"], source=row["source"],
                dedup_key=row["dedup_key"],
            )  # fmt: skip
            applied, step = runs.begin_rows(incident=SimpleNamespace(**row), reason=reason, now=now)
        entries += [created, applied, *(follower(incident_id) for follower in opening.followers)]
        told.append((opening, created["data"]))
        if step is not None:
            steps.append(step)
    written = await bulk.insert_rows(
        session, ENTRIES, entries, returning=("id", "incident_id", "type")
    )
    created_ids = {row.incident_id: row.id for row in written if row.type == EntryType.created}
    await bulk.insert_rows(session, EVENTS, steps)
    if steps:
        session.info[WAKE_WORKER] = True
    await compose.announce_opened(
        session,
        [
            compose.Told(opening.row, created_ids[cast(int, opening.id)], data, opening.actor,
                         request_id=opening.request_id)
            for opening, data in told
        ],
        now=now,
    )  # fmt: skip
    metrics.count_incidents(session, "opened", [row["severity"] for row in rows])


async def create(
    session: AsyncSession,
    *,
    title: str,
    actor: Actor,
    now: datetime,
    description: str = "",
    severity: Severity = Severity.medium,
    service_id: int | None = None,
    service_name: str | None = None,
    labels: dict[str, str] | None = None,
    custom_fields: dict[str, Any] | None = None,
    dedup_key: str | None = None,
    principal: Principal | None = None,
) -> tuple[Incident, bool]:
    """A new incident, or the open one with the same dedup key and service (created is False).
    `service_name` names a service, created if none has that name. `principal`: who asks, when
    the policy must allow them to open an incident on the service."""
    wanted = Wanted(
        actor, title, description, severity, service_id, service_name, labels or {},
        custom_fields or {}, dedup_key, principal=principal,
    )  # fmt: skip
    [answer] = await open_wanted(session, [wanted], now=now)
    if isinstance(answer, DomainError):
        raise answer
    return answer


@dataclass(eq=False)
class Wanted:
    """An incident someone asks for (the API, the console): opened, or the open one with its
    dedup key on its service."""

    actor: Actor
    title: str
    description: str = ""
    severity: Severity = Severity.medium
    service_id: int | None = None
    service_name: str | None = None  # names a service, created if new (instead of service_id)
    labels: dict[str, str] = field(default_factory=dict)
    custom_fields: dict[str, Any] = field(default_factory=dict)
    dedup_key: str | None = None
    request_id: str | None = None  # of the request asking, when not the current one
    # Who asks, when the policy must decide whether they may open an incident on the service
    # (`app.auth.policy`: a team's service needs its responder role); None: the system.
    principal: Principal | None = None


async def open_wanted(
    session: AsyncSession, wanted: Sequence[Wanted], *, now: datetime
) -> list[tuple[Incident, bool] | DomainError]:
    """Each one asked for: (the incident, whether it was opened), or its refusal (an unknown
    service). The same outcome as one at a time in order (a dedup key asked for twice opens one
    incident), in a handful of statements for any number."""
    answers: list[tuple[Incident, bool] | DomainError | None] = [None] * len(wanted)
    # Services named are created if new, in the order of their names (the locks that serialise
    # their creators are then always taken in one order).
    named: dict[str, int] = {}
    for name in sorted({w.service_name for w in wanted if w.service_name is not None}):
        named[name] = (await service_service.get_or_create(session, name=name, now=now)).id
    given = {w.service_id for w in wanted if w.service_name is None and w.service_id is not None}
    known = await incident_service.existing_services(session, given)
    service_of: dict[int, int | None] = {}
    for n, one in enumerate(wanted):
        if one.service_name is not None:
            service_of[n] = named[one.service_name]
        elif one.service_id is not None and one.service_id not in known:
            answers[n] = Unprocessable(f"Service {one.service_id} does not exist")
        else:
            service_of[n] = one.service_id
    for n, refusal in (await _refused(session, wanted, service_of)).items():
        answers[n] = refusal
        del service_of[n]
    pairs = {(service_of[n], key) for n in service_of if (key := wanted[n].dedup_key) is not None}
    open_now: dict[incident_service.DedupPair, int | Opening] = {}
    if pairs:
        await incident_service.lock_dedup_keys(session, pairs)
        open_now.update(await incident_service.find_open(session, pairs))
    openings: list[Opening] = []
    targets: dict[int, tuple[int | Opening, bool]] = {}
    for n, service_id in service_of.items():
        one = wanted[n]
        pair = (service_id, one.dedup_key or "")
        if one.dedup_key is not None and pair in open_now:
            targets[n] = (open_now[pair], False)  # open already, or opened just before
            continue
        opening = Opening(
            incident_service.new_row(
                title=one.title, description=one.description, severity=one.severity,
                service_id=service_id, source="api", dedup_key=one.dedup_key, labels=one.labels,
                custom_fields=one.custom_fields, created_by=one.actor.user_id,
                last_alert_at=None, now=now,
            ),
            one.actor,
            request_id=one.request_id,
        )  # fmt: skip
        openings.append(opening)
        targets[n] = (opening, True)
        if one.dedup_key is not None:
            open_now[pair] = opening
    await open_many(session, openings, now=now)
    ids = {n: t.id if isinstance(t, Opening) else t for n, (t, _) in targets.items()}
    found = await incident_service.get_many(session, sorted({cast(int, i) for i in ids.values()}))
    incidents = {incident.id: incident for incident in found}
    for n, (_, created) in targets.items():
        answers[n] = (incidents[cast(int, ids[n])], created)
    return cast(list[tuple[Incident, bool] | DomainError], answers)


async def _refused(
    session: AsyncSession, wanted: Sequence[Wanted], service_of: dict[int, int | None]
) -> dict[int, DomainError]:
    """Those asked for on a service whose team does not let the asker respond (one statement,
    none when every asker is an admin or names no service)."""
    asked = [
        (n, principal, service_id)
        for n, service_id in service_of.items()
        if service_id is not None
        and (principal := wanted[n].principal) is not None
        and not principal.is_admin
    ]
    scopes = await authz.scopes_of_services(session, [(p, s) for _, p, s in asked])
    refused: dict[int, DomainError] = {}
    for n, principal, service_id in asked:
        try:
            authz.check(
                principal, Action.respond, scopes[(principal.user_id, service_id)],
                missing=f"Service {service_id} does not exist",
            )  # fmt: skip
        except DomainError as refusal:
            refused[n] = Unprocessable(refusal.detail) if isinstance(refusal, NotFound) else refusal
    return refused


# ---- changes -------------------------------------------------------------------------------------


async def update(
    session: AsyncSession,
    *,
    incident: Incident,
    changes: dict[str, Any],
    expected_version: int | None,
    actor: Actor,
    now: datetime,
) -> Incident:
    entry = await incident_service.update(
        session, incident=incident, changes=changes, expected_version=expected_version,
        actor=actor, now=now,
    )  # fmt: skip
    return await changed(session, incident=incident, entry=entry, actor=actor, now=now)


async def acknowledge(
    session: AsyncSession, *, incident: Incident, actor: Actor, now: datetime,
    note: str | None = None,
) -> Incident:  # fmt: skip
    entry = incident_service.acknowledge(incident, actor=actor, now=now, note=note)
    return await changed(session, incident=incident, entry=entry, actor=actor, now=now)


async def resolve(
    session: AsyncSession, *, incident: Incident, actor: Actor, now: datetime,
    note: str | None = None,
) -> Incident:  # fmt: skip
    entry = incident_service.resolve(incident, actor=actor, now=now, note=note)
    return await changed(session, incident=incident, entry=entry, actor=actor, now=now)


async def snooze(
    session: AsyncSession, *, incident: Incident, until: datetime, actor: Actor, now: datetime,
    note: str | None = None,
) -> Incident:  # fmt: skip
    entry = incident_service.snooze(incident, until=until, actor=actor, now=now, note=note)
    return await changed(session, incident=incident, entry=entry, actor=actor, now=now)


async def unsnooze(
    session: AsyncSession, *, incident: Incident, actor: Actor, now: datetime
) -> Incident:
    entry = incident_service.unsnooze(incident, actor=actor, now=now)
    return await changed(session, incident=incident, entry=entry, actor=actor, now=now)


async def unacknowledge(
    session: AsyncSession, *, incident: Incident, actor: Actor, now: datetime
) -> Incident:
    entry = incident_service.unacknowledge(incident, actor=actor, now=now)
    return await changed(session, incident=incident, entry=entry, actor=actor, now=now)


async def reopen(
    session: AsyncSession, *, incident: Incident, actor: Actor, now: datetime,
    note: str | None = None,
) -> Incident:  # fmt: skip
    entry = await incident_service.reopen(
        session, incident=incident, actor=actor, now=now, note=note
    )
    return await changed(session, incident=incident, entry=entry, actor=actor, now=now)


async def wake_snoozed(session: AsyncSession, *, now: datetime, batch: int = 100) -> int:
    """Return incidents whose snooze has ended to `triggered` (a worker job; safe to run twice)."""
    ids = await incident_service.snoozes_due(session, now=now, batch=batch)
    for incident_id in ids:
        incident = await incident_service.get(session, incident_id, lock=True)
        if incident is not None and incident.status == Status.snoozed.value:
            await unsnooze(session, incident=incident, actor=SYSTEM, now=now)
    return len(ids)


async def assign(
    session: AsyncSession,
    *,
    incident: Incident,
    actor: Actor,
    now: datetime,
    user_ids: Sequence[int] | None = None,
    add_user_id: int | None = None,
    role: str = "responder",
) -> Incident:
    """Set the whole set of assignees, or add one person (or change their part); the people
    added are told."""
    done = await incident_service.assign(
        session, incident=incident, actor=actor, now=now, user_ids=user_ids,
        add_user_id=add_user_id, role=role,
    )  # fmt: skip
    if done is None:
        return incident
    entry = timeline.record(session, done.entry)
    await session.flush()
    await compose.update_slack_messages(session, incident=incident, entry=entry, now=now)
    if done.added:
        await compose.announce(
            session, incident=incident, entry=entry, event=EntryType.assigned.value, actor=actor,
            now=now, user_ids=done.added,
        )  # fmt: skip
    session.expire(incident, ["assignments"])
    return await incident_service.reload(session, incident)


async def comment(
    session: AsyncSession, *, incident: Incident, author: User, content: str, now: datetime
) -> Comment:
    """Add a comment; the incident's responders are told."""
    added, row = await incident_service.add_comment(
        session, incident=incident, author=author, content=content, now=now
    )
    entry = timeline.record(session, row)
    await session.flush()
    await compose.announce(
        session, incident=incident, entry=entry, event=EntryType.commented.value,
        actor=Actor.of(author), now=now, detail=content,
    )  # fmt: skip
    return added


# ---- opening through the API: the requests in hand, in one transaction -------------------------


@dataclass(eq=False)
class OpenJob(Job[tuple[Incident, bool]]):
    """One `POST /v1/incidents/`: who asks (their token's claims, checked in the batch, so that a
    request holds no transaction of its own) and what they ask for."""

    user_id: int
    # None: the request sent an API key, checked before the job was made (the user's being
    # active is checked here all the same, in the same statement).
    token_version: int | None
    wanted: Wanted
    # An API key's principal (its role and teams); None: the token's user's own rights.
    key_principal: Principal | None = None


class Opener:
    """The work of a batch of `OpenJob`s (`app.core.batching.Work`)."""

    async def __call__(
        self, session: AsyncSession, jobs: Sequence[OpenJob], now: datetime
    ) -> list[Any]:
        users = await user_queries.active_by_id(session, {job.user_id for job in jobs})
        outcomes: list[Any] = [Unauthorized("Invalid or expired token")] * len(jobs)
        asked: list[int] = []
        for n, job in enumerate(jobs):
            user = users.get(job.user_id)
            if user is not None and job.token_version in (None, user.token_version):
                job.wanted.actor, job.wanted.request_id = Actor.of(user), job.request_id
                job.wanted.principal = (
                    Principal.of(user)
                    if job.key_principal is None
                    else replace(job.key_principal, user=user)
                )
                asked.append(n)
        answers = await open_wanted(session, [jobs[n].wanted for n in asked], now=now)
        for n, answer in zip(asked, answers, strict=True):
            outcomes[n] = answer
        return outcomes

    def rolled_back(self, session: AsyncSession, jobs: Sequence[OpenJob]) -> None:
        """Nothing noted on the jobs outlives a transaction."""
