from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status

from app.auth import signin
from app.auth.dependencies import AdminUser, CurrentPrincipal, CurrentUser, refuse_keys
from app.core.actors import Actor
from app.core.deps import ClockDep, SessionDep, SettingsDep
from app.core.errors import Forbidden, NotFound, Unauthorized
from app.core.schemas import CursorQuery, IdPath, LimitQuery, Page
from app.flows import users as user_flow
from app.users import service as user_service
from app.users.models import Role, User
from app.users.schemas import PasswordChange, UserCreate, UserRead, UserUpdate, UserUpdateMe

router = APIRouter(prefix="/users", tags=["users"])


async def valid_user(user_id: IdPath, session: SessionDep, _: AdminUser) -> User:
    user = await user_service.get(session, user_id)
    if user is None:
        raise NotFound(f"User {user_id} not found")
    return user


ValidUser = Annotated[User, Depends(valid_user)]


@router.get("/me", response_model=UserRead)
async def read_me(user: CurrentUser) -> object:
    """The signed-in user."""
    return user


@router.put(
    "/me",
    response_model=UserRead,
    responses={
        403: {"description": "Email change without the right current_password"},
        409: {"description": "Email taken"},
        429: {"description": "Too many wrong passwords: the account's sign-in limit"},
    },
)
async def update_me(
    body: UserUpdateMe,
    user: CurrentUser,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    request: Request,
) -> object:
    """Change your own name, email (with `current_password`), phone or time zone. Wrong
    passwords count against the account's sign-in limit (429 past it)."""
    changes = body.model_dump(exclude_unset=True, exclude={"current_password"})
    if changes.get("email", user.email) != user.email and not (
        body.current_password
        and await signin.password_confirmed(
            request, session, settings, user=user, password=body.current_password, now=clock.now()
        )
    ):
        raise Forbidden("Changing your email needs your current_password")
    return await user_flow.update_own(session, user=user, changes=changes, now=clock.now())


@router.post(
    "/me/password",
    response_model=UserRead,
    responses={
        401: {"description": "Current password is wrong"},
        403: {"description": "Sent with an API key: a password is changed by its owner signed in"},
        429: {"description": "Too many wrong passwords: the account's sign-in limit"},
    },
)
async def change_my_password(
    body: PasswordChange,
    principal: CurrentPrincipal,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    request: Request,
) -> object:
    """Change your password; every token issued before stops working. Wrong passwords count
    against the account's sign-in limit (429 past it). Not with an API key (403)."""
    refuse_keys(principal, "change a password")
    user = principal.user
    if not await signin.password_confirmed(
        request, session, settings, user=user, password=body.current_password, now=clock.now()
    ):
        raise Unauthorized("Current password is wrong")
    return await user_service.update(
        session, user=user, changes={"password": body.new_password}, now=clock.now()
    )


@router.get("/", response_model=Page[UserRead])
async def list_users(
    session: SessionDep,
    _: AdminUser,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    role: Role | None = None,
    is_active: bool | None = None,
    q: Annotated[str | None, Query(max_length=200, description="Part of email or name")] = None,
) -> object:
    """List users (admin)."""
    users, next_cursor = await user_service.list_page(
        session, limit=limit, cursor=cursor, role=role, is_active=is_active, q=q
    )
    return {"items": users, "next_cursor": next_cursor}


@router.post(
    "/",
    response_model=UserRead,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "Email taken"}},
)
async def create_user(
    body: UserCreate, session: SessionDep, settings: SettingsDep, clock: ClockDep, _: AdminUser
) -> object:
    """Create a user (admin)."""
    return await user_service.create(
        session,
        email=body.email,
        password=body.password,
        full_name=body.full_name,
        role=body.role,
        is_active=body.is_active,
        phone=body.phone,
        timezone=body.timezone or settings.default_timezone,
        now=clock.now(),
    )


@router.get("/{user_id}", response_model=UserRead)
async def read_user(user: ValidUser) -> object:
    """One user (admin)."""
    return user


@router.put(
    "/{user_id}",
    response_model=UserRead,
    responses={409: {"description": "Email taken, or the last active admin would be lost"}},
)
async def update_user(
    body: UserUpdate, user: ValidUser, session: SessionDep, clock: ClockDep
) -> object:
    """Change a user (admin). Deactivating or changing the password ends their sessions."""
    changes = body.model_dump(exclude_unset=True)
    return await user_flow.update(session, user=user, changes=changes, now=clock.now())


@router.delete(
    "/{user_id}",
    response_model=UserRead,
    responses={
        409: {"description": "The last active admin cannot be deleted; or the user is in on-call "
                             "schedules or escalation policies (named) and `force` is not set"}
    },
)  # fmt: skip
async def delete_user(
    user: ValidUser,
    session: SessionDep,
    clock: ClockDep,
    admin: AdminUser,
    force: Annotated[
        bool,
        Query(description="Also take the user out of every schedule and policy (recorded in "
                          "each schedule's history)"),
    ] = False,
) -> object:  # fmt: skip
    """Delete a user (admin); answers with the deleted user. Someone still on a schedule or a
    policy is refused (409, naming where) unless `force=true`."""
    return await user_flow.delete(
        session, user=user, force=force, actor=Actor.of(admin), now=clock.now()
    )
