"""What an incident event tells whom: the notification rows written with the change.

Who hears of an event: for a new incident, everyone whose preferences ask for new incidents; for
an assignment, the people just assigned; otherwise the incident's responders (its assignees and
everyone its escalation has paged). Never the person who made the change. Every enabled webhook
subscription for the event gets it too. The rows are written in the transaction that records the
event; the outbox (`app.notifications.outbox`) delivers them later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    CompoundSelect,
    Result,
    String,
    Table,
    literal_column,
    null,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import bulk
from app.core.actors import Actor
from app.core.db import WAKE_WORKER
from app.core.logging import acting_for, current_request_id
from app.escalation.models import EscalationEvent
from app.incidents.models import Assignment, Incident, TimelineEntry
from app.notifications import contacts, preferences, verification
from app.notifications import slack_messages as slack
from app.notifications.contacts import PageRule
from app.notifications.models import (
    ACTION_KEY,
    Notification,
    NotificationPreference,
    WebhookSubscription,
    notification_row,
)
from app.notifications.preferences import Person, Preference
from app.notifications.render import HEADLINES
from app.services.models import Service


def incident_summary(incident: Mapping[str, Any], service_name: str | None) -> dict[str, Any]:
    """What every message and webhook says about an incident."""
    return {
        "id": incident["id"],
        "title": incident["title"],
        "status": incident["status"],
        "severity": incident["severity"],
        "service_id": incident["service_id"],
        "service_name": service_name,
        "labels": incident["labels"],
        "escalation_level": incident["escalation_level"],
    }


def webhook_payload(
    *,
    cause: str,
    event: str,
    incident: dict[str, Any],
    actor: Actor | None,
    data: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """The JSON body of every outgoing webhook (documented in docs/api.md and OpenAPI)."""
    return {
        "id": cause,
        "event": f"incident.{event}",
        "created_at": now.isoformat(),
        "incident": incident,
        "actor": None if actor is None
        else {"type": actor.type, "id": actor.id, "name": actor.name},
        "data": data,
    }  # fmt: skip


def _subject(event: str, incident: Mapping[str, Any]) -> str:
    headline = HEADLINES.get(event, event)
    return f"[{incident['severity'].upper()}] #{incident['id']} {headline}: {incident['title']}"


def rows_for(
    *,
    cause: str,
    event: str,
    incident: dict[str, Any],
    people: Mapping[int, tuple[Person, list[Preference]]],
    user_ids: Sequence[int],
    subscriptions: Sequence[Subscription],
    actor: Actor | None,
    data: dict[str, Any],
    now: datetime,
    escalation_event_id: int | None = None,
    extra: dict[str, Any] | None = None,
    rules: Mapping[int, Sequence[PageRule]] | None = None,
    team_id: int | None = None,
) -> tuple[list[dict[str, Any]], list[int]]:
    """One row per user and channel that wants this event, and per subscription that wants it;
    for a page (`escalated`), a user with notification rules (`rules`) gets one row per rule
    instead, due after its delay (`contacts.page_rows`).

    A row to an email address or number that is not verified is written as failed (`last_error`
    says why) and sends nothing. Answers the rows and the users reached (those with at least one
    row that will be sent). `incident` is a summary.
    """
    rows: list[dict[str, Any]] = []
    reached: list[int] = []
    subject = _subject(event, incident)
    for user_id in dict.fromkeys(user_ids):
        if user_id not in people:
            continue
        person, preferences = people[user_id]
        message = {
            "event": event, "incident": incident, "actor": actor.name if actor else None,
            "recipient": person.full_name, **(extra or {}),
        }  # fmt: skip
        if event == "escalated" and rules and user_id in rules:
            paged, will_send = contacts.page_rows(
                cause=cause, user_id=user_id, rules=rules[user_id],
                severity=incident["severity"], incident_id=incident["id"], subject=subject,
                payload=message, now=now, escalation_event_id=escalation_event_id,
            )  # fmt: skip
            rows += paged
            if will_send:
                reached.append(user_id)
            continue
        chosen = [p for p in preferences if p.wants(event, incident["severity"])]
        if any(p.verified for p in chosen):
            reached.append(user_id)
        for preference in chosen:
            if preference.channel == "webhook":  # the documented webhook body, for people too
                payload = webhook_payload(
                    cause=f"{cause}:user:{user_id}", event=event, incident=incident, actor=actor,
                    data=data, now=now,
                )  # fmt: skip
            else:
                payload = message
            row = notification_row(
                key=f"{cause}:user:{user_id}:{preference.channel}", incident_id=incident["id"],
                event=event, channel=preference.channel,
                address=preference.effective_address or "", subject=subject, payload=payload,
                now=now, user_id=user_id, escalation_event_id=escalation_event_id,
            )  # fmt: skip
            # Not sent to an address nobody proved is theirs: recorded as failed, saying why.
            rows.append(row if preference.verified else verification.unverified_row(row))
    for subscription in subscriptions:
        if not subscription.hears_of(event, team_id):
            continue
        body = webhook_payload(
            cause=cause, event=event, incident=incident, actor=actor, data=data, now=now
        )
        rows.append(
            notification_row(
                key=f"{cause}:webhook:{subscription.id}", incident_id=incident["id"], event=event,
                channel="webhook", address=subscription.url, subject=subject, payload=body,
                now=now, webhook_id=subscription.id, escalation_event_id=escalation_event_id,
            )
        )  # fmt: skip
    return rows, reached


def action_webhook_row(
    *,
    incident: dict[str, Any],
    event: Mapping[str, Any],
    url: str,
    index: int,
    now: datetime,
) -> dict[str, Any]:
    """The JSON POST of a policy step's `webhook` action (signed with WEBHOOK_SIGNING_SECRET)."""
    cause = f"escalation:{event['id']}"
    data = {"policy_id": event["policy_id"], "step": event["step"], "cycle": event["cycle"]}
    payload = webhook_payload(
        cause=f"{cause}:action:{index}", event="escalated", incident=incident, actor=None,
        data=data, now=now,
    )  # fmt: skip
    return notification_row(
        key=f"{cause}{ACTION_KEY}{index}", incident_id=incident["id"], event="escalated",
        channel="webhook", address=url, subject=_subject("escalated", incident),
        payload=payload, now=now, escalation_event_id=event["id"],
    )  # fmt: skip


