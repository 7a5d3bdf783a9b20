"""The console's incident pages: the list, one incident, and what a responder does to it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.auth import policy as authz
from app.auth.policy import Action, Principal
from app.core.actors import Actor
from app.core.deps import ClockDep, SessionDep
from app.core.errors import DomainError, NotFound
from app.core.pagination import InvalidCursor
from app.core.schemas import MAX_ID
from app.escalation.models import EscalationEvent
from app.flows import incidents as incident_flow
from app.incidents import service as incident_service
from app.incidents.models import Comment, Incident, Severity, Status, TimelineEntry
from app.incidents.schemas import IncidentCreate
from app.incidents.service import IncidentFilter
from app.incidents.timeline import EntryType
from app.notifications.models import Notification
from app.services.models import Service
from app.teams.models import Team
from app.ui.auth import ActorDep, Browser, ViewerDep, principal_of
from app.ui.forms import problems, refusal
from app.ui.render import in_zone, page, zone_of
from app.users.models import User

router = APIRouter()

OPEN = [Status.triggered, Status.acknowledged, Status.snoozed]
STATUS_CHOICES = ["open", "triggered", "acknowledged", "snoozed", "resolved", "all"]
SNOOZE_CHOICES = [(15, "15 minutes"), (60, "1 hour"), (240, "4 hours"), (1440, "24 hours")]
PAGE_SIZE = 50
SERVICE_ID = re.compile(r"[0-9]{1,19}")
# What each timeline entry type reads as on the page (from the list of types itself).
ENTRY_LABELS = {kind.value: kind.label for kind in EntryType}
# How a person acted when not through the console or the API (`Actor.via`).
VIA_LABELS = {"sms": "text reply", "voice": "phone call", "email": "email link", "slack": "Slack"}


def _status_filter(status: str) -> list[Status]:
    if status == "open":
        return OPEN
    if status == "all":
        return []
    return [Status(status)]


async def _counts(session: AsyncSession, principal: Principal) -> dict[str, int]:
    """How many incidents the user may see are open, per status. Resolved ones are not counted:
    they only grow, and counting them all on every live refresh would read the whole table."""
    query = select(Incident.status, func.count()).where(
        Incident.status.in_([s.value for s in OPEN])
    )
    seen = authz.visible_service(principal, Incident.service_id)
    if seen is not None:
        query = query.where(seen)
    rows = await session.execute(query.group_by(Incident.status))
    counts = {s.value: 0 for s in OPEN}
    counts.update({status: count for status, count in rows.all()})
    counts["open"] = sum(counts.values())
    return counts


async def services_menu(session: AsyncSession, browser: Browser) -> list[tuple[int, str]]:
    """The services the user may see, by name (the first 500)."""
    principal = principal_of(browser)
    query = select(Service.id, Service.name).order_by(Service.name).limit(500)
    if not principal.is_admin:
        query = query.where(authz.visible(principal, Service.team_id))
    rows = await session.execute(query)
    return [(service_id, name) for service_id, name in rows.all()]


async def teams_menu(session: AsyncSession, browser: Browser) -> list[tuple[int, str]]:
    """The teams the user may see, by name (the first 500)."""
    principal = principal_of(browser)
    query = select(Team.id, Team.name).order_by(Team.name_key).limit(500)
    if not principal.is_admin:
        query = query.where(authz.visible(principal, Team.id))
    rows = await session.execute(query)
    return [(team_id, name) for team_id, name in rows.all()]


@router.get("/incidents", response_class=HTMLResponse)
async def incident_list(
    request: Request,
    session: SessionDep,
    browser: ViewerDep,
    status: Annotated[str, Query(pattern="^(" + "|".join(STATUS_CHOICES) + ")$")] = "open",
    severity: Annotated[str, Query(pattern="^(|critical|high|medium|low|info)$")] = "",
    service: Annotated[str, Query(pattern=r"^[0-9]{0,18}$")] = "",
    mine: Annotated[str, Query(pattern="^(|1)$")] = "",
    team: Annotated[str, Query(pattern=r"^(|mine|[0-9]{1,18})$")] = "",
    q: Annotated[str, Query(max_length=200)] = "",
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    service_id = int(service) if service and 0 < int(service) <= MAX_ID else None
    principal = principal_of(browser)
    team_ids: Any = None
    if team == "mine":
        team_ids = authz.member_team_ids(principal)
    elif team and 0 < int(team) <= MAX_ID:
        team_ids = [int(team)]
    filters = IncidentFilter(
        statuses=_status_filter(status),
        severities=[Severity(severity)] if severity else [],
        service_id=service_id,
        assignee_id=browser.user_id if mine else None,
        q=q.strip() or None,
        team_ids=team_ids,
        visible=authz.visible_service(principal, Incident.service_id),
    )
    try:
        items, next_cursor = await incident_service.list_page(
            session, filters=filters, sort="-created_at", limit=PAGE_SIZE, cursor=cursor
        )
    except InvalidCursor:
        items, next_cursor = await incident_service.list_page(
            session, filters=filters, sort="-created_at", limit=PAGE_SIZE, cursor=None
        )
    services = await services_menu(session, browser)
    query = {
        "status": status, "severity": severity, "service": service, "mine": mine, "team": team,
        "q": q,
    }  # fmt: skip
    return page(
        request,
        "incidents.html",
        browser=browser,
        incidents=items,
        next_cursor=next_cursor,
        counts=await _counts(session, principal),
        services=services,
        teams=await teams_menu(session, browser),
        service_names=dict(services),
        filters=query,
        status_choices=STATUS_CHOICES,
        severities=[s.value for s in Severity],
        first_page=cursor is None,
    )


async def _incident_or_404(
    session: AsyncSession, incident_id: int, *, lock: bool, browser: Browser
) -> Incident:
    """The incident, when the browser's user may see it."""
    incident = (
        await incident_service.get(session, incident_id, lock=lock)
        if 0 < incident_id <= MAX_ID
        else None
    )
    missing = f"Incident {incident_id} not found"
    if incident is None:
        raise NotFound(missing)
    await authz.require_for_service(
        session, principal_of(browser), Action.read, incident.service_id, missing=missing
    )
    return incident


