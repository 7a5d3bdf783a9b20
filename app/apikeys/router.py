"""`/v1/api-keys`: personal keys for everyone signed in, organisation keys for admins."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status

from app.apikeys import service as apikey_service
from app.apikeys.models import ApiKey, KeyKind
from app.apikeys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from app.auth.dependencies import CurrentPrincipal, refuse_keys
from app.auth.policy import Principal
from app.core.deps import ClockDep, SessionDep
from app.core.errors import Forbidden, NotFound
from app.core.schemas import CursorQuery, IdPath, LimitQuery, Page

router = APIRouter(prefix="/api-keys", tags=["api-keys"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such key, or not yours"}}


def may_see(principal: Principal, key: ApiKey) -> bool:
    """Admins see every key; others their own personal keys."""
    return principal.is_admin or (
        key.kind == KeyKind.personal.value and key.user_id == principal.user_id
    )


async def valid_key(key_id: IdPath, session: SessionDep, principal: CurrentPrincipal) -> ApiKey:
    key = await apikey_service.get(session, key_id)
    if key is None or not may_see(principal, key):
        raise NotFound(f"API key {key_id} not found")
    return key


ValidKey = Annotated[ApiKey, Depends(valid_key)]


@router.post(
    "",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    responses={
        403: {
            "description": "A role above your own, an organisation key without the admin role, "
            "or the request itself sent an API key (keys cannot make keys)"
        },
        422: {"description": "Invalid body, an expiry in the past, or an unknown team_id"},
    },
)
async def create_api_key(
    body: ApiKeyCreate, session: SessionDep, clock: ClockDep, principal: CurrentPrincipal
) -> object:
    """Make a key. The answer's `key` is the whole key, shown this once: only its hash is kept."""
    refuse_keys(principal, "create API keys")
    if body.kind is KeyKind.organisation and not principal.is_admin:
        raise Forbidden("Organisation keys are made by admins")
    if body.kind is KeyKind.personal and not apikey_service.may_carry(principal.role, body.role):
        raise Forbidden(f"A personal key carries at most your own role ({principal.role})")
    key, secret = await apikey_service.create(
        session,
        kind=body.kind,
        name=body.name,
        role=body.role,
        owner=principal.user if body.kind is KeyKind.personal else None,
        created_by=principal.user,
        expires_at=body.expires_at,
        team_id=body.team_id,
        team_role=body.team_role,
        now=clock.now(),
    )
    return ApiKeyCreated.model_validate(
        {**ApiKeyRead.model_validate(key).model_dump(), "key": secret}
    )


@router.get("", response_model=Page[ApiKeyRead])
async def list_api_keys(
    session: SessionDep,
    principal: CurrentPrincipal,
    all_: Annotated[
        bool, Query(alias="all", description="Admins: every key, organisation keys included")
    ] = False,
    kind: KeyKind | None = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> object:
    """Your keys (revoked ones too), oldest first; admins with `all=true`: every key."""
    if all_ and not principal.is_admin:
        raise Forbidden("Admin role required to list every key")
    items, next_cursor = await apikey_service.list_page(
        session,
        limit=limit,
        cursor=cursor,
        user_id=None if all_ else principal.user_id,
        kind=kind,
    )
    return {"items": items, "next_cursor": next_cursor}


@router.get("/{key_id}", response_model=ApiKeyRead, responses=NOT_FOUND)
async def read_api_key(key: ValidKey) -> object:
    """One key (never its secret): your own, or any for admins."""
    return key


@router.delete(
    "/{key_id}",
    response_model=ApiKeyRead,
    responses={**NOT_FOUND, 409: {"description": "Already revoked: nothing changed"}},
)
async def revoke_api_key(key: ValidKey, session: SessionDep, clock: ClockDep) -> object:
    """Revoke a key: refused from the next request on, on every process. An organisation key's
    service account is deactivated with it."""
    return await apikey_service.revoke(session, key=key, now=clock.now())