def action_teams_row(
    *,
    incident: dict[str, Any],
    event: Mapping[str, Any],
    url: str,
    index: int,
    now: datetime,
) -> dict[str, Any]:
    """The Adaptive Card of a policy step's `teams` action (a Teams Workflows webhook): made
    from the same payload as a personal `teams` preference's message when it is sent."""
    cause = f"escalation:{event['id']}"
    payload = {
        "event": "escalated", "incident": incident, "actor": None, "recipient": None,
        "step": event["step"], "cycle": event["cycle"],
    }  # fmt: skip
    return notification_row(
        key=f"{cause}{ACTION_KEY}{index}", incident_id=incident["id"], event="escalated",
        channel="teams", address=url, subject=_subject("escalated", incident), payload=payload,
        now=now, escalation_event_id=event["id"],
    )  # fmt: skip


# A policy step's actions that post to a URL, each made into an outbox row.
ACTION_ROWS = {"webhook": action_webhook_row, "teams": action_teams_row}


@dataclass(frozen=True)
class Subscription:
    id: int
    url: str
    events: list[str]
    # A team's subscription hears only of the incidents of its team's services; None: of all.
    team_id: int | None = None

    def hears_of(self, event: str, team_id: int | None) -> bool:
        return event in self.events and (self.team_id is None or self.team_id == team_id)


class ServiceNamed(NamedTuple):
    name: str
    team_id: int | None


