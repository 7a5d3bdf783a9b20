"""Who may reach each console route, built from the app's route list: a new /ui route that is not
in ROUTES below fails `test_every_console_route_has_a_row`, so it cannot ship unclassified."""

from __future__ import annotations

from fastapi.routing import iter_route_contexts

from tests.support.accessibility import accessibility_problems
from tests.support.console import sign_in

PUBLIC = "public"  # anyone (the sign-in page, and the redirects to it)
SIGNED_IN = "signed-in"  # any signed-in user
ADMIN = "admin"  # admins only

ROUTES = {
    ("GET", "/ui"): PUBLIC,
    ("GET", "/ui/"): PUBLIC,
    ("GET", "/ui/login"): PUBLIC,
    ("POST", "/ui/login"): PUBLIC,
    ("POST", "/ui/logout"): SIGNED_IN,
    ("GET", "/ui/events"): SIGNED_IN,
    ("GET", "/ui/incidents"): SIGNED_IN,
    ("GET", "/ui/incidents/new"): SIGNED_IN,
    ("POST", "/ui/incidents/new"): SIGNED_IN,
    ("GET", "/ui/incidents/{incident_id}"): SIGNED_IN,
    ("POST", "/ui/incidents/{incident_id}/{action}"): SIGNED_IN,
    ("GET", "/ui/analytics"): SIGNED_IN,
    ("GET", "/ui/oncall"): SIGNED_IN,
    ("GET", "/ui/services"): SIGNED_IN,
    ("GET", "/ui/me"): SIGNED_IN,
    ("POST", "/ui/me/methods"): SIGNED_IN,
    ("POST", "/ui/me/methods/{method_id}/delete"): SIGNED_IN,
    ("POST", "/ui/me/methods/{method_id}/send-code"): SIGNED_IN,
    ("POST", "/ui/me/methods/{method_id}/confirm"): SIGNED_IN,
    ("POST", "/ui/me/rules"): SIGNED_IN,
    ("POST", "/ui/me/rules/{rule_id}/delete"): SIGNED_IN,
    ("POST", "/ui/me/keys"): SIGNED_IN,
    ("POST", "/ui/me/keys/{key_id}/revoke"): SIGNED_IN,
    # Team pages: any signed-in user reads the teams they may see; the policy decides the rest
    # (tests/ui/test_teams.py: managers and admins change a team, only admins create and delete).
    ("GET", "/ui/teams"): SIGNED_IN,
    ("POST", "/ui/teams"): ADMIN,
    ("GET", "/ui/teams/{team_id}"): SIGNED_IN,
    ("POST", "/ui/teams/{team_id}"): SIGNED_IN,
    ("POST", "/ui/teams/{team_id}/members"): SIGNED_IN,
    ("POST", "/ui/teams/{team_id}/members/{user_id}/role"): SIGNED_IN,
    ("POST", "/ui/teams/{team_id}/members/{user_id}/remove"): SIGNED_IN,
    ("POST", "/ui/teams/{team_id}/delete"): ADMIN,
    ("POST", "/ui/services/{service_id}/integrations/{integration_id}/rotate"): ADMIN,
    ("GET", "/ui/admin/users"): ADMIN,
    ("POST", "/ui/admin/users"): ADMIN,
    ("POST", "/ui/admin/users/{user_id}/role"): ADMIN,
    ("POST", "/ui/admin/users/{user_id}/deactivate"): ADMIN,
    ("POST", "/ui/admin/users/{user_id}/reactivate"): ADMIN,
    ("GET", "/ui/admin/policies"): ADMIN,
    ("GET", "/ui/admin/audit"): ADMIN,
    ("GET", "/ui/admin/policies/new"): ADMIN,
    ("GET", "/ui/admin/policies/{policy_id}"): ADMIN,
    ("POST", "/ui/admin/policies/new"): ADMIN,
    ("POST", "/ui/admin/policies/{policy_id}"): ADMIN,
}


def console_routes(app) -> set[tuple[str, str]]:
    found = set()
    for context in iter_route_contexts(app.routes):
        path = context.path_format
        if path.startswith("/ui") and not path.startswith("/ui/static"):
            for method in getattr(context.route, "methods", None) or ():
                if method != "HEAD":
                    found.add((method, path))
    return found


async def test_every_console_route_has_a_row(harness):
    assert console_routes(harness.app) == set(ROUTES)


