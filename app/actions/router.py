"""`/v1/actions/{token}`: the one-click Acknowledge and Resolve links of page emails.

The token in the URL is the authority (`app.notifications.actions`): whoever opens the link acts
as the page's recipient, without signing in. `GET` only shows what the link would do, with a
button: mail scanners and link previews fetch links, and must not acknowledge anything. The
button POSTs to the same URL, which acts through the incident flows (`via: email`). Every answer
is a small HTML page; a link that cannot act says why, with a 4xx status, and changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from jinja2 import Environment, FileSystemLoader
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import HTMLResponse

from app.auth import policy as authz
from app.core.actors import Actor
from app.core.config import Settings
from app.core.deps import ClockDep, SessionDep, SettingsDep
from app.flows import incidents as incident_flow
from app.incidents import service as incident_service
from app.incidents.models import Incident
from app.notifications import actions
from app.notifications.actions import Link, Refusal, Usable

router = APIRouter(prefix="/actions", tags=["notifications"])

_pages = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)

# The token is read from the path by hand (`_token`) rather than declared as a parameter: no
# value of it is a validation error (a bad one gets the 404 page), so no 422 is documented.
TOKEN_PARAMETER = {
    "parameters": [
        {"name": "token", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "The signed token of an Acknowledge or Resolve link in a page email"}
    ]
}  # fmt: skip


def _token(request: Request) -> str:
    token: str = request.path_params["token"]
    return token


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {}}}


RESPONSES: dict[int | str, dict[str, Any]] = {
    403: _html("The link's user is deactivated: its links no longer act"),
    404: _html("Not a valid link (garbled, changed, or not made by this service), or its "
               "incident no longer exists"),
    409: _html("The link has been used already, or its incident is acknowledged already (by "
               "whom) or snoozed: nothing changed"),
    410: _html("The link has expired (24 hours after its page), or its incident has been "
               "resolved since the page: nothing changed"),
}  # fmt: skip


def _responses(done: str) -> dict[int | str, dict[str, Any]]:
    return {200: _html(done), **RESPONSES}


INVALID = Refusal(
    404, "This link is not valid",
    "It may have been cut short or changed on its way (some mail programs break long links). "
    "Nothing was changed. Open the incident in the console instead.",
)  # fmt: skip
USED_MEANWHILE = Refusal(
    409, "This link has been used already",
    "It was used at the same moment from somewhere else; each link acts once. Nothing was "
    "changed here.",
)  # fmt: skip

NOT_ALLOWED = Refusal(
    403, "You may not act on this incident", "Nothing was changed. Open it in the console."
)


def _console(settings: Settings, incident_id: int) -> str:
    return f"{settings.public_base_url}/ui/incidents/{incident_id}"


def _page(status: int = 200, **values: Any) -> HTMLResponse:
    values.setdefault("message", None)
    for name in ("incident", "action", "button", "console_url", "failed"):
        values.setdefault(name, None)
    return HTMLResponse(_pages.get_template("action.html").render(values), status_code=status)


def _refused(settings: Settings, refusal: Refusal, link: Link | None) -> HTMLResponse:
    return _page(
        refusal.status, title=refusal.title, message=refusal.message, failed=True,
        incident_id=link.incident_id if link else None,
        console_url=_console(settings, link.incident_id) if link else None,
    )  # fmt: skip


def _summary(incident: Incident) -> dict[str, Any]:
    return {"id": incident.id, "title": incident.title, "severity": incident.severity,
            "status": incident.status}  # fmt: skip


LABELS = {"acknowledge": "Acknowledge", "resolve": "Resolve"}
DONE = {"acknowledge": "Acknowledged", "resolve": "Resolved"}


@router.get(
    "/{token}",
    response_class=HTMLResponse,
    summary="Show what a page email's action link would do (changes nothing)",
    responses=_responses("The confirmation page, its button POSTing to the same URL"),
    openapi_extra=TOKEN_PARAMETER,
)
async def show_action(
    request: Request, session: SessionDep, settings: SettingsDep, clock: ClockDep
) -> HTMLResponse:
    """The page a page email's Acknowledge or Resolve link opens: the incident (number, title,
    severity, status), the action and a button that does it. Opening it never acts (mail
    scanners and link previews fetch links); no sign-in: the signed token is the authority."""
    token = _token(request)
    link = actions.read(settings, token)
    if link is None:
        return _refused(settings, INVALID, None)
    incident = await incident_service.get(session, link.incident_id)
    checked = await actions.check(session, link, now=clock.now(), incident=incident)
    if isinstance(checked, Refusal):
        return _refused(settings, checked, link)
    verb = LABELS[link.action]
    return _page(
        title=f"{verb} incident #{link.incident_id}?",
        message=f"This link acts as {checked.user.full_name}, once.",
        incident=_summary(checked.incident), action=verb, button=f"{verb} #{link.incident_id}",
        form_action=f"{actions.PATH}{token}", incident_id=link.incident_id,
        console_url=_console(settings, link.incident_id),
    )  # fmt: skip


@router.post(
    "/{token}",
    response_class=HTMLResponse,
    summary="Do what a page email's action link says (acknowledge or resolve), once",
    responses=_responses("Done: the result page, with a link to the incident in the console"),
    openapi_extra=TOKEN_PARAMETER,
)
async def do_action(
    request: Request, session: SessionDep, settings: SettingsDep, clock: ClockDep
) -> HTMLResponse:
    """Acknowledge or resolve the link's incident as the link's user (the timeline entry
    records `via: email`), and spend the link: each acts once. No sign-in and no CSRF token:
    the signed, single-use token in the URL is the authority (see docs/security.md)."""
    token = _token(request)
    link = actions.read(settings, token)
    if link is None:
        return _refused(settings, INVALID, None)
    now = clock.now()
    incident = await incident_service.get(session, link.incident_id, lock=True)
    checked = await actions.check(session, link, now=now, incident=incident)
    if isinstance(checked, Refusal):
        return _refused(settings, checked, link)
    if not authz.may_answer_page(checked.user):
        return _refused(settings, NOT_ALLOWED, link)
    if not await actions.spend(session, link, now=now):
        return _refused(settings, USED_MEANWHILE, link)
    done = await _act(session, checked, now=now)
    return _page(
        title=f"{DONE[link.action]} #{done.id}: {done.title}",
        message=f"{DONE[link.action]} by {checked.user.full_name}.",
        incident=_summary(done), incident_id=done.id, console_url=_console(settings, done.id),
    )  # fmt: skip


async def _act(session: AsyncSession, usable: Usable, *, now: datetime) -> Incident:
    actor = Actor.of(usable.user, via="email")
    if usable.link.action == "acknowledge":
        return await incident_flow.acknowledge(
            session, incident=usable.incident, actor=actor, now=now
        )
    return await incident_flow.resolve(session, incident=usable.incident, actor=actor, now=now)