async def subscriptions(session: AsyncSession) -> list[Subscription]:
    """The enabled webhook subscriptions (a short list, read once per batch)."""
    rows = await session.execute(
        select(
            WebhookSubscription.id, WebhookSubscription.url, WebhookSubscription.events,
            WebhookSubscription.team_id,
        ).where(WebhookSubscription.enabled.is_(True))
    )  # fmt: skip
    return [Subscription(r.id, r.url, list(r.events), r.team_id) for r in rows]


async def service_names(
    session: AsyncSession, ids: Iterable[int | None]
) -> dict[int, ServiceNamed]:
    """The names and teams of services `ids`."""
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    rows = await session.execute(
        select(Service.id, Service.name, Service.team_id).where(Service.id.in_(wanted))
    )
    return {r.id: ServiceNamed(r.name, r.team_id) for r in rows}


def _name(services: Mapping[int, ServiceNamed], service_id: int | None) -> str | None:
    named = services.get(service_id) if service_id is not None else None
    return named.name if named is not None else None


def _team(services: Mapping[int, ServiceNamed], service_id: int | None) -> int | None:
    named = services.get(service_id) if service_id is not None else None
    return named.team_id if named is not None else None


async def announce(
    session: AsyncSession,
    *,
    incident: Incident,
    entry: TimelineEntry,
    event: str,
    actor: Actor,
    now: datetime,
    user_ids: Iterable[int] | None = None,
    detail: str | None = None,
) -> None:
    """Write the notifications of an incident event, in the transaction that records it.

    Who hears of it: for `triggered`, everyone whose preferences ask for new incidents; for
    `assigned`, the people just assigned (`user_ids`); otherwise the incident's responders (its
    assignees and everyone its escalation has paged). Never the person who made the change.
    Every enabled webhook subscription for the event gets it too.
    """
    if entry.id is None:
        await session.flush()
    hooks = None
    if user_ids is None and event == "triggered":
        user_ids, hooks, _ = await _asked_for_new_incidents(session)
    elif user_ids is None:
        user_ids = await _responders(session, incident)
    incident_row = {c: getattr(incident, c) for c in SUMMARY_COLUMNS}
    await _write(
        session, event=event, told=[Told(incident_row, entry.id, dict(entry.data), actor)],
        user_ids=list(user_ids), now=now, detail=detail, hooks=hooks,
    )  # fmt: skip


async def update_slack_messages(
    session: AsyncSession, *, incident: Incident, entry: TimelineEntry, now: datetime
) -> None:
    """After a change of the incident (recorded by `entry`): an update of each Slack message kept
    about it, showing the change and who made it (rendered when sent, from the state then)."""
    if await slack.update_messages(
        session, incident_id=incident.id, cause=f"timeline:{entry.id}", now=now
    ):
        session.info[WAKE_WORKER] = True


@dataclass(frozen=True)
class Told:
    """One incident event to announce: the incident (SUMMARY_COLUMNS at least), the timeline
    entry recording the event, and who caused it."""

    incident: Mapping[str, Any]
    entry_id: int
    data: dict[str, Any]
    actor: Actor
    request_id: str | None = None  # of the request that caused it, when not the current one


async def announce_opened(session: AsyncSession, told: Sequence[Told], *, now: datetime) -> None:
    """`announce` of `triggered` for many new incidents at once (the ingestion of a batch)."""
    if told:
        audience, hooks, slack_channels = await _asked_for_new_incidents(session)
        await _write(session, event="triggered", told=told, user_ids=audience, now=now, hooks=hooks)
        await _post_to_service_channels(session, told, slack_channels, now=now)


