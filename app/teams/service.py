"""Teams and their members. Plain async functions, never a commit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import lock_named
from app.core.errors import Conflict, NotFound, Unprocessable
from app.core.pagination import page_by_id
from app.escalation.models import EscalationPolicy
from app.notifications.models import WebhookSubscription
from app.schedules.models import Schedule
from app.services.models import Service
from app.teams.models import Team, TeamMember, TeamRole
from app.users.models import User

# What a team owns: a team owning any of them cannot be deleted.
OWNED = (Service, EscalationPolicy, Schedule, WebhookSubscription)


async def get(session: AsyncSession, team_id: int) -> Team | None:
    return await session.get(Team, team_id)


async def get_by_name(session: AsyncSession, name: str) -> Team | None:
    return await session.scalar(select(Team).where(Team.name_key == name.lower()))


async def must_exist(session: AsyncSession, team_id: int | None) -> None:
    """For a body naming a team: 422 when there is none with this id."""
    if team_id is not None and await get(session, team_id) is None:
        raise Unprocessable(f"Team {team_id} does not exist")


async def create(
    session: AsyncSession,
    *,
    name: str,
    now: datetime,
    description: str = "",
    is_private: bool = False,
) -> Team:
    if await get_by_name(session, name) is not None:
        raise Conflict(f"A team named {name!r} already exists")
    team = Team(
        name=name,
        name_key=name.lower(),
        description=description,
        is_private=is_private,
        created_at=now,
        updated_at=now,
    )
    session.add(team)
    await _flush_unique_name(session, name)
    return team


async def update(
    session: AsyncSession, *, team: Team, changes: dict[str, Any], now: datetime
) -> Team:
    name = changes.get("name")
    if name is not None and name.lower() != team.name_key:
        if await get_by_name(session, name) is not None:
            raise Conflict(f"A team named {name!r} already exists")
        team.name_key = name.lower()
    for field, value in changes.items():
        setattr(team, field, value)
    team.updated_at = now
    await _flush_unique_name(session, team.name)
    return team


async def delete(session: AsyncSession, *, team: Team) -> Team:
    """Delete a team that owns nothing (its members go with it)."""
    for model in OWNED:
        if await session.scalar(select(exists().where(model.team_id == team.id))):
            raise Conflict(
                f"The team still owns {model.__tablename__.replace('_', ' ')}; "
                "move them to another team or delete them first"
            )
    await session.delete(team)
    await session.flush()
    return team


async def list_page(
    session: AsyncSession,
    *,
    limit: int,
    cursor: str | None,
    visible: Any,
    member_id: int | None = None,
) -> tuple[list[Team], str | None]:
    """Teams in id order: those `visible` keeps, only those `member_id` belongs to if given."""
    query = select(Team).where(visible)
    if member_id is not None:
        query = query.where(
            exists().where(and_(TeamMember.team_id == Team.id, TeamMember.user_id == member_id))
        )
    return await page_by_id(session, query, Team.id, limit=limit, cursor=cursor)


async def _flush_unique_name(session: AsyncSession, name: str) -> None:
    try:
        await session.flush()
    except IntegrityError as error:
        raise Conflict(f"A team named {name!r} already exists") from error


# ---- members ------------------------------------------------------------------------------------


async def members(session: AsyncSession, team_id: int) -> list[tuple[TeamMember, User]]:
    rows = await session.execute(
        select(TeamMember, User)
        .join(User, User.id == TeamMember.user_id)
        .where(TeamMember.team_id == team_id)
        .order_by(TeamMember.id)
    )
    return [(member, user) for member, user in rows.all()]


async def membership(session: AsyncSession, team_id: int, user_id: int) -> TeamMember | None:
    return await session.scalar(
        select(TeamMember).where(TeamMember.team_id == team_id, TeamMember.user_id == user_id)
    )


async def roles_of(session: AsyncSession, user_id: int) -> dict[int, TeamRole]:
    """Every team `user_id` belongs to, and their role in it."""
    rows = await session.execute(
        select(TeamMember.team_id, TeamMember.role).where(TeamMember.user_id == user_id)
    )
    return {team_id: TeamRole(role) for team_id, role in rows.all()}


async def add_member(
    session: AsyncSession, *, team: Team, user: User, role: TeamRole, now: datetime
) -> TeamMember:
    if user.is_service_account:
        # An organisation API key's own account: its team and role are the key's.
        raise Unprocessable(f"{user.full_name} is an API key's account, not a person")
    await lock_named(session, f"teams:{team.id}:members")
    if await membership(session, team.id, user.id) is not None:
        raise Conflict(f"{user.email} is already a member of {team.name}")
    member = TeamMember(team_id=team.id, user_id=user.id, role=role.value, created_at=now)
    session.add(member)
    try:
        await session.flush()
    except IntegrityError as error:
        raise Conflict(f"{user.email} is already a member of {team.name}") from error
    return member


async def change_role(
    session: AsyncSession, *, team: Team, member: TeamMember, role: TeamRole
) -> TeamMember:
    if member.role == TeamRole.manager and role != TeamRole.manager:
        await _keep_a_manager(session, team)
    member.role = role.value
    await session.flush()
    return member


async def remove_member(session: AsyncSession, *, team: Team, member: TeamMember) -> None:
    if member.role == TeamRole.manager:
        await _keep_a_manager(session, team)
    await session.delete(member)
    await session.flush()


async def _keep_a_manager(session: AsyncSession, team: Team) -> None:
    """Refuse to take away the team's last manager (serialised: two managers demoting each
    other at once cannot both succeed)."""
    await lock_named(session, f"teams:{team.id}:members")
    managers = await session.scalar(
        select(func.count())
        .select_from(TeamMember)
        .where(TeamMember.team_id == team.id, TeamMember.role == TeamRole.manager.value)
    )
    if (managers or 0) <= 1:
        raise Conflict(f"{team.name} would have no manager left; make someone else manager first")


def not_found(team_id: int) -> NotFound:
    return NotFound(f"Team {team_id} not found")