def describe(entry: TimelineEntry, users: dict[int, str], zone: tzinfo = UTC) -> str:
    """One line saying what a timeline entry's data holds, for people."""
    data: dict[str, Any] = entry.data or {}
    parts: list[str] = []
    if entry.type == "created" and data.get("title"):
        parts.append(f"“{data['title']}”")
    if "from" in data and entry.type not in ("updated",):
        parts.append(f"was {data['from']}")
    if entry.type == "snoozed" and data.get("until"):
        try:
            until = datetime.fromisoformat(str(data["until"]))
        except ValueError:
            until = None
        if until is not None and until.tzinfo is not None:
            parts.append(f"until {in_zone(until, zone)}")
    if "step" in data:
        parts.append(
            f"step {data['step']}" + (f", cycle {data['cycle']}" if data.get("cycle") else "")
        )
    if data.get("user_ids") or data.get("notified_user_ids"):
        ids = data.get("notified_user_ids") or data.get("user_ids") or []
        names = [users.get(int(i), f"user {i}") for i in ids if isinstance(i, int)]
        if names:
            parts.append("paged " + ", ".join(names))
    if entry.type == "assigned":
        for key, label in (("added", "added"), ("removed", "removed")):
            people = data.get(key) or []
            names = [
                users.get(int(p.get("user_id", 0)), f"user {p.get('user_id')}")
                for p in people
                if isinstance(p, dict)
            ]
            if names:
                parts.append(f"{label} " + ", ".join(names))
    if entry.type == "updated" and isinstance(data.get("changes"), dict):
        for field, change in data["changes"].items():
            if isinstance(change, dict):
                parts.append(f"{field}: {change.get('before')} → {change.get('after')}")
    for key in ("channel", "reason", "error", "note", "detail"):
        if data.get(key):
            parts.append(f"{key}: {data[key]}")
    if entry.type == "alert_received" and data.get("count"):
        parts.append(f"{data['count']} alerts")
    return "; ".join(str(p) for p in parts)