async def _post_to_service_channels(
    session: AsyncSession, told: Sequence[Told], slack_channels: Mapping[int, str], *,
    now: datetime,
) -> None:  # fmt: skip
    """A Slack message in the channel of each new incident's service, for those that name one
    (`slack_channels`: service id → channel, read with the audience)."""
    channels = {
        t.incident["service_id"]: slack_channels[t.incident["service_id"]]
        for t in told
        if t.incident["service_id"] in slack_channels
    }
    if not channels:
        return
    names = await service_names(session, channels)
    rows = []
    for one in told:
        channel = channels.get(one.incident["service_id"])
        if channel is None:
            continue
        summary = incident_summary(one.incident, _name(names, one.incident["service_id"]))
        with acting_for(one.request_id or current_request_id()):
            rows.append(
                slack.post_row(
                    key=f"timeline:{one.entry_id}:slack:{channel}", incident=summary,
                    channel=channel, event="triggered", subject=_subject("triggered", summary),
                    now=now,
                )
            )  # fmt: skip
    await bulk.insert_rows(session, cast(Table, Notification.__table__), rows)
    session.info[WAKE_WORKER] = True


@cache
def _new_incident_audience() -> CompoundSelect:
    """The statement of `_asked_for_new_incidents` (it takes no parameters: built once)."""
    people = select(
        literal_column("'person'", String()).label("kind"),
        NotificationPreference.user_id.label("id"),
        NotificationPreference.events.label("events"),
        null().cast(String()).label("url"),
        null().cast(WebhookSubscription.team_id.type).label("team_id"),
    ).where(NotificationPreference.enabled.is_(True))  # fmt: skip
    hooks = select(
        literal_column("'hook'", String()), WebhookSubscription.id, WebhookSubscription.events,
        WebhookSubscription.url, WebhookSubscription.team_id,
    ).where(WebhookSubscription.enabled.is_(True))  # fmt: skip
    channels = select(
        literal_column("'slack'", String()), Service.id,
        null().cast(NotificationPreference.events.type), Service.slack_channel,
        null().cast(WebhookSubscription.team_id.type),
    ).where(Service.slack_channel.is_not(None))  # fmt: skip
    return union_all(people, hooks, channels)


async def _asked_for_new_incidents(
    session: AsyncSession,
) -> tuple[list[int], list[Subscription], dict[int, str]]:
    """Who asked to hear of new incidents (only stored preferences can: the defaults do not), the
    enabled webhook subscriptions (`subscriptions`) and the services that post new incidents to a
    Slack channel (service id → channel), in one statement."""
    asked: set[int] = set()
    subscribed: list[Subscription] = []
    slack_channels: dict[int, str] = {}
    rows: Result[Any] = await session.execute(_new_incident_audience())
    for row in rows:
        if row.kind == "hook":
            subscribed.append(Subscription(row.id, row.url, list(row.events), row.team_id))
        elif row.kind == "slack":
            slack_channels[row.id] = row.url
        elif "triggered" in row.events:
            asked.add(row.id)
    return sorted(asked), sorted(subscribed, key=lambda hook: hook.id), slack_channels


async def _write(
    session: AsyncSession,
    *,
    event: str,
    told: Sequence[Told],
    user_ids: list[int],
    now: datetime,
    detail: str | None = None,
    hooks: list[Subscription] | None = None,  # read already (`_asked_for_new_incidents`)
) -> None:
    people = await preferences.for_users(session, user_ids)
    if hooks is None:
        hooks = await subscriptions(session)
    if not people and not any(event in s.events for s in hooks):
        return
    names = await service_names(session, [t.incident["service_id"] for t in told])
    rows: list[dict[str, Any]] = []
    for one in told:
        service_id = one.incident["service_id"]
        summary = incident_summary(one.incident, _name(names, service_id))
        note = detail or one.data.get("note")
        with acting_for(one.request_id or current_request_id()):
            rows += rows_for(
                cause=f"timeline:{one.entry_id}", event=event, incident=summary, people=people,
                user_ids=[uid for uid in user_ids if uid != one.actor.user_id],
                subscriptions=hooks, actor=one.actor, data=one.data, now=now,
                extra={"detail": note} if note else None, team_id=_team(names, service_id),
            )[0]  # fmt: skip
    await bulk.insert_rows(session, cast(Table, Notification.__table__), rows)
    if rows:
        session.info[WAKE_WORKER] = True


