"""Who may do what: the one function that decides, for the API, the console and the inbound
channels (SMS replies, phone keypresses, email links, Slack buttons).

`allowed(principal, action, scope)` is pure: the principal (a signed-in user, or an API key acting
for one), the action, and the object's team as seen by that principal. `scope_of` and
`scope_of_service` load the scope in one statement; `require` raises the answer the API gives:
404 for what the principal may not even see (a private team's objects), 403 for what it sees but
may not do. `visible` is the same rule for reading, as a WHERE clause for lists.

The rules (docs/teams.md has the table):
- the global `admin` role may do everything;
- an object with no team: everyone signed in reads it and responds to its incidents, as before
  teams existed; only admins configure it;
- a team's object: every signed-in user reads it unless the team is private (then its members
  only); its responders and managers respond; its managers configure it and its members;
- whoever was paged for an incident may respond to it through the page (SMS reply, keypress,
  email link), whatever their role;
- a read-only principal (an API key made so) only reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from sqlalchemy import ColumnElement, Select, and_, exists, false, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from app.core.errors import Forbidden, NotFound
from app.services.models import Service
from app.teams.models import RANK, Team, TeamMember, TeamRole
from app.users.models import Role, User

# A column holding a team's (or a service's) id, in a WHERE clause.
TeamColumn = ColumnElement[Any] | QueryableAttribute[Any]


class Action(StrEnum):
    read = "read"
    # Act on incidents (acknowledge, resolve, comment, assign, snooze, escalate, open one on a
    # service) and take the team's on-call overrides.
    respond = "respond"
    # Read what only those who may change it read: webhook subscriptions (their URLs), alert
    # integrations (their keys), a team's audit log.
    inspect = "inspect"
    # Create, change and delete the team's services, integrations, policies, schedules and
    # webhooks, and its members.
    configure = "configure"
    # Organisation-wide: users, creating teams, settings, the whole audit log.
    administer = "administer"


# The least team role each action needs on a team's object.
NEEDS: dict[Action, TeamRole] = {
    Action.read: TeamRole.observer,
    Action.respond: TeamRole.responder,
    Action.inspect: TeamRole.manager,
    Action.configure: TeamRole.manager,
}
READS = frozenset({Action.read, Action.inspect})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a user signed in, or an API key acting for one."""

    user: User
    # The effective global role: a personal API key may carry less than its owner's.
    role: str
    # The user's id, kept apart from `user` (whose attributes expire after a rollback).
    user_id: int
    # Only reads (an API key made read-only).
    read_only: bool = False
    # Fixed team roles (an organisation API key scoped to a team); None: the user's memberships.
    teams: Mapping[int, TeamRole] | None = None
    # The API key used, if any.
    key_id: int | None = None
    # No private team hides anything from this principal (known when it was signed in): reads
    # need no filter. False: not known, so lists filter.
    sees_all: bool = False

    @classmethod
    def of(cls, user: User, *, sees_all: bool = False) -> Principal:
        return cls(user=user, role=user.role, user_id=user.id, sees_all=sees_all)

    @property
    def is_admin(self) -> bool:
        return self.role == Role.admin.value


@dataclass(frozen=True, slots=True)
class Scope:
    """An object's team, as the decision needs it: its id, whether it is private, and the
    principal's role in it (None: not a member)."""

    team_id: int | None
    private: bool = False
    role: TeamRole | None = None
    # The principal was paged for this incident, and acts through that page (an SMS reply, a
    # keypress on the call, the email's link): whoever is paged may answer the page.
    paged: bool = False


NO_TEAM = Scope(None)


def allowed(principal: Principal, action: Action, scope: Scope) -> bool:
    """May `principal` do `action` to an object in `scope`?"""
    if principal.read_only and action not in READS:
        return False
    if principal.is_admin:
        return True
    if action is Action.administer:
        return False
    if scope.paged and action is Action.respond:
        return True
    if scope.team_id is None:
        return action in (Action.read, Action.respond)
    if action is Action.read and not scope.private:
        return True
    return scope.role is not None and RANK[scope.role] >= RANK[NEEDS[action]]


def may_answer_page(user: User) -> bool:
    """May `user`, paged for an incident, act on it through the page itself? (The channels
    that hold a page: SMS replies, phone keypresses, email links.)"""
    return allowed(Principal.of(user), Action.respond, Scope(None, paged=True))


