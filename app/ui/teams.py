"""The console's team pages (`/ui/teams`): the teams a user may see, one team with its members
and what it owns, and the forms that change them, the console's side of `/v1/teams`.

Every change goes through the teams service and the API's request schemas, and is allowed by the
same policy (`app.auth.policy`): the team's managers and admins configure a team and its members,
admins create and delete teams. A private team is "not found" for whoever may not see it. A
refused form shows the page again with the reason and a 4xx status, and changes nothing (the
refused change is rolled back); a change that went through redirects back to the page (POST,
redirect, GET), which says what happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from pydantic import ValidationError
from sqlalchemy import and_, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.auth import policy
from app.auth.policy import Action, Principal, Scope
from app.core.deps import ClockDep, SessionDep
from app.core.errors import DomainError, Forbidden, NotFound, Unprocessable
from app.core.schemas import MAX_ID, IdPath
from app.escalation.models import EscalationPolicy
from app.schedules.models import Schedule
from app.services.models import Service
from app.teams import service as team_service
from app.teams.models import Team, TeamMember, TeamRole
from app.teams.schemas import MemberAdd, MemberUpdate, TeamCreate, TeamUpdate
from app.ui.auth import ActorDep, AdminActorDep, Browser, ViewerDep, principal_of
from app.ui.forms import problems, refusal
from app.ui.render import page
from app.users import service as user_service
from app.users.models import User

router = APIRouter(prefix="/teams")

PAGE = "/ui/teams"
# Plenty for any real field: the schemas give the precise limits and messages.
FIELD = 30_000
# A page lists this many teams, and this many of a team's services, schedules and policies.
MAX_ROWS = 500
ROLES = [role.value for role in TeamRole]
ROLE_HINTS = {
    TeamRole.manager.value: "changes the team, its members and what it owns",
    TeamRole.responder.value: "acts on the team's incidents",
    TeamRole.observer.value: "reads",
}
FIELD_NAMES = {"is_private": "private"}
DONE = {
    "created": "Team created. Add its managers next: they change it from then on.",
    "saved": "Team saved.",
    "member-added": "Member added.",
    "role-changed": "Role changed.",
    "member-removed": "Member removed.",
    "deleted": "Team deleted.",
    "left": "You left the team.",
}


# ---- queries the pages need (read only; the changes go through the teams service) ----------------


@dataclass(frozen=True)
class TeamLine:
    team: Team
    members: int
    role: str | None  # the user's own role in it, if a member


async def team_lines(session: AsyncSession, principal: Principal, *, mine: bool) -> list[TeamLine]:
    """The teams `principal` may see (only its own with `mine`), by name, with their member
    counts and the principal's role in each: three statements."""
    query = select(Team).where(policy.visible(principal, Team.id))
    if mine:
        query = query.where(
            exists().where(
                and_(TeamMember.team_id == Team.id, TeamMember.user_id == principal.user_id)
            )
        )
    teams = list(await session.scalars(query.order_by(Team.name_key, Team.id).limit(MAX_ROWS)))
    ids = [t.id for t in teams]
    counts: dict[int, int] = {}
    if ids:
        rows = await session.execute(
            select(TeamMember.team_id, func.count())
            .where(TeamMember.team_id.in_(ids))
            .group_by(TeamMember.team_id)
        )
        counts = {team_id: count for team_id, count in rows}
    roles = await team_service.roles_of(session, principal.user_id)
    return [
        TeamLine(t, counts.get(t.id, 0), roles[t.id].value if t.id in roles else None)
        for t in teams
    ]


@dataclass(frozen=True)
class Owned:
    """What a team owns, by name: (id, name) pairs."""

    services: list[tuple[int, str]]
    schedules: list[tuple[int, str]]
    policies: list[tuple[int, str]]