SUMMARY_COLUMNS = ("id", "title", "status", "severity", "service_id", "labels", "escalation_level")


async def _responders(session: AsyncSession, incident: Incident) -> list[int]:
    """The incident's assignees and everyone its escalation has paged."""
    assignees = set(
        await session.scalars(
            select(Assignment.user_id).where(Assignment.incident_id == incident.id)
        )
    )
    paged: set[int] = set()
    for notified in await session.scalars(
        select(EscalationEvent.notified_user_ids).where(
            EscalationEvent.incident_id == incident.id,
            EscalationEvent.status == "executed",
        )
    ):
        paged.update(notified)
    return sorted(assignees | paged)


@dataclass(frozen=True)
class StepPages:
    """Writes the notifications of escalation steps (the `PageWriter` of app.escalation.firing):
    pages to the people a step notifies, the event to the subscriptions that want it, and the
    step's webhook actions. Holds what it needs for a whole batch of steps, read once."""

    people: Mapping[int, tuple[Person, list[Preference]]]  # the active users among the targets
    hooks: Sequence[Subscription]
    services: Mapping[int, ServiceNamed]
    rules: Mapping[int, Sequence[PageRule]]  # of those people who have notification rules
    # The Slack messages kept about the incidents, updated when a step fires.
    messages: Mapping[int, list[tuple[int, str, str]]] = field(default_factory=dict)

    def __call__(
        self, *, event: Mapping[str, Any], incident: Mapping[str, Any], severity: str,
        user_ids: list[int], to_subscriptions: bool, now: datetime,
    ) -> tuple[list[dict[str, Any]], list[int]]:  # fmt: skip
        summary = incident_summary(
            {**incident, "severity": severity, "escalation_level": event["step"]},
            _name(self.services, incident["service_id"]),
        )
        position = {"policy_id": event["policy_id"], "step": event["step"], "cycle": event["cycle"]}
        pages, notified = rows_for(
            cause=f"escalation:{event['id']}", event="escalated", incident=summary,
            people=self.people, user_ids=user_ids,
            subscriptions=self.hooks if to_subscriptions else [], actor=None, data=position,
            now=now, escalation_event_id=event["id"],
            extra={"step": event["step"], "cycle": event["cycle"]}, rules=self.rules,
            team_id=_team(self.services, incident["service_id"]),
        )  # fmt: skip
        pages += [
            ACTION_ROWS[action["type"]](
                incident=summary, event=event, url=action["url"], index=index, now=now
            )
            for index, action in enumerate(event["actions"])
            if action["type"] in ACTION_ROWS
        ]
        cause = f"escalation:{event['id']}"
        pages += [
            slack.post_row(
                key=f"{cause}{ACTION_KEY}{index}", incident=summary, channel=action["channel"],
                event="escalated", subject=_subject("escalated", summary), now=now,
                escalation_event_id=event["id"],
            )
            for index, action in enumerate(event["actions"])
            if action["type"] == "slack"
        ]  # fmt: skip
        pages += slack.update_rows(
            self.messages.get(incident["id"], []), incident_id=incident["id"], cause=cause, now=now
        )
        return pages, notified


async def step_pages(
    session: AsyncSession,
    *,
    user_ids: Iterable[int],
    service_ids: Iterable[int | None],
    incident_ids: Iterable[int] = (),
) -> StepPages:
    """What writing the pages of a batch of steps needs: a handful of reads for any number of
    steps."""
    people = await preferences.for_users(session, user_ids)
    return StepPages(
        people=people,
        hooks=await subscriptions(session),
        services=await service_names(session, service_ids),
        rules=await contacts.for_paging(
            session, {uid: person.email for uid, (person, _) in people.items()}
        ),
        messages=await slack.messages_of(session, incident_ids),
    )