def may_see(principal: Principal, scope: Scope) -> bool:
    return allowed(principal, Action.read, scope)


def _member_role(principal: Principal, team_id: int, stored: str | None) -> TeamRole | None:
    if principal.teams is not None:
        return principal.teams.get(team_id)
    return TeamRole(stored) if stored is not None else None


def _membership(principal: Principal) -> ColumnElement[bool]:
    return and_(TeamMember.team_id == Team.id, TeamMember.user_id == principal.user_id)


# The scopes a session has loaded, by (user, "team" or "service", id): a request asks about one
# object at most a few times (may read, then may change).
_SCOPES = "ims_policy_scopes"


async def scope_of(session: AsyncSession, principal: Principal, team_id: int | None) -> Scope:
    """The scope of an object owned by `team_id`: one statement (none for no team, none for a
    team this session has looked at already)."""
    if team_id is None:
        return NO_TEAM
    known: dict[tuple[int, str, int], Scope] = session.info.setdefault(_SCOPES, {})
    key = (principal.user_id, "team", team_id)
    if key not in known:
        known[key] = await _load_scope(session, principal, team_id)
    return known[key]


async def _load_scope(session: AsyncSession, principal: Principal, team_id: int) -> Scope:
    row = (
        await session.execute(
            select(Team.is_private, TeamMember.role)
            .outerjoin(TeamMember, _membership(principal))
            .where(Team.id == team_id)
        )
    ).first()
    if row is None:  # the team was deleted meanwhile: nobody but admins
        return Scope(team_id, private=True)
    return Scope(team_id, bool(row.is_private), _member_role(principal, team_id, row.role))


async def scope_of_service(
    session: AsyncSession, principal: Principal, service_id: int | None
) -> Scope:
    """The scope of a service's objects (its incidents, its integrations): one statement (none
    for no service, none for a service this session has looked at already)."""
    if service_id is None:
        return NO_TEAM
    known: dict[tuple[int, str, int], Scope] = session.info.setdefault(_SCOPES, {})
    key = (principal.user_id, "service", service_id)
    if key not in known:
        found = await scopes_of_services(session, [(principal, service_id)])
        known[key] = found[(principal.user_id, service_id)]
    return known[key]


async def scopes_of_services(
    session: AsyncSession, asked: Sequence[tuple[Principal, int]]
) -> dict[tuple[int, int], Scope]:
    """The scope of each (principal, service id) in `asked`, by (user id, service id): one
    statement for any number (for a batch of requests)."""
    if not asked:
        return {}
    users = {p.user_id for p, _ in asked}
    services = {s for _, s in asked}
    rows = await session.execute(
        select(Service.id, Service.team_id, Team.is_private, TeamMember.user_id, TeamMember.role)
        .outerjoin(Team, Team.id == Service.team_id)
        .outerjoin(TeamMember, and_(TeamMember.team_id == Team.id, TeamMember.user_id.in_(users)))
        .where(Service.id.in_(services))
    )
    teams: dict[int, tuple[int | None, bool]] = {}
    roles: dict[tuple[int, int], str] = {}
    for row in rows:
        teams[row.id] = (row.team_id, bool(row.is_private))
        if row.user_id is not None:
            roles[(row.user_id, row.id)] = row.role
    found: dict[tuple[int, int], Scope] = {}
    for principal, service_id in asked:
        team_id, private = teams.get(service_id, (None, False))
        if team_id is None:
            scope = NO_TEAM
        else:
            stored = roles.get((principal.user_id, service_id))
            scope = Scope(team_id, private, _member_role(principal, team_id, stored))
        found[(principal.user_id, service_id)] = scope
    return found


def check(principal: Principal, action: Action, scope: Scope, *, missing: str) -> None:
    """Raise what the API answers when `principal` may not do `action` in `scope`: 404 (with
    `missing`) when it may not even see the object, else 403."""
    if allowed(principal, action, scope):
        return
    if not may_see(principal, scope):
        raise NotFound(missing)
    if principal.read_only and allowed(replace(principal, read_only=False), action, scope):
        raise Forbidden("This API key only reads")
    raise Forbidden(_refusal(action, scope))


