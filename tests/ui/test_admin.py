"""The console's admin pages over HTTP in process: users and escalation policies, admin only."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select

from app.escalation.models import EscalationPolicy
from app.users.models import User
from tests.ui.conftest import sign_in


async def user_rows(harness) -> list[tuple[str, str, bool]]:
    async with harness.app.state.sessionmaker() as session:
        rows = await session.execute(
            select(User.email, User.role, User.is_active).order_by(User.email)
        )
        return [tuple(row) for row in rows.all()]


async def policy_rows(harness) -> list[dict[str, Any]]:
    async with harness.app.state.sessionmaker() as session:
        policies = await session.scalars(select(EscalationPolicy).order_by(EscalationPolicy.id))
        return [
            {
                "name": p.name,
                "description": p.description,
                "repeat_count": p.repeat_count,
                "steps": p.steps,
            }
            for p in policies
        ]


def step_form(index: int, **fields: Any) -> dict[str, Any]:
    """One step row of the policy form, as a browser sends it."""
    return {f"steps-{index}-{name}": value for name, value in fields.items()}


def policy_form(token: str, *rows: dict[str, Any], **fields: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        "csrf_token": token,
        "name": "Payments",
        "description": "",
        "priority": "100",
        "repeat_count": "0",
        "repeat_delay_minutes": "5",
        "is_active": "1",
        "step_count": str(len(rows)),
    }
    for row in rows:
        form.update(row)
    form.update(fields)
    return form


# ---- who may -------------------------------------------------------------------------------------


async def test_a_plain_user_gets_403_everywhere_and_changes_nothing(
    harness, signed_in, factory, admin, user
):
    policy = await factory.policy(name="Night")
    browser, token = await signed_in(user)
    incidents = await browser.get("/ui/incidents")
    assert "/ui/admin" not in incidents.text  # no Admin link for them
    for path in (
        "/ui/admin/users",
        "/ui/admin/policies",
        "/ui/admin/policies/new",
        f"/ui/admin/policies/{policy.id}",
    ):
        answer = await browser.get(path)
        assert answer.status_code == 403, path
        assert "Admins only" in answer.text
    before_users, before_policies = await user_rows(harness), await policy_rows(harness)
    posts = {
        "/ui/admin/users": {
            "email": "sneaky@example.com",
            "full_name": "Sneaky",
            "role": "admin",
            "password": "a long passphrase",
        },
        f"/ui/admin/users/{user.id}/role": {"role": "admin"},
        f"/ui/admin/users/{admin.id}/deactivate": {},
        f"/ui/admin/users/{admin.id}/reactivate": {},
        "/ui/admin/policies/new": policy_form(token, step_form(0, users=str(user.id)), name="X"),
        f"/ui/admin/policies/{policy.id}": policy_form(
            token, step_form(0, users=str(user.id)), name="Renamed"
        ),
    }
    for path, data in posts.items():
        answer = await browser.post(path, data={"csrf_token": token, **data})
        assert answer.status_code == 403, path
        assert "Admins only" in answer.text
    assert await user_rows(harness) == before_users
    assert await policy_rows(harness) == before_policies


async def test_admin_forms_need_the_csrf_token(harness, signed_in, factory, admin, user):
    policy = await factory.policy(name="Night")
    browser, token = await signed_in(admin)
    before_users, before_policies = await user_rows(harness), await policy_rows(harness)
    posts = {
        "/ui/admin/users": {
            "email": "new@example.com",
            "full_name": "New",
            "password": "a long passphrase",
        },
        f"/ui/admin/users/{user.id}/role": {"role": "admin"},
        f"/ui/admin/users/{user.id}/deactivate": {},
        "/ui/admin/policies/new": policy_form(token, step_form(0, users=str(user.id))),
        f"/ui/admin/policies/{policy.id}": policy_form(token, step_form(0, users=str(user.id))),
    }
    for path, data in posts.items():
        for forged in ({}, {"csrf_token": "x" + token}):
            sent = {k: v for k, v in data.items() if k != "csrf_token"} | forged
            answer = await browser.post(path, data=sent)
            assert answer.status_code == 403, path
            assert "Please try again" in answer.text
    assert await user_rows(harness) == before_users
    assert await policy_rows(harness) == before_policies


# ---- users ---------------------------------------------------------------------------------------


async def test_an_admin_sees_every_user_and_creates_one_who_can_sign_in(
    harness, signed_in, browser_factory, factory, admin, user
):
    await factory.user(email="gone@example.com", full_name="Gus Gone", is_active=False)
    browser, token = await signed_in(admin)
    listing = await browser.get("/ui/admin/users")
    assert listing.status_code == 200
    for text in ("Ada Admin", "admin@example.com", "Uma User", "user@example.com", "Gus Gone"):
        assert text in listing.text
    assert len(re.findall(r'<tr data-user="\d+">', listing.text)) == 3
    assert 'href="/ui/admin/users" aria-current="page">Admin<' in listing.text

    created = await browser.post(
        "/ui/admin/users",
        data={
            "csrf_token": token,
            "email": "Grace@Example.com",
            "full_name": "Grace Hopper",
            "role": "user",
            "password": "another long passphrase",
            "phone": "+15555550123",
            "timezone": "America/New_York",
        },
    )
    assert created.status_code == 303 and created.headers["location"] == "/ui/admin/users"
    async with harness.make_client(factory.token(admin)) as api:
        found = (await api.get("/v1/users/", params={"q": "grace"})).json()["items"]
    assert [
        (u["email"], u["full_name"], u["role"], u["is_active"], u["phone"], u["timezone"])
        for u in found
    ] == [
        (
            "grace@example.com",
            "Grace Hopper",
            "user",
            True,
            "+15555550123",
            "America/New_York",
        )
    ]
    # She signs in through the login form with the initial password.
    grace = browser_factory()
    await sign_in(grace, "grace@example.com", "another long passphrase")
    assert (await grace.get("/ui/incidents")).status_code == 200
    assert (await grace.get("/ui/admin/users")).status_code == 403


async def test_a_refused_new_user_says_why_keeps_the_form_and_adds_nobody(
    harness, signed_in, admin, user
):
    browser, token = await signed_in(admin)
    before = await user_rows(harness)
    good = {
        "csrf_token": token,
        "email": "new@example.com",
        "full_name": "<b>Newt</b>",
        "role": "user",
        "password": "a long passphrase",
    }
    cases = [
        ({"email": "not an email"}, 422, "email"),
        ({"password": "short"}, 422, "password: String should have at least 8 characters"),
        ({"full_name": "   "}, 422, "full name"),
        ({"role": "owner"}, 422, "role"),
        ({"phone": "0151 123"}, 422, "E.164"),
        ({"timezone": "Mars/Olympus"}, 422, "IANA time zone"),
        ({"email": "USER@example.com"}, 409, "already exists"),
    ]
    for change, status, message in cases:
        answer = await browser.post("/ui/admin/users", data=good | change)
        assert answer.status_code == status, change
        assert 'role="alert"' in answer.text and message in answer.text, change
        # What was typed is shown again (escaped), the password never is.
        assert 'value="&lt;b&gt;Newt&lt;/b&gt;"' in answer.text or change.get("full_name")
        assert "a long passphrase" not in answer.text
    assert await user_rows(harness) == before


async def test_role_changes_and_deactivation_are_stored_and_the_last_admin_stays(
    harness, signed_in, browser_factory, factory, admin, user
):
    browser, token = await signed_in(admin)
    member_browser = browser_factory()
    await sign_in(member_browser, user.email)

    async def post(path: str, **data: str) -> Any:
        return await browser.post(path, data={"csrf_token": token, **data})

    promoted = await post(f"/ui/admin/users/{user.id}/role", role="admin")
    assert promoted.status_code == 303
    async with harness.make_client(factory.token(admin)) as api:
        assert (await api.get(f"/v1/users/{user.id}")).json()["role"] == "admin"
    assert (await member_browser.get("/ui/admin/users")).status_code == 200

    off = await post(f"/ui/admin/users/{user.id}/deactivate")
    assert off.status_code == 303
    async with harness.make_client(factory.token(admin)) as api:
        assert (await api.get(f"/v1/users/{user.id}")).json()["is_active"] is False
    # Their console session ended with the account.
    assert (await member_browser.get("/ui/incidents")).status_code == 303
    page = await browser.get("/ui/admin/users")
    row = re.search(rf'<tr data-user="{user.id}">(.*?)</tr>', page.text, re.S)
    assert row and 'data-field="active">no<' in row.group(1) and "Reactivate" in row.group(1)

    # Now the admin is the only active admin: neither demoting nor deactivating them works.
    last = await post(f"/ui/admin/users/{admin.id}/role", role="user")
    assert last.status_code == 409 and "last active admin" in last.text
    last = await post(f"/ui/admin/users/{admin.id}/deactivate")
    assert last.status_code == 409 and "last active admin" in last.text
    assert ("admin@example.com", "admin", True) in await user_rows(harness)

    back = await post(f"/ui/admin/users/{user.id}/reactivate")
    assert back.status_code == 303
    async with harness.make_client(factory.token(admin)) as api:
        read = (await api.get(f"/v1/users/{user.id}")).json()
    assert (read["role"], read["is_active"]) == ("admin", True)
    # With another admin, the first may step down; the admin pages then close to them.
    down = await post(f"/ui/admin/users/{admin.id}/role", role="user")
    assert down.status_code == 303 and down.headers["location"] == "/ui/incidents"
    assert (await browser.get("/ui/admin/users")).status_code == 403
    assert ("admin@example.com", "user", True) in await user_rows(harness)


async def test_user_forms_answer_unknown_ids_and_bad_values_with_a_page(
    harness, signed_in, admin, user
):
    browser, token = await signed_in(admin)
    before = await user_rows(harness)
    missing = await browser.post(
        "/ui/admin/users/999999/role", data={"csrf_token": token, "role": "admin"}
    )
    assert missing.status_code == 404 and "User 999999 not found" in missing.text
    bad = await browser.post(
        f"/ui/admin/users/{user.id}/role", data={"csrf_token": token, "role": "root"}
    )
    assert bad.status_code == 422 and "role" in bad.text
    junk = await browser.post("/ui/admin/users/abc/deactivate", data={"csrf_token": token})
    assert junk.status_code == 400 and "text/html" in junk.headers["content-type"]
    assert await user_rows(harness) == before


async def test_hostile_names_are_escaped_on_the_admin_pages(signed_in, factory, admin):
    evil = "<script>alert(1)</script>"
    target = await factory.user(email="evil@example.com", full_name=evil)
    schedule = await factory.schedule(name=evil + " rota")
    await factory.policy(
        name=evil,
        description=evil,
        steps=[
            {
                "delay_minutes": 0,
                "targets": [
                    {"type": "user", "id": target.id},
                    {"type": "schedule", "id": schedule.id},
                ],
                "actions": [{"type": "notify"}],
            }
        ],
    )
    browser, _ = await signed_in(admin)
    for path in ("/ui/admin/users", "/ui/admin/policies", "/ui/admin/policies/new"):
        page = await browser.get(path)
        assert page.status_code == 200, path
        assert evil not in page.text, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text, path
    policies = await browser.get("/ui/admin/policies")
    link = re.search(r'href="(/ui/admin/policies/\d+)"', policies.text)
    assert link
    page = await browser.get(link.group(1))
    assert evil not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