async def objects(factory, user) -> dict[str, str]:
    service = await factory.service(name="svc")
    integration = await factory.integration(service_id=service.id)
    incident = await factory.incident(title="t")
    policy = await factory.policy(name="p")
    method = await factory.contact_method(user_id=user.id)
    rule = await factory.notification_rule(user_id=user.id, contact_method_id=method.id)
    key = await factory.api_key(user_id=user.id)
    team = await factory.team(name="Payments", description="Cards")
    await factory.member(team_id=team.id, user_id=user.id, role="manager")
    await factory.service(name="Checkout", team_id=team.id)
    return {
        "{incident_id}": str(incident.id),
        "{action}": "acknowledge",
        "{service_id}": str(service.id),
        "{integration_id}": str(integration.id),
        "{user_id}": str(user.id),
        "{policy_id}": str(policy.id),
        "{method_id}": str(method.id),
        "{rule_id}": str(rule.id),
        "{key_id}": str(key.id),
        "{team_id}": str(team.id),
    }


def concrete(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace(name, value)
    return path


async def test_strangers_are_sent_to_sign_in(harness, browser_factory, factory, user):
    values = await objects(factory, user)
    stranger = browser_factory()
    for (method, template), rule in ROUTES.items():
        if rule == PUBLIC:
            continue
        answer = await stranger.request(method, concrete(template, values))
        assert answer.status_code == 303, (method, template, answer.status_code)
        assert answer.headers["location"].startswith("/ui/login"), (method, template)


async def test_plain_users_get_403_on_admin_routes_and_every_post_needs_csrf(
    harness, browser_factory, factory, user
):
    values = await objects(factory, user)
    browser = browser_factory()
    token = await sign_in(browser, user.email)
    for (method, template), rule in ROUTES.items():
        if rule == PUBLIC:
            continue
        path = concrete(template, values)
        if method == "POST":
            # Without the session's CSRF token: refused, whoever asks.
            missing = await browser.post(path, data={})
            assert missing.status_code == 403, (template, missing.status_code)
        if rule != ADMIN:
            continue
        data = {"csrf_token": token} if method == "POST" else None
        answer = await browser.request(method, path, data=data)
        assert answer.status_code == 403, (method, template, answer.status_code)
        assert "Admins only" in answer.text
    # A plain user's pages work (nothing above signed them out).
    assert (await browser.get("/ui/incidents")).status_code == 200


async def test_admins_reach_every_admin_page(harness, browser_factory, factory, admin, user):
    values = await objects(factory, user)
    browser = browser_factory()
    await sign_in(browser, admin.email)
    for (method, template), rule in ROUTES.items():
        if rule == ADMIN and method == "GET":
            answer = await browser.get(concrete(template, values))
            assert answer.status_code == 200, (template, answer.status_code)


# ---- accessibility: labelled controls, errors tied to their fields, headings in order ------------


async def test_my_page_is_labelled_and_its_errors_are_tied_to_their_fields(
    harness, browser_factory, factory, user
):
    browser = browser_factory()
    token = await sign_in(browser, user.email)
    method = await factory.contact_method(user_id=user.id, label="Mobile")
    await factory.notification_rule(user_id=user.id, contact_method_id=method.id)
    sent = await browser.post(f"/ui/me/methods/{method.id}/send-code", data={"csrf_token": token})
    assert sent.status_code == 303
    pages = {
        "with methods and a code sent": await browser.get(f"/ui/me?sent={method.id}"),
        "confirming a delete": await browser.get(f"/ui/me?delete_method={method.id}"),
        "a refused number": await browser.post(
            "/ui/me/methods", data={"csrf_token": token, "type": "sms", "address": "+1555"}
        ),
        "a refused rule": await browser.post(
            "/ui/me/rules",
            data={"csrf_token": token, "contact_method_id": "x", "delay_minutes": "y"},
        ),
        "a wrong code": await browser.post(
            f"/ui/me/methods/{method.id}/confirm", data={"csrf_token": token, "code": "12"}
        ),
    }
    for state, answer in pages.items():
        assert answer.status_code in (200, 422), (state, answer.status_code)
        assert accessibility_problems(answer.text) == [], state
        assert answer.text.count('aria-invalid="true"') == (
            {"a refused number": 1, "a refused rule": 2, "a wrong code": 1}.get(state, 0)
        ), state
    empty = browser_factory()
    stranger = await factory.user()
    await sign_in(empty, stranger.email)
    assert accessibility_problems((await empty.get("/ui/me")).text) == []


async def test_every_console_page_is_labelled_with_its_headings_in_order(
    harness, browser_factory, factory, admin, user
):
    values = await objects(factory, user)
    browser = browser_factory()
    assert accessibility_problems((await browser.get("/ui/login")).text) == []
    await sign_in(browser, admin.email)
    for (method, template), _ in ROUTES.items():
        if method != "GET" or template in ("/ui", "/ui/", "/ui/login", "/ui/events"):
            continue
        answer = await browser.get(concrete(template, values))
        assert answer.status_code == 200, template
        assert accessibility_problems(answer.text) == [], template