def _refusal(action: Action, scope: Scope) -> str:
    if action is Action.administer or scope.team_id is None:
        return "Admin role required"
    return f"The team's {NEEDS[action].value} role (or admin) required"


def _unconditional(principal: Principal, action: Action) -> bool:
    """An admin's right to `action`, whatever the object (a read-only admin key only reads)."""
    return principal.is_admin and not (principal.read_only and action not in READS)


async def require(
    session: AsyncSession,
    principal: Principal,
    action: Action,
    team_id: int | None,
    *,
    missing: str,
) -> Scope:
    """`check` for an object owned by `team_id`; answers its scope. No statement for admins."""
    if _unconditional(principal, action):
        return Scope(team_id)
    scope = await scope_of(session, principal, team_id)
    check(principal, action, scope, missing=missing)
    return scope


async def require_for_service(
    session: AsyncSession,
    principal: Principal,
    action: Action,
    service_id: int | None,
    *,
    missing: str,
) -> Scope:
    """`check` for an object of service `service_id` (an incident, an integration)."""
    if _unconditional(principal, action):
        return NO_TEAM
    scope = await scope_of_service(session, principal, service_id)
    check(principal, action, scope, missing=missing)
    return scope


class Owned(Protocol):
    team_id: int | None


Row = TypeVar("Row", bound=Owned)


async def found(
    session: AsyncSession, principal: Principal, action: Action, obj: Row | None, *, missing: str
) -> Row:
    """`obj` (a row with a `team_id`, looked up by the caller) when `principal` may do `action`
    to it: 404 with `missing` when there is none or the principal may not see it, 403 when it
    may see it but not do that."""
    if obj is None:
        raise NotFound(missing)
    await require(session, principal, action, obj.team_id, missing=missing)
    return obj


def sees_all(user_id: TeamColumn) -> ColumnElement[bool]:
    """Whether no private team hides anything from the user `user_id` (a column or a value): a
    column to read with the user, in the statement that checks their token."""
    member = (
        select(TeamMember.id)
        .where(TeamMember.team_id == Team.id, TeamMember.user_id == user_id)
        .correlate_except(TeamMember)  # the team, and the user of the statement around it
    )
    hidden = select(Team.id).where(Team.is_private, ~member.exists()).correlate_except(Team)
    return ~hidden.exists()


def visible(principal: Principal, team_id: TeamColumn) -> ColumnElement[bool]:
    """A WHERE clause keeping the rows whose team (`team_id`, a column) `principal` may read:
    every row but those of private teams it is not a member of."""
    if principal.is_admin or principal.sees_all:
        return true()
    hidden = select(Team.id).where(Team.is_private)
    if principal.teams is not None:
        hidden = hidden.where(Team.id.not_in(list(principal.teams)) if principal.teams else true())
    else:
        hidden = hidden.where(~exists().where(_membership(principal)))
    return or_(team_id.is_(None), team_id.not_in(hidden))


def inspectable(principal: Principal, team_id: TeamColumn) -> ColumnElement[bool]:
    """A WHERE clause keeping the rows whose team (`team_id`, a column) `principal` may inspect
    (what only those who may change it read: webhooks, integrations' keys)."""
    if principal.is_admin:
        return true()
    if principal.teams is not None:
        managed = [t for t, role in principal.teams.items() if role is TeamRole.manager]
        return team_id.in_(managed) if managed else false()
    managed_by_me = select(TeamMember.team_id).where(
        TeamMember.user_id == principal.user_id, TeamMember.role == TeamRole.manager.value
    )
    return team_id.in_(managed_by_me)


def member_team_ids(principal: Principal) -> Select[Any] | list[int]:
    """The teams `principal` belongs to: a statement (to use inside another), or the key's."""
    if principal.teams is not None:
        return list(principal.teams)
    return select(TeamMember.team_id).where(TeamMember.user_id == principal.user_id)


def visible_service(principal: Principal, service_id: TeamColumn) -> ColumnElement[bool] | None:
    """`visible` for rows that belong to a service (incidents): those of no service, or of a
    service the principal may read. None when every row is (an admin, or nothing private hides
    anything): the list's statement is then the same as without authorization."""
    if principal.is_admin or principal.sees_all:
        return None
    hidden_services = select(Service.id).where(~visible(principal, Service.team_id))
    return or_(service_id.is_(None), service_id.not_in(hidden_services))
