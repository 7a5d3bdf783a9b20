"""The console's admin pages over HTTP in process: users and escalation policies, admin only."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select

from app.core.db import session_scope
from app.escalation.models import EscalationPolicy
from app.users.models import User
from tests.support.console import sign_in


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


# ---- policies ------------------------------------------------------------------------------------


async def two_step_policy(factory, first, second) -> EscalationPolicy:
    return await factory.policy(
        name="Payments",
        description="Card payments",
        repeat_count=1,
        repeat_delay_minutes=10,
        steps=[
            {
                "delay_minutes": 0,
                "targets": [{"type": "user", "id": first.id}],
                "actions": [{"type": "notify"}],
            },
            {
                "delay_minutes": 10,
                "targets": [{"type": "user", "id": second.id}],
                "actions": [{"type": "notify"}, {"type": "assign"}],
            },
        ],
    )


async def read_policy(harness, factory, admin, policy_id: int) -> dict[str, Any]:
    async with harness.make_client(factory.token(admin)) as api:
        answer = await api.get(f"/v1/escalation/policies/{policy_id}")
    assert answer.status_code == 200
    return dict(answer.json())


async def test_the_policy_list_summarises_each_policy(signed_in, factory, admin, user):
    schedule = await factory.schedule(name="Primary")
    policy = await factory.policy(
        name="Checkout",
        priority=5,
        conditions={"severities": ["critical"], "title_contains": "checkout"},
        steps=[
            {
                "delay_minutes": 2.5,
                "targets": [
                    {"type": "user", "id": user.id},
                    {"type": "schedule", "id": schedule.id},
                ],
                "actions": [{"type": "notify"}, {"type": "set_severity", "severity": "high"}],
            }
        ],
    )
    paused = await factory.policy(name="Paused", priority=50, is_active=False)
    await factory.service(name="Shop", escalation_policy_id=policy.id)
    browser, _ = await signed_in(admin)
    page = await browser.get("/ui/admin/policies")
    assert page.status_code == 200
    assert re.findall(r'<tr data-policy="(\d+)">', page.text) == [str(policy.id), str(paused.id)]
    row = re.search(rf'<tr data-policy="{policy.id}">(.*?)</tr>', page.text, re.S)
    assert row
    text = row.group(1)
    assert "severity critical; title contains “checkout”" in text
    assert "after 2.5 min: Uma User, schedule Primary; notify, severity → high" in text
    assert "Shop" in text
    assert "every incident" in page.text  # the paused one has no conditions


async def test_the_policy_form_shows_the_steps_and_an_empty_row(signed_in, factory, admin, user):
    policy = await two_step_policy(factory, admin, user)
    browser, _ = await signed_in(admin)
    page = (await browser.get(f"/ui/admin/policies/{policy.id}")).text
    assert re.findall(r'<fieldset class="step" data-step="(\w+)">', page) == ["1", "2", "new"]
    assert 'name="step_count" value="3"' in page
    assert 'name="steps-1-delay" value="10"' in page
    step_two = page.split('data-step="2"')[1].split("</fieldset>")[0]
    assert f'<option value="{user.id}" selected>' in step_two
    assert f'<option value="{admin.id}">' in step_two
    assert 'name="steps-1-assign" value="1" checked' in step_two
    assert (await browser.get("/ui/admin/policies/999999")).status_code == 404


async def test_editing_a_policys_steps_is_stored_as_the_api_returns_it(
    harness, signed_in, factory, admin, user
):
    helper = await factory.user(email="helper@example.com", full_name="Hal Helper")
    schedule = await factory.schedule(name="Primary")
    policy = await two_step_policy(factory, admin, user)
    browser, token = await signed_in(admin)
    form = policy_form(
        token,
        # step 1: a later delay, the same target; step 2: removed; a new step with a person and
        # a schedule, that also raises the severity.
        step_form(0, position="1", delay="5", users=str(admin.id), notify="1"),
        step_form(1, position="2", delay="10", users=str(user.id), notify="1", assign="1",
                  remove="1"),
        step_form(2, new="1", position="3", delay="15", users=str(helper.id),
                  schedules=str(schedule.id), notify="1", severity="critical"),
        name="Payments (cards)",
        description="Cards <and> wallets",
        repeat_count="2",
        repeat_delay_minutes="7.5",
    )  # fmt: skip
    saved = await browser.post(f"/ui/admin/policies/{policy.id}", data=form)
    assert saved.status_code == 303, saved.text[:2000]
    assert saved.headers["location"] == f"/ui/admin/policies/{policy.id}?saved=1"
    read = await read_policy(harness, factory, admin, policy.id)
    assert {
        k: read[k] for k in ("name", "description", "repeat_count", "repeat_delay_minutes")
    } == {
        "name": "Payments (cards)",
        "description": "Cards <and> wallets",
        "repeat_count": 2,
        "repeat_delay_minutes": 7.5,
    }
    assert read["is_active"] is True and read["priority"] == 100
    assert read["steps"] == [
        {
            "delay_minutes": 5.0,
            "targets": [{"type": "user", "id": admin.id}],
            "actions": [{"type": "notify"}],
        },
        {
            "delay_minutes": 15.0,
            "targets": [{"type": "user", "id": helper.id}, {"type": "schedule", "id": schedule.id}],
            "actions": [{"type": "notify"}, {"type": "set_severity", "severity": "critical"}],
        },
    ]
    page = (await browser.get(saved.headers["location"])).text
    assert 'role="status">Saved.' in page
    assert re.findall(r'<fieldset class="step" data-step="(\w+)">', page) == ["1", "2", "new"]

    # Reordering: the order numbers decide; unused new rows add nothing.
    swap = policy_form(
        token,
        step_form(0, position="2", delay="5", users=str(admin.id), notify="1"),
        step_form(1, position="1", delay="15", users=str(helper.id), schedules=str(schedule.id),
                  notify="1", severity="critical"),
        step_form(2, new="1", position="3", delay="", notify="1"),
        name="Payments (cards)",
    )  # fmt: skip
    assert (await browser.post(f"/ui/admin/policies/{policy.id}", data=swap)).status_code == 303
    read = await read_policy(harness, factory, admin, policy.id)
    assert [step["delay_minutes"] for step in read["steps"]] == [15.0, 5.0]
    assert read["description"] == "" and read["repeat_count"] == 0


async def test_a_steps_teams_urls_survive_the_form(harness, signed_in, factory, admin, user):
    policy = await two_step_policy(factory, admin, user)
    browser, token = await signed_in(admin)
    teams = "https://prod-00.westeurope.logic.azure.com/workflows/a/triggers/manual/paths/invoke"
    form = policy_form(
        token,
        step_form(0, position="1", delay="5", users=str(admin.id), notify="1",
                  webhooks="https://hooks.example.com/x", teams=f"{teams}\n\n"),
    )  # fmt: skip
    saved = await browser.post(f"/ui/admin/policies/{policy.id}", data=form)
    assert saved.status_code == 303, saved.text[:2000]
    read = await read_policy(harness, factory, admin, policy.id)
    assert read["steps"][0]["actions"] == [
        {"type": "notify"},
        {"type": "webhook", "url": "https://hooks.example.com/x"},
        {"type": "teams", "url": teams},
    ]
    page = (await browser.get(f"/ui/admin/policies/{policy.id}")).text
    assert f'<textarea name="steps-0-teams" rows="2">{teams}</textarea>' in page
    listed = (await browser.get("/ui/admin/policies")).text
    assert f"Teams {teams}" in listed
    # A URL the outbound rules refuse is refused here too, and nothing changes.
    form = policy_form(token, step_form(0, position="1", notify="1", teams="ftp://x"))
    refused = await browser.post(f"/ui/admin/policies/{policy.id}", data=form)
    assert refused.status_code == 422 and "step 1: actions" in refused.text
    assert (await read_policy(harness, factory, admin, policy.id))["steps"] == read["steps"]


async def test_a_steps_slack_channels_survive_the_form(harness, signed_in, factory, admin, user):
    """A policy step's Slack action is shown and kept by the editor (saving the form must not
    drop what the API set)."""
    policy = await two_step_policy(factory, admin, user)
    browser, token = await signed_in(admin)
    form = policy_form(
        token, step_form(0, position="1", users=str(admin.id), notify="1", slack="C0123ABCD\n"),
    )  # fmt: skip
    saved = await browser.post(f"/ui/admin/policies/{policy.id}", data=form)
    assert saved.status_code == 303, saved.text[:2000]
    read = await read_policy(harness, factory, admin, policy.id)
    assert read["steps"][0]["actions"] == [
        {"type": "notify"},
        {"type": "slack", "channel": "C0123ABCD"},
    ]
    page = (await browser.get(f"/ui/admin/policies/{policy.id}")).text
    assert '<textarea name="steps-0-slack" rows="2">C0123ABCD</textarea>' in page
    assert "Slack C0123ABCD" in (await browser.get("/ui/admin/policies")).text
    form = policy_form(token, step_form(0, position="1", notify="1", slack="#general"))
    refused = await browser.post(f"/ui/admin/policies/{policy.id}", data=form)
    assert refused.status_code == 422 and "step 1: actions" in refused.text
    assert (await read_policy(harness, factory, admin, policy.id))["steps"] == read["steps"]


async def test_an_admin_creates_a_policy_from_the_form(harness, signed_in, factory, admin, user):
    browser, token = await signed_in(admin)
    form = await browser.get("/ui/admin/policies/new")
    assert form.status_code == 200 and 'name="steps-0-new" value="1"' in form.text
    created = await browser.post(
        "/ui/admin/policies/new",
        data=policy_form(
            token,
            step_form(0, new="1", position="1", delay="0", users=str(user.id), notify="1",
                      assign="1"),
            name="Night shift",
            priority="20",
        ),
    )  # fmt: skip
    assert created.status_code == 303, created.text[:2000]
    policy_id = int(re.findall(r"/ui/admin/policies/(\d+)", created.headers["location"])[0])
    read = await read_policy(harness, factory, admin, policy_id)
    assert (read["name"], read["priority"]) == ("Night shift", 20)
    # No conditions: it matches every incident, stored with the API's defaults.
    assert read["conditions"] == {
        "severities": [],
        "service_ids": [],
        "labels": {},
        "title_contains": None,
    }
    assert read["steps"] == [
        {
            "delay_minutes": 0.0,
            "targets": [{"type": "user", "id": user.id}],
            "actions": [{"type": "notify"}, {"type": "assign"}],
        }
    ]
    # A new policy needs a step.
    empty = await browser.post(
        "/ui/admin/policies/new",
        data=policy_form(token, step_form(0, new="1", position="1", notify="1"), name="Empty"),
    )
    assert empty.status_code == 422 and "steps: List should have at least 1 item" in empty.text
    assert [p["name"] for p in await policy_rows(harness)] == ["Night shift"]


async def test_a_bad_policy_form_says_why_keeps_what_was_typed_and_changes_nothing(
    harness, signed_in, factory, admin, user
):
    policy = await two_step_policy(factory, admin, user)
    browser, token = await signed_in(admin)
    before = await policy_rows(harness)
    keep = step_form(0, position="1", delay="0", users=str(admin.id), notify="1")
    cases = [
        (
            "negative delay",
            [keep, step_form(1, position="2", delay="-5", users=str(user.id), notify="1")],
            {},
            422,
            "step 2: delay (minutes): Input should be greater than or equal to 0",
        ),
        (
            "no targets",
            [keep, step_form(1, position="2", delay="10", notify="1")],
            {},
            422,
            "step 2: notify and assign need at least one target",
        ),
        (
            "unknown user",
            [keep, step_form(1, position="2", delay="10", users="999999", notify="1")],
            {},
            422,
            "target user 999999 does not exist or is inactive",
        ),
        (
            "too-long name",
            [keep],
            {"name": "N" * 201},
            422,
            "name: String should have at most 200 characters",
        ),
        (
            "no actions",
            [keep, step_form(1, position="2", delay="1", users=str(user.id))],
            {},
            422,
            "step 2: actions: List should have at least 1 item",
        ),
        (
            "bad webhook",
            [keep, step_form(1, position="2", users=str(user.id), notify="1", webhooks="ftp://x")],
            {},
            422,
            "step 2: actions",
        ),
        ("repeats", [keep], {"repeat_count": "11"}, 422, "repeats: Input should be less than"),
        ("priority", [keep], {"priority": "soon"}, 422,
         "priority must be a number, not &#39;soon&#39;"),
        ("not a number", [keep, step_form(1, delay="nan", users=str(user.id), notify="1")], {},
         422, "step 2: delay (minutes)"),
        ("bad user id", [keep, step_form(1, delay="1", users="x", notify="1")], {}, 422,
         "step 2: targets: id must be a number, not &#39;x&#39;"),
        ("huge id", [keep, step_form(1, delay="1", users="9" * 30, notify="1")], {}, 422,
         "step 2: targets: id: Input should be less than or equal to"),
        ("huge delay", [keep, step_form(1, delay="1e400", users=str(user.id), notify="1")], {},
         422, "step 2: delay (minutes): Input should be a finite number"),
        ("too many rows", [keep], {"step_count": "500"}, 400, "reload it"),
    ]  # fmt: skip
    for label, rows, fields, status, message in cases:
        form = policy_form(token, *rows, **({"description": "typed <here>"} | fields))
        answer = await browser.post(f"/ui/admin/policies/{policy.id}", data=form)
        assert answer.status_code == status, (label, answer.text[:3000])
        assert message in answer.text, (label, re.findall(r'role="alert">(.*?)<', answer.text))
        if status == 422:
            # The form comes back as sent (escaped), with an empty row to add a step.
            assert "typed &lt;here&gt;</textarea>" in answer.text, label
            assert 'data-step="new"' in answer.text, label
    assert await policy_rows(harness) == before


async def test_a_refused_form_shows_the_new_row_and_removed_steps_as_sent(
    harness, signed_in, factory, admin, user
):
    policy = await two_step_policy(factory, admin, user)
    browser, token = await signed_in(admin)
    before = await policy_rows(harness)
    form = policy_form(
        token,
        step_form(0, position="1", delay="0", users=str(admin.id), notify="1", remove="1"),
        step_form(1, position="2", delay="10", users=str(user.id), notify="1"),
        step_form(2, new="1", position="3", delay="30", notify="1"),
    )
    answer = await browser.post(f"/ui/admin/policies/{policy.id}", data=form)
    # The removed step goes, so the new row is step 2 of what would be saved, and says so.
    assert answer.status_code == 422
    assert "step 2: notify and assign need at least one target" in answer.text
    assert re.findall(r'<fieldset class="step" data-step="(\w+)">', answer.text) == [
        "1",
        "2",
        "3",
        "new",
    ]
    assert 'name="steps-1-delay" value="30"' in answer.text
    assert 'name="steps-2-remove" value="1" checked' in answer.text
    assert await policy_rows(harness) == before


async def test_renaming_works_while_a_target_is_deactivated(
    harness, signed_in, factory, admin, user
):
    policy = await two_step_policy(factory, admin, user)
    async with session_scope(harness.app.state.sessionmaker) as session:
        stored = await session.get(EscalationPolicy, policy.id)
        assert stored
        # Actions in another order than the form lists them: still the same steps.
        stored.steps = [
            stored.steps[0],
            {**stored.steps[1], "actions": [{"type": "assign"}, {"type": "notify"}]},
        ]
    async with harness.make_client(factory.token(admin)) as api:
        assert (await api.put(f"/v1/users/{user.id}", json={"is_active": False})).status_code == 200
    browser, token = await signed_in(admin)
    page = (await browser.get(f"/ui/admin/policies/{policy.id}")).text
    assert "Uma User (user@example.com) — inactive" in page
    same_steps = policy_form(
        token,
        step_form(0, position="1", delay="0", users=str(admin.id), notify="1"),
        step_form(1, position="2", delay="10", users=str(user.id), notify="1", assign="1"),
        name="Renamed",
    )
    assert (
        await browser.post(f"/ui/admin/policies/{policy.id}", data=same_steps)
    ).status_code == 303
    assert (await read_policy(harness, factory, admin, policy.id))["name"] == "Renamed"
    # Changing the steps checks them, as the API does: the inactive target is refused.
    changed = same_steps | step_form(1, delay="20")
    refused = await browser.post(f"/ui/admin/policies/{policy.id}", data=changed)
    assert refused.status_code == 422 and f"target user {user.id}" in refused.text
    assert (await read_policy(harness, factory, admin, policy.id))["steps"][1][
        "delay_minutes"
    ] == 10


# ---- the audit log -------------------------------------------------------------------------------


async def test_the_audit_log_page_shows_console_changes_with_before_and_after(
    harness, signed_in, factory, admin, user
):
    browser, token = await signed_in(admin)
    users = await browser.get("/ui/admin/users")
    assert 'href="/ui/admin/audit"' in users.text  # linked from the admin navigation
    changed = await browser.post(
        f"/ui/admin/users/{user.id}/deactivate", data={"csrf_token": token}
    )
    assert changed.status_code in (200, 303)
    listing = await browser.get("/ui/admin/audit", params={"action": "deactivate"})
    assert listing.status_code == 200
    [entry] = re.findall(r'<li class="audit-entry" data-entry="\d+">(.*?)</li>', listing.text, re.S)
    assert "Ada Admin" in entry and "deactivate" in entry and f"user #{user.id}" in entry
    assert re.search(r"<th scope=\"row\">is active</th><td>true</td><td>false</td>", entry)
    assert "[redacted]" not in entry  # only the changed columns of an update
    everything = await browser.get("/ui/admin/audit")
    assert everything.text.count('class="audit-entry"') >= 3  # the factory's rows too
    mine = await browser.get("/ui/admin/audit", params={"actor": str(admin.id)})
    assert mine.text.count('class="audit-entry"') == 1
    services = await browser.get("/ui/admin/audit", params={"object_type": "service"})
    assert "No entries match these filters." in services.text
    for bad in ({"object_type": "incident"}, {"action": "erase"}, {"actor": "x"},
                {"cursor": "nonsense"}):  # fmt: skip
        refused = await browser.get("/ui/admin/audit", params=bad)
        assert refused.status_code == 422 and 'role="alert"' in refused.text, bad