async def _detail_context(
    session: AsyncSession, incident: Incident, browser: Browser
) -> dict[str, Any]:
    timeline = list(
        (
            await session.scalars(
                select(TimelineEntry)
                .where(TimelineEntry.incident_id == incident.id)
                .order_by(TimelineEntry.id.desc())
                .limit(500)
            )
        ).all()
    )
    comments = list(
        (
            await session.scalars(
                select(Comment).where(Comment.incident_id == incident.id).order_by(Comment.id)
            )
        ).all()
    )
    events = list(
        (
            await session.scalars(
                select(EscalationEvent)
                .where(EscalationEvent.incident_id == incident.id)
                .order_by(EscalationEvent.id)
                .limit(200)
            )
        ).all()
    )
    # As the API's delivery log: admins see every delivery, a user their own.
    deliveries = select(Notification).where(Notification.incident_id == incident.id)
    if not browser.is_admin:
        deliveries = deliveries.where(Notification.user_id == browser.user_id)
    notifications = list(
        (await session.scalars(deliveries.order_by(Notification.id).limit(500))).all()
    )
    people = (
        await session.execute(
            select(User.id, User.full_name, User.is_active).order_by(User.full_name).limit(1000)
        )
    ).all()
    users = {user_id: name for user_id, name, _ in people}
    by_event: dict[int, list[Notification]] = {}
    for notification in notifications:
        if notification.escalation_event_id is not None:
            by_event.setdefault(notification.escalation_event_id, []).append(notification)
    service = await session.get(Service, incident.service_id) if incident.service_id else None
    principal = principal_of(browser)
    scope = await authz.scope_of_service(session, principal, incident.service_id)
    return {
        "incident": incident,
        # The action buttons and the comment box, for those the policy lets act.
        "may_respond": authz.allowed(principal, Action.respond, scope),
        "service": service,
        "timeline": [(entry, describe(entry, users, zone_of(browser))) for entry in timeline],
        "entry_labels": ENTRY_LABELS,
        "via_labels": VIA_LABELS,
        "comments": comments,
        "events": [(event, by_event.get(event.id, [])) for event in events],
        "other_notifications": [n for n in notifications if n.escalation_event_id is None],
        "users": users,
        "assignable": [(user_id, name) for user_id, name, active in people if active],
        "snooze_choices": SNOOZE_CHOICES,
        "labels_json": json.dumps(incident.labels or {}, ensure_ascii=False),
    }


