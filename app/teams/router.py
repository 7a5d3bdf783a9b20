from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status

from app.auth import policy
from app.auth.dependencies import AdminPrincipal, CurrentPrincipal
from app.auth.policy import Action, Principal
from app.core.deps import ClockDep, SessionDep
from app.core.errors import NotFound, Unprocessable
from app.core.schemas import CursorQuery, IdPath, LimitQuery, Page
from app.teams import service as team_service
from app.teams.models import Team, TeamMember, TeamRole
from app.teams.schemas import MemberAdd, MemberRead, MemberUpdate, TeamCreate, TeamRead, TeamUpdate
from app.users import service as user_service
from app.users.models import User

router = APIRouter(prefix="/teams", tags=["teams"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such team, or a private team you are not a member of"}
}


async def _team(session: SessionDep, principal: Principal, team_id: int, action: Action) -> Team:
    """The team, when the caller may do `action` to it: 404 when there is none or the caller may
    not see it (a private team), 403 when it may see it but not do that."""
    team = await team_service.get(session, team_id)
    missing = f"Team {team_id} not found"
    if team is None:
        raise NotFound(missing)
    await policy.require(session, principal, action, team.id, missing=missing)
    return team


async def visible_team(team_id: IdPath, session: SessionDep, principal: CurrentPrincipal) -> Team:
    return await _team(session, principal, team_id, Action.read)


VisibleTeam = Annotated[Team, Depends(visible_team)]


async def managed_team(team_id: IdPath, session: SessionDep, principal: CurrentPrincipal) -> Team:
    """The team, when the caller may change it (its managers, admins)."""
    return await _team(session, principal, team_id, Action.configure)


ManagedTeam = Annotated[Team, Depends(managed_team)]


def _member(member: TeamMember, user: User) -> MemberRead:
    return MemberRead(
        team_id=member.team_id, user_id=user.id, email=user.email, full_name=user.full_name,
        role=TeamRole(member.role), created_at=member.created_at,
    )  # fmt: skip


@router.get("/", response_model=Page[TeamRead])
async def list_teams(
    session: SessionDep,
    principal: CurrentPrincipal,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    mine: Annotated[bool, Query(description="Only the teams I am a member of")] = False,
) -> object:
    """List teams (private ones only to their members and admins)."""
    items, next_cursor = await team_service.list_page(
        session, limit=limit, cursor=cursor, visible=policy.visible(principal, Team.id),
        member_id=principal.user_id if mine else None,
    )  # fmt: skip
    return {"items": items, "next_cursor": next_cursor}


@router.post(
    "/",
    response_model=TeamRead,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "Name taken (names are unique whatever their case)"}},
)
async def create_team(
    body: TeamCreate, session: SessionDep, clock: ClockDep, _: AdminPrincipal
) -> object:
    """Create a team (admin). Add its managers next: they change it from then on."""
    return await team_service.create(
        session, name=body.name, description=body.description, is_private=body.is_private,
        now=clock.now(),
    )  # fmt: skip


@router.get("/{team_id}", response_model=TeamRead, responses=NOT_FOUND)
async def read_team(team: VisibleTeam) -> object:
    """One team."""
    return team


@router.put("/{team_id}", response_model=TeamRead, responses=NOT_FOUND)
async def update_team(
    body: TeamUpdate, team: ManagedTeam, session: SessionDep, clock: ClockDep
) -> object:
    """Rename, describe, make private or public (the team's managers, admins)."""
    changes = body.model_dump(exclude_unset=True)
    return await team_service.update(session, team=team, changes=changes, now=clock.now())


@router.delete(
    "/{team_id}",
    response_model=TeamRead,
    responses=NOT_FOUND
    | {409: {"description": "It still owns services, policies, schedules or webhooks"}},
)
async def delete_team(team_id: IdPath, session: SessionDep, _: AdminPrincipal) -> object:
    """Delete a team that owns nothing (admin); answers with the deleted team."""
    team = await team_service.get(session, team_id)
    if team is None:
        raise team_service.not_found(team_id)
    return await team_service.delete(session, team=team)


@router.get("/{team_id}/members", response_model=list[MemberRead], responses=NOT_FOUND)
async def list_members(team: VisibleTeam, session: SessionDep) -> object:
    """The team's members and their roles."""
    return [_member(m, u) for m, u in await team_service.members(session, team.id)]


@router.post(
    "/{team_id}/members",
    response_model=MemberRead,
    status_code=status.HTTP_201_CREATED,
    responses=NOT_FOUND
    | {409: {"description": "Already a member"}, 422: {"description": "No such user"}},
)
async def add_member(
    body: MemberAdd, team: ManagedTeam, session: SessionDep, clock: ClockDep
) -> object:
    """Add a member with a role (the team's managers, admins)."""
    if body.user_id is not None:
        user = await user_service.get(session, body.user_id)
        unknown = f"User {body.user_id} does not exist"
    else:
        user = await user_service.get_by_email(session, str(body.email))
        unknown = f"No user has the email address {body.email}"
    if user is None or not user.is_active:
        raise Unprocessable(unknown if user is None else f"{user.email} is deactivated")
    member = await team_service.add_member(
        session, team=team, user=user, role=body.role, now=clock.now()
    )
    return _member(member, user)


async def _membership(session: SessionDep, team: Team, user_id: int) -> tuple[TeamMember, User]:
    member = await team_service.membership(session, team.id, user_id)
    user = await user_service.get(session, user_id)
    if member is None or user is None:
        raise NotFound(f"User {user_id} is not a member of {team.name}")
    return member, user


@router.put(
    "/{team_id}/members/{user_id}",
    response_model=MemberRead,
    responses=NOT_FOUND | {409: {"description": "It would leave the team without a manager"}},
)
async def change_member(
    body: MemberUpdate, user_id: IdPath, team: ManagedTeam, session: SessionDep
) -> object:
    """Change a member's role (the team's managers, admins)."""
    member, user = await _membership(session, team, user_id)
    await team_service.change_role(session, team=team, member=member, role=body.role)
    return _member(member, user)


@router.delete(
    "/{team_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=NOT_FOUND | {409: {"description": "It would leave the team without a manager"}},
)
async def remove_member(user_id: IdPath, team: ManagedTeam, session: SessionDep) -> None:
    """Remove a member (the team's managers, admins)."""
    member, _ = await _membership(session, team, user_id)
    await team_service.remove_member(session, team=team, member=member)
