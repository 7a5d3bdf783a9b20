"""What routers ask of teams: may the caller give an object to a team."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import policy
from app.auth.policy import Action, Principal
from app.teams import service as team_service


async def may_give_to(session: AsyncSession, principal: Principal, team_id: int | None) -> None:
    """A body giving an object to `team_id` (creating it there, or moving it): the team must
    exist (422), and the caller must be allowed to configure what it owns (admins, its managers;
    no team: admins only)."""
    await team_service.must_exist(session, team_id)
    await policy.require(
        session, principal, Action.configure, team_id, missing=f"Team {team_id} not found"
    )