async def owned_by(session: AsyncSession, team_id: int) -> Owned:
    async def names(model: Any) -> list[tuple[int, str]]:
        rows = await session.execute(
            select(model.id, model.name)
            .where(model.team_id == team_id)
            .order_by(func.lower(model.name), model.id)
            .limit(MAX_ROWS)
        )
        return [(row_id, name) for row_id, name in rows]

    return Owned(await names(Service), await names(Schedule), await names(EscalationPolicy))


# ---- the list ------------------------------------------------------------------------------------


@dataclass
class ListShown:
    error: str | None = None
    draft: dict[str, Any] = field(
        default_factory=lambda: {"name": "", "description": "", "is_private": False}
    )


async def _list_page(
    request: Request,
    session: AsyncSession,
    browser: Browser,
    *,
    mine: bool = False,
    shown: ListShown | None = None,
    done: str | None = None,
    status: int = 200,
) -> Response:
    lines = await team_lines(session, principal_of(browser), mine=mine)
    return page(
        request,
        "teams.html",
        browser=browser,
        status_code=status,
        lines=lines,
        mine=mine,
        truncated=len(lines) >= MAX_ROWS,
        shown=shown or ListShown(),
        notice=DONE.get(done or ""),
    )


@router.get("", response_class=HTMLResponse)
async def teams_page(
    request: Request,
    session: SessionDep,
    browser: ViewerDep,
    mine: Annotated[str, Query(pattern="^(|1)$")] = "",
    done: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    """The teams you may see (private ones only to their members and admins); admins create
    teams here."""
    return await _list_page(request, session, browser, mine=bool(mine), done=done)


@router.post("", response_class=HTMLResponse)
async def create_team(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    browser: AdminActorDep,
    name: Annotated[str, Form(max_length=FIELD)] = "",
    description: Annotated[str, Form(max_length=FIELD)] = "",
    is_private: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """Create a team (admin), as `POST /v1/teams/` does."""
    shown = ListShown(draft={"name": name, "description": description, "is_private": is_private})
    try:
        body = TeamCreate.model_validate(
            {"name": name, "description": description, "is_private": bool(is_private)}
        )
        team = await team_service.create(
            session, name=body.name, description=body.description, is_private=body.is_private,
            now=clock.now(),
        )  # fmt: skip
    except ValidationError as exc:
        shown.error = problems(exc, FIELD_NAMES)
        return await _list_page(request, session, browser, shown=shown, status=422)
    except DomainError as exc:
        await session.rollback()
        shown.error = refusal(exc)
        return await _list_page(request, session, browser, shown=shown, status=exc.status_code)
    return RedirectResponse(f"{PAGE}/{team.id}?done=created", status_code=303)


# ---- one team ------------------------------------------------------------------------------------


@dataclass
class Shown:
    """What the team page shows besides the stored state: a notice, an error, what was typed,
    and a confirmation step."""

    notice: str | None = None
    error: str | None = None  # a refused form's reason, at the top of the page
    member_draft: dict[str, str] = field(
        default_factory=lambda: {"email": "", "role": TeamRole.responder.value}
    )
    settings_draft: dict[str, Any] | None = None  # None: the stored values
    confirm_remove: tuple[TeamMember, User] | None = None
    confirm_delete: bool = False


async def _visible_team(
    session: AsyncSession, browser: Browser, team_id: int
) -> tuple[Team, Scope, Principal]:
    """The team, when the user may see it (else 404, the same for a private team as for none)."""
    principal = principal_of(browser)
    team = await team_service.get(session, team_id)
    missing = f"Team {team_id} not found"
    if team is None:
        raise NotFound(missing)
    scope = await policy.require(session, principal, Action.read, team.id, missing=missing)
    return team, scope, principal


async def _team_page(
    request: Request,
    session: AsyncSession,
    browser: Browser,
    team_id: int,
    shown: Shown | None = None,
    *,
    status: int = 200,
) -> Response:
    shown = shown or Shown()
    principal = principal_of(browser)
    # Read again from the database: a refused change was rolled back, and what it had set
    # on the objects must not be shown as if stored.
    team = await session.scalar(
        select(Team).where(Team.id == team_id).execution_options(populate_existing=True)
    )
    if team is None:  # deleted meanwhile
        raise NotFound(f"Team {team_id} not found")
    scope = await policy.scope_of(session, principal, team.id)
    members = await team_service.members(session, team.id)
    mine = next((m.role for m, u in members if u.id == browser.user_id), None)
    settings = shown.settings_draft or {
        "name": team.name,
        "description": team.description,
        "is_private": team.is_private,
    }
    return page(
        request,
        "team.html",
        browser=browser,
        status_code=status,
        team=team,
        members=members,
        my_role=mine,
        owned=await owned_by(session, team.id),
        may_configure=policy.allowed(principal, Action.configure, scope),
        may_delete=principal.is_admin,
        roles=ROLES,
        role_hints=ROLE_HINTS,
        shown=shown,
        settings=settings,
    )


@router.get("/{team_id}", response_class=HTMLResponse)
async def team_page(
    team_id: IdPath,
    request: Request,
    session: SessionDep,
    browser: ViewerDep,
    done: Annotated[str | None, Query(max_length=40)] = None,
    remove: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    delete: Annotated[str, Query(pattern="^(|1)$")] = "",
) -> Response:
    """One team: its members and what it owns; for its managers and admins, the forms that
    change it; with `remove` or `delete`, the step that confirms removing a member or deleting
    the team."""
    team, scope, principal = await _visible_team(session, browser, team_id)
    shown = Shown(notice=DONE.get(done or ""))
    if remove is not None and policy.allowed(principal, Action.configure, scope):
        shown.confirm_remove = await _membership(session, team, remove)
    if delete and principal.is_admin:
        shown.confirm_delete = True
    return await _team_page(request, session, browser, team.id, shown)


async def _membership(session: AsyncSession, team: Team, user_id: int) -> tuple[TeamMember, User]:
    member = await team_service.membership(session, team.id, user_id)
    user = await user_service.get(session, user_id)
    if member is None or user is None:
        raise NotFound(f"User {user_id} is not a member of {team.name}")
    return member, user


async def _refused(
    request: Request,
    session: AsyncSession,
    browser: Browser,
    team_id: int,
    exc: DomainError | ValidationError,
    shown: Shown | None = None,
) -> Response:
    """The team page again with the reason: what the refused change flushed is rolled back."""
    shown = shown or Shown()
    if isinstance(exc, ValidationError):
        shown.error, status = problems(exc, FIELD_NAMES), 422
    else:
        shown.error, status = refusal(exc), exc.status_code
    await session.rollback()
    return await _team_page(request, session, browser, team_id, shown, status=status)


async def _configurable(
    session: AsyncSession, browser: Browser, team_id: int
) -> tuple[Team, Forbidden | None]:
    """The team (404 if the user may not see it), and the refusal if they may not change it:
    its managers and admins may."""
    team, scope, principal = await _visible_team(session, browser, team_id)
    if policy.allowed(principal, Action.configure, scope):
        return team, None
    return team, Forbidden(
        "Only the team's managers and admins change the team and its members; you may read it."
    )


@router.post("/{team_id}", response_class=HTMLResponse)
async def save_team(
    team_id: IdPath,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    browser: ActorDep,
    name: Annotated[str, Form(max_length=FIELD)] = "",
    description: Annotated[str, Form(max_length=FIELD)] = "",
    is_private: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """Rename, describe, make private or public (the team's managers, admins), as
    `PUT /v1/teams/{id}` does."""
    team, forbidden = await _configurable(session, browser, team_id)
    values = {"name": name, "description": description, "is_private": bool(is_private)}
    shown = Shown(settings_draft=values)
    try:
        if forbidden is not None:
            raise forbidden
        body = TeamUpdate.model_validate(values)
        changes = body.model_dump(exclude_unset=True)
        await team_service.update(session, team=team, changes=changes, now=clock.now())
    except (DomainError, ValidationError) as exc:
        return await _refused(request, session, browser, team_id, exc, shown)
    return RedirectResponse(f"{PAGE}/{team_id}?done=saved", status_code=303)


@router.post("/{team_id}/members", response_class=HTMLResponse)
async def add_member(
    team_id: IdPath,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    browser: ActorDep,
    email: Annotated[str, Form(max_length=FIELD)] = "",
    role: Annotated[str, Form(max_length=FIELD)] = "",
) -> Response:
    """Add a member by email address, with a role (the team's managers, admins), as
    `POST /v1/teams/{id}/members` does."""
    team, forbidden = await _configurable(session, browser, team_id)
    shown = Shown(member_draft={"email": email, "role": role})
    try:
        if forbidden is not None:
            raise forbidden
        body = MemberAdd.model_validate({"email": email.strip(), "role": role})
        user = await user_service.get_by_email(session, str(body.email))
        if user is None:
            raise Unprocessable(f"No user has the email address {body.email}")
        if not user.is_active:
            raise Unprocessable(f"{user.email} is deactivated")
        await team_service.add_member(
            session, team=team, user=user, role=body.role, now=clock.now()
        )
    except (DomainError, ValidationError) as exc:
        return await _refused(request, session, browser, team_id, exc, shown)
    return RedirectResponse(f"{PAGE}/{team_id}?done=member-added#members", status_code=303)


@router.post("/{team_id}/members/{user_id}/role", response_class=HTMLResponse)
async def change_role(
    team_id: IdPath,
    user_id: IdPath,
    request: Request,
    session: SessionDep,
    browser: ActorDep,
    role: Annotated[str, Form(max_length=FIELD)] = "",
) -> Response:
    """Change a member's role (the team's managers, admins); the last manager stays one."""
    team, forbidden = await _configurable(session, browser, team_id)
    try:
        if forbidden is not None:
            raise forbidden
        member, _ = await _membership(session, team, user_id)
        body = MemberUpdate.model_validate({"role": role})
        await team_service.change_role(session, team=team, member=member, role=body.role)
    except (DomainError, ValidationError) as exc:
        return await _refused(request, session, browser, team_id, exc)
    return RedirectResponse(f"{PAGE}/{team_id}?done=role-changed#members", status_code=303)


@router.post("/{team_id}/members/{user_id}/remove", response_class=HTMLResponse)
async def remove_member(
    team_id: IdPath,
    user_id: IdPath,
    request: Request,
    session: SessionDep,
    browser: ActorDep,
) -> Response:
    """Remove a member (the team's managers, admins; the page's confirmation step leads here);
    the last manager stays."""
    team, forbidden = await _configurable(session, browser, team_id)
    try:
        if forbidden is not None:
            raise forbidden
        member, _ = await _membership(session, team, user_id)
        await team_service.remove_member(session, team=team, member=member)
    except (DomainError, ValidationError) as exc:
        return await _refused(request, session, browser, team_id, exc)
    if user_id == browser.user_id:
        # You left: a private team is closed to you now (unless you are an admin).
        return RedirectResponse(f"{PAGE}?done=left", status_code=303)
    return RedirectResponse(f"{PAGE}/{team_id}?done=member-removed#members", status_code=303)


@router.post("/{team_id}/delete", response_class=HTMLResponse)
async def delete_team(
    team_id: IdPath, request: Request, session: SessionDep, browser: AdminActorDep
) -> Response:
    """Delete a team that owns nothing (admin; the page's confirmation step leads here), as
    `DELETE /v1/teams/{id}` does; refused while it owns services, policies, schedules or
    webhooks."""
    team, _, _ = await _visible_team(session, browser, team_id)
    try:
        await team_service.delete(session, team=team)
    except DomainError as exc:
        return await _refused(request, session, browser, team_id, exc)
    return RedirectResponse(f"{PAGE}?done=deleted", status_code=303)