def _new_incident_page(
    request: Request,
    browser: Browser,
    services: list[tuple[int, str]],
    *,
    draft: dict[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    return page(
        request,
        "incident_new.html",
        browser=browser,
        status_code=status,
        services=services,
        severities=[s.value for s in Severity],
        draft=draft or {"title": "", "severity": "medium", "service": "", "description": ""},
        error=error,
    )


@router.get("/incidents/new", response_class=HTMLResponse)
async def new_incident_form(request: Request, session: SessionDep, browser: ViewerDep) -> Response:
    """A form to declare an incident by hand, as `POST /v1/incidents/` opens one."""
    return _new_incident_page(request, browser, await services_menu(session, browser))


@router.post("/incidents/new", response_class=HTMLResponse)
async def declare_incident(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    browser: ActorDep,
    title: Annotated[str, Form(max_length=20_000)] = "",
    severity: Annotated[str, Form(max_length=20)] = "medium",
    service: Annotated[str, Form(max_length=20)] = "",
    description: Annotated[str, Form(max_length=40_000)] = "",
) -> Response:
    """Open the incident through the API's schema and service (policy choice, timeline, first
    escalation step, notifications), then show it; a refusal shows the form again, as typed."""
    draft = {"title": title, "severity": severity, "service": service, "description": description}
    try:
        body = IncidentCreate.model_validate(
            {
                "title": title,
                "severity": severity,
                # Plain ASCII digits only ("²".isdigit() is true, and int() refuses it).
                "service_id": int(service) if SERVICE_ID.fullmatch(service) else service or None,
                "description": description,
            }
        )
        incident, _ = await incident_flow.create(
            session,
            title=body.title,
            description=body.description,
            severity=body.severity,
            service_id=body.service_id,
            actor=Actor.of(browser.user),
            now=clock.now(),
            principal=principal_of(browser),
        )
    except ValidationError as exc:
        return _new_incident_page(
            request, browser, await services_menu(session, browser), draft=draft,
            error=problems(exc), status=422,
        )  # fmt: skip
    except DomainError as exc:
        await session.rollback()
        return _new_incident_page(
            request, browser, await services_menu(session, browser), draft=draft,
            error=refusal(exc), status=exc.status_code,
        )  # fmt: skip
    return RedirectResponse(f"/ui/incidents/{incident.id}", status_code=303)


@router.get("/incidents/{incident_id}", response_class=HTMLResponse)
async def incident_page(
    incident_id: int, request: Request, session: SessionDep, browser: ViewerDep
) -> Response:
    incident = await _incident_or_404(session, incident_id, lock=False, browser=browser)
    context = await _detail_context(session, incident, browser)
    return page(request, "incident.html", browser=browser, **context)


async def _act(
    request: Request,
    session: AsyncSession,
    browser: Browser,
    incident_id: int,
    action: str,
    form: dict[str, str],
    now_clock: ClockDep,
) -> Response:
    """Apply one action; on a refusal (say, resolving a resolved incident) show the page again
    with the reason, nothing changed."""
    incident = await _incident_or_404(session, incident_id, lock=True, browser=browser)
    actor = Actor.of(browser.user)
    now = now_clock.now()
    note = (form.get("note") or "").strip()[:2000] or None
    try:
        await authz.require_for_service(
            session, principal_of(browser), Action.respond, incident.service_id,
            missing=f"Incident {incident_id} not found",
        )  # fmt: skip
        if action == "acknowledge":
            await incident_flow.acknowledge(
                session, incident=incident, actor=actor, now=now, note=note
            )
        elif action == "resolve":
            await incident_flow.resolve(session, incident=incident, actor=actor, now=now, note=note)
        elif action == "reopen":
            await incident_flow.reopen(session, incident=incident, actor=actor, now=now, note=note)
        elif action == "unsnooze":
            await incident_flow.unsnooze(session, incident=incident, actor=actor, now=now)
        elif action == "snooze":
            minutes = _choice(form.get("minutes"), {m for m, _ in SNOOZE_CHOICES})
            await incident_flow.snooze(
                session,
                incident=incident,
                until=now + timedelta(minutes=minutes),
                actor=actor,
                now=now,
                note=note,
            )
        elif action == "assign":
            user_id = _choice(form.get("user_id"), None)
            await incident_flow.assign(
                session,
                incident=incident,
                actor=actor,
                now=now,
                user_ids=None,
                add_user_id=user_id,
                role="responder",
            )
        elif action == "comment":
            content = (form.get("content") or "").strip()
            if not content:
                raise DomainError("A comment needs some text")
            if len(content) > 10_000:
                raise DomainError("A comment is at most 10,000 characters")
            await incident_flow.comment(
                session, incident=incident, author=browser.user, content=content, now=now
            )
    except DomainError as exc:
        await session.rollback()
        incident = await _incident_or_404(session, incident_id, lock=False, browser=browser)
        context = await _detail_context(session, incident, browser)
        detail = exc.detail if isinstance(exc.detail, str) else "That could not be done"
        refused = page(
            request,
            "incident.html",
            browser=browser,
            status_code=exc.status_code,
            error=detail,
            draft=form.get("content", ""),
            **context,
        )
        # htmx would otherwise put the form's POST address in the address bar (a reload then
        # asks for a page that does not exist, and live updates fetch it).
        refused.headers["HX-Push-Url"] = f"/ui/incidents/{incident_id}"
        return refused
    return RedirectResponse(f"/ui/incidents/{incident_id}", status_code=303)


def _choice(value: str | None, allowed: set[int] | None) -> int:
    try:
        number = int(value or "")
    except ValueError:
        raise DomainError("Choose one of the options") from None
    if (allowed is not None and number not in allowed) or not 0 < number <= MAX_ID:
        raise DomainError("Choose one of the options")
    return number


ACTIONS = ("acknowledge", "resolve", "reopen", "snooze", "unsnooze", "assign", "comment")


@router.post("/incidents/{incident_id}/{action}", response_class=HTMLResponse)
async def incident_action(
    incident_id: int,
    action: str,
    request: Request,
    session: SessionDep,
    browser: ActorDep,
    clock: ClockDep,
    note: Annotated[str, Form(max_length=2000)] = "",
    minutes: Annotated[str, Form(max_length=10)] = "",
    user_id: Annotated[str, Form(max_length=20)] = "",
    content: Annotated[str, Form(max_length=20_000)] = "",
) -> Response:
    if action not in ACTIONS:
        raise NotFound("No such action")
    form = {"note": note, "minutes": minutes, "user_id": user_id, "content": content}
    return await _act(request, session, browser, incident_id, action, form, clock)
