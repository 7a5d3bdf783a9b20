"""The team authorization matrix: every route × the caller's role × where the object is.

Roles: `admin` (global), and a user who is `manager`, `responder` or `observer` of team A, or a
member of no team (`none`). Places: the object belongs to team A ("own"), to team B, where the
caller has no role ("other"), or to no team ("no team"). TABLE gives each route a kind, and
`expected` says what each kind lets each role do in each place. A route missing from TABLE fails
`test_every_route_is_classified`, so nobody adds a route without deciding its team rights.

(`tests/test_authorization.py` checks the other dimension: anonymous, deactivated and key callers.)
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.authorization import ALLOWED_ANSWER, BODIES, RULES, route_list

# Kinds of route.
READ = "read"  # a team's object: every signed-in user reads it (the teams here are public)
LIST = "list"  # a list, filtered to what the caller may see: always answered
RESPOND = "respond"  # acts on a team's incident, or takes a shift: its responders and managers
CONFIGURE = "configure"  # changes a team's configuration or members: its managers
INSPECT = "inspect"  # reads what only those who may change it read (keys, webhook URLs, the log)
ADMIN = "admin"  # organisation-wide: admins only
SELF = "self"  # the caller's own account: everyone signed in
OUTSIDE = "outside"  # not called with a user's token (public, integration keys, feed tokens)

TABLE: dict[tuple[str, str], str] = {
    ("GET", "/v1/analytics/incidents"): LIST,
    ("POST", "/v1/api-keys"): SELF,
    ("GET", "/v1/api-keys"): SELF,
    ("GET", "/v1/api-keys/{key_id}"): SELF,
    ("DELETE", "/v1/api-keys/{key_id}"): SELF,
    ("GET", "/v1/audit"): INSPECT,  # with ?team_id= (without: admins, test_authorization.py)
    ("POST", "/v1/auth/login/test-token"): SELF,
    ("POST", "/v1/escalation/incidents/{incident_id}/escalate/"): RESPOND,
    ("GET", "/v1/escalation/incidents/{incident_id}/escalation-events/"): READ,
    ("GET", "/v1/escalation/policies/"): LIST,
    ("POST", "/v1/escalation/policies/"): CONFIGURE,  # in the place's team
    ("GET", "/v1/escalation/policies/{policy_id}"): READ,
    ("PUT", "/v1/escalation/policies/{policy_id}"): CONFIGURE,
    ("DELETE", "/v1/escalation/policies/{policy_id}"): CONFIGURE,
    ("GET", "/v1/incidents/"): LIST,
    ("POST", "/v1/incidents/"): RESPOND,  # on a service of the place
    ("GET", "/v1/incidents/{incident_id}"): READ,
    ("PUT", "/v1/incidents/{incident_id}"): RESPOND,
    ("POST", "/v1/incidents/{incident_id}/acknowledge"): RESPOND,
    ("POST", "/v1/incidents/{incident_id}/assign"): RESPOND,
    ("POST", "/v1/incidents/{incident_id}/comments"): RESPOND,
    ("GET", "/v1/incidents/{incident_id}/comments"): READ,
    ("POST", "/v1/incidents/{incident_id}/escalate"): RESPOND,
    ("GET", "/v1/incidents/{incident_id}/escalation-events"): READ,
    ("GET", "/v1/incidents/{incident_id}/notifications"): READ,
    ("POST", "/v1/incidents/{incident_id}/reopen"): RESPOND,
    ("POST", "/v1/incidents/{incident_id}/resolve"): RESPOND,
    ("POST", "/v1/incidents/{incident_id}/snooze"): RESPOND,
    ("GET", "/v1/incidents/{incident_id}/timeline"): READ,
    ("POST", "/v1/incidents/{incident_id}/unacknowledge"): RESPOND,
    ("POST", "/v1/incidents/{incident_id}/unsnooze"): RESPOND,
    ("GET", "/v1/notification-preferences/me"): SELF,
    ("PUT", "/v1/notification-preferences/me/{channel}"): SELF,
    ("POST", "/v1/notification-preferences/me/{channel}/confirm"): SELF,
    ("POST", "/v1/notification-preferences/me/{channel}/verify"): SELF,
    ("GET", "/v1/notification-preferences/{user_id}"): ADMIN,
    ("PUT", "/v1/notification-preferences/{user_id}/{channel}"): ADMIN,
    ("POST", "/v1/notification-preferences/{user_id}/{channel}/verified"): ADMIN,
    ("GET", "/v1/notifications/"): LIST,
    ("GET", "/v1/notifications/{notification_id}"): SELF,  # the caller's own
    ("GET", "/v1/oncall"): LIST,
    ("GET", "/v1/schedules/"): LIST,
    ("POST", "/v1/schedules/"): CONFIGURE,
    ("GET", "/v1/schedules/{schedule_id}"): READ,
    ("PUT", "/v1/schedules/{schedule_id}"): CONFIGURE,
    ("DELETE", "/v1/schedules/{schedule_id}"): CONFIGURE,
    ("POST", "/v1/schedules/{schedule_id}/calendar-url"): CONFIGURE,
    ("GET", "/v1/schedules/{schedule_id}/history"): READ,
    ("GET", "/v1/schedules/{schedule_id}/on-call"): READ,
    ("GET", "/v1/schedules/{schedule_id}/overrides"): READ,
    ("POST", "/v1/schedules/{schedule_id}/overrides"): RESPOND,  # taking a shift oneself
    ("DELETE", "/v1/schedules/{schedule_id}/overrides/{override_id}"): RESPOND,  # one's own
    ("GET", "/v1/schedules/{schedule_id}/shifts"): READ,
    ("GET", "/v1/services/"): LIST,
    ("POST", "/v1/services/"): CONFIGURE,
    ("GET", "/v1/services/{service_id}"): READ,
    ("PUT", "/v1/services/{service_id}"): CONFIGURE,
    ("DELETE", "/v1/services/{service_id}"): CONFIGURE,
    ("GET", "/v1/services/{service_id}/integrations/"): INSPECT,
    ("POST", "/v1/services/{service_id}/integrations/"): CONFIGURE,
    ("GET", "/v1/services/{service_id}/integrations/{integration_id}"): INSPECT,
    ("PUT", "/v1/services/{service_id}/integrations/{integration_id}"): CONFIGURE,
    ("DELETE", "/v1/services/{service_id}/integrations/{integration_id}"): CONFIGURE,
    ("POST", "/v1/services/{service_id}/integrations/{integration_id}/rotate"): CONFIGURE,
    ("GET", "/v1/teams/"): LIST,
    ("POST", "/v1/teams/"): ADMIN,
    ("GET", "/v1/teams/{team_id}"): READ,
    ("PUT", "/v1/teams/{team_id}"): CONFIGURE,
    ("DELETE", "/v1/teams/{team_id}"): ADMIN,
    ("GET", "/v1/teams/{team_id}/members"): READ,
    ("POST", "/v1/teams/{team_id}/members"): CONFIGURE,
    ("PUT", "/v1/teams/{team_id}/members/{user_id}"): CONFIGURE,
    ("DELETE", "/v1/teams/{team_id}/members/{user_id}"): CONFIGURE,
    ("GET", "/v1/users/"): ADMIN,
    ("POST", "/v1/users/"): ADMIN,
    ("GET", "/v1/users/me"): SELF,
    ("PUT", "/v1/users/me"): SELF,
    ("POST", "/v1/users/me/calendar-url"): SELF,
    ("GET", "/v1/users/me/contact-methods"): SELF,
    ("POST", "/v1/users/me/contact-methods"): SELF,
    ("GET", "/v1/users/me/contact-methods/{method_id}"): SELF,
    ("PATCH", "/v1/users/me/contact-methods/{method_id}"): SELF,
    ("DELETE", "/v1/users/me/contact-methods/{method_id}"): SELF,
    ("POST", "/v1/users/me/contact-methods/{method_id}/confirm"): SELF,
    ("POST", "/v1/users/me/contact-methods/{method_id}/verify"): SELF,
    ("GET", "/v1/users/me/notification-rules"): SELF,
    ("POST", "/v1/users/me/notification-rules"): SELF,
    ("PATCH", "/v1/users/me/notification-rules/{rule_id}"): SELF,
    ("DELETE", "/v1/users/me/notification-rules/{rule_id}"): SELF,
    ("POST", "/v1/users/me/password"): SELF,
    ("GET", "/v1/users/me/shifts"): SELF,
    ("GET", "/v1/users/{user_id}"): ADMIN,
    ("PUT", "/v1/users/{user_id}"): ADMIN,
    ("DELETE", "/v1/users/{user_id}"): ADMIN,
    ("GET", "/v1/users/{user_id}/contact-methods"): ADMIN,
    ("POST", "/v1/users/{user_id}/contact-methods"): ADMIN,
    ("PATCH", "/v1/users/{user_id}/contact-methods/{method_id}"): ADMIN,
    ("DELETE", "/v1/users/{user_id}/contact-methods/{method_id}"): ADMIN,
    ("POST", "/v1/users/{user_id}/contact-methods/{method_id}/verified"): ADMIN,
    ("GET", "/v1/users/{user_id}/notification-rules"): ADMIN,
    ("POST", "/v1/users/{user_id}/notification-rules"): ADMIN,
    ("PATCH", "/v1/users/{user_id}/notification-rules/{rule_id}"): ADMIN,
    ("DELETE", "/v1/users/{user_id}/notification-rules/{rule_id}"): ADMIN,
    ("GET", "/v1/webhooks/"): LIST,
    ("POST", "/v1/webhooks/"): CONFIGURE,
    ("GET", "/v1/webhooks/{webhook_id}"): INSPECT,
    ("PUT", "/v1/webhooks/{webhook_id}"): CONFIGURE,
    ("DELETE", "/v1/webhooks/{webhook_id}"): CONFIGURE,
    ("POST", "/v1/webhooks/{webhook_id}/rotate-secret"): CONFIGURE,
    ("POST", "/v1/webhooks/{webhook_id}/test"): CONFIGURE,
}
NOT_USER_TOKENS = {"public", "integration key", "routing key", "feed token", "action token"}
TABLE.update({op: OUTSIDE for op, rule in RULES.items() if rule in NOT_USER_TOKENS})

ROLES = ("admin", "manager", "responder", "observer", "none")
PLACES = ("own", "other", "no team")
# Routes about a team itself have no "no team" place.
TEAM_ROUTES = "/v1/teams/{team_id}"
# What an allowed call answers beyond test_authorization's ALLOWED_ANSWER.
MORE_ALLOWED = {
    # The caller's own team still owns things: deleting it is refused for that, not for who asks.
    ("DELETE", "/v1/teams/{team_id}"): (409,),
    ("POST", "/v1/schedules/{schedule_id}/calendar-url"): (200,),
}


def expected(kind: str, role: str, place: str) -> bool:
    """May `role` call a route of `kind` on an object in `place`?"""
    if kind in (LIST, SELF):
        return True
    if role == "admin":
        return True
    if kind == ADMIN:
        return False
    if place == "no team":  # as before teams: everyone reads and responds, admins configure
        return kind in (READ, RESPOND)
    if kind == READ:
        return True  # public teams
    if place == "other" or role == "none":
        return False
    needs = {RESPOND: ("manager", "responder"), CONFIGURE: ("manager",), INSPECT: ("manager",)}
    return role in needs[kind]


def test_every_route_is_classified(harness):
    assert route_list(harness.app) == set(TABLE), "classify the new route in TABLE"


def test_the_table_means_what_the_policy_says():
    """`expected` is the policy's own rule, cell by cell, for the kinds it decides."""
    from app.auth.policy import NO_TEAM, Action, Principal, Scope, allowed
    from app.teams.models import TeamRole
    from app.users.models import User

    acts = {READ: Action.read, RESPOND: Action.respond, CONFIGURE: Action.configure,
            INSPECT: Action.inspect, ADMIN: Action.administer}  # fmt: skip
    for role in ROLES:
        user = User(id=7, role="admin" if role == "admin" else "user")
        principal = Principal.of(user)
        for place in PLACES:
            member = TeamRole(role) if role not in ("admin", "none") and place == "own" else None
            scope = NO_TEAM if place == "no team" else Scope(1, False, member)
            for kind, action in acts.items():
                assert allowed(principal, action, scope) == expected(kind, role, place), (
                    kind, role, place,
                )  # fmt: skip


async def _world(factory, caller, place: str, teams: dict[str, Any]) -> dict[str, Any]:
    """Fresh objects in `place`: a service with an integration and an incident, a policy, a
    schedule with an override of the caller, a webhook, a team member to change."""
    team = {"own": teams["A"], "other": teams["B"], "no team": None}[place]
    team_id = team.id if team is not None else None
    service = await factory.service(team_id=team_id)
    schedule = await factory.schedule(user_ids=[caller.id], team_id=team_id)
    member_team = team if team is not None else teams["B"]
    target = await factory.user()
    await factory.member(team_id=member_team.id, user_id=target.id, role="manager")
    # The incident on a second service of the place, so that the first may be deleted.
    busy = await factory.service(team_id=team_id)
    return {
        "team": member_team,
        "team_id": team_id,
        "service": service,
        "incident": await factory.incident(service_id=busy.id),
        "integration": await factory.integration(service_id=service.id),
        "policy": await factory.policy(team_id=team_id),
        "schedule": schedule,
        "override": await factory.override(schedule_id=schedule.id, user_id=caller.id),
        "hook": await factory.webhook(team_id=team_id),
        "target": target,
    }


def _body(method: str, template: str, world: dict[str, Any], caller, contact) -> Any:
    team_id = world["team_id"]
    placed = {
        ("POST", "/v1/services/"): {"name": f"svc-{world['service'].id}", "team_id": team_id},
        ("POST", "/v1/schedules/"): {
            "name": f"sched-{world['schedule'].id}", "time_zone": "UTC", "team_id": team_id,
        },
        ("POST", "/v1/escalation/policies/"): {
            "name": "p", "team_id": team_id,
            "steps": [{"actions": [{"type": "set_severity", "severity": "high"}]}],
        },
        ("POST", "/v1/webhooks/"): {
            "name": "w", "url": "http://127.0.0.1:9/hook", "events": ["triggered"],
            "team_id": team_id,
        },
        ("POST", "/v1/incidents/"): {"title": "t", "service_id": world["service"].id},
        ("POST", "/v1/schedules/{schedule_id}/overrides"): {
            "user_id": caller.id, "start": "2026-11-28T00:00:00Z", "end": "2026-11-29T00:00:00Z",
        },
        ("POST", "/v1/teams/{team_id}/members"): {"user_id": caller.id, "role": "observer"}
        if world["team"].id != world.get("caller_team")
        else {"email": "newcomer@example.com", "role": "observer"},
    }  # fmt: skip
    if (method, template) in placed:
        return placed[(method, template)]
    body = BODIES.get((method, template))
    return body(contact) if callable(body) else body


@pytest.mark.parametrize("role", ROLES)
async def test_matrix(harness, factory, role):
    teams = {"A": await factory.team(name="team-a"), "B": await factory.team(name="team-b")}
    caller = await factory.user(role="admin" if role == "admin" else "user")
    await factory.user(email="newcomer@example.com")
    if role not in ("admin", "none"):
        await factory.member(team_id=teams["A"].id, user_id=caller.id, role=role)
    # A second manager in each team, so that changing or removing a member leaves one.
    for team in teams.values():
        await factory.member(team_id=team.id, user_id=(await factory.user()).id, role="manager")
    token = factory.token(caller)
    failures = []
    checked = 0
    for method, template in sorted(TABLE, key=lambda op: (op[0] == "DELETE", op)):
        kind = TABLE[(method, template)]
        if kind == OUTSIDE:
            continue
        places = PLACES if not template.startswith(TEAM_ROUTES) else ("own", "other")
        if kind in (SELF, ADMIN, LIST):
            places = ("own",)  # where objects are does not matter to these
        for place in places:
            world = await _world(factory, caller, place, teams)
            world["caller_team"] = teams["A"].id if role not in ("admin", "none") else None
            # Someone's contact method and rule: the caller's for /me/ routes, else the target's.
            owner = caller if "/me/" in template else world["target"]
            contact = await factory.contact_method(user_id=owner.id)
            rule = await factory.notification_rule(user_id=owner.id, contact_method_id=contact.id)
            notification = await factory.notification(user_id=caller.id)
            api_key = await factory.api_key(user_id=caller.id)
            path = template.format(
                method_id=contact.id, rule_id=rule.id, schedule_id=world["schedule"].id,
                override_id=world["override"].id, webhook_id=world["hook"].id,
                integration_id=world["integration"].id, notification_id=notification.id,
                channel="email", user_id=world["target"].id, service_id=world["service"].id,
                incident_id=world["incident"].id, policy_id=world["policy"].id,
                key_id=api_key.id, team_id=world["team"].id,
            )  # fmt: skip
            if template == "/v1/audit":
                path += f"?team_id={world['team'].id}" if place != "no team" else ""
            body = _body(method, template, world, caller, contact)
            async with harness.make_client(token) as client:
                response = await client.request(method, path, json=body)
            checked += 1
            allowed = expected(kind, role, place)
            if template == "/v1/audit" and place == "no team":
                allowed = role == "admin"  # the whole log
            cell = f"{method} {template} [{role}, {place}]"
            if allowed:
                answers = MORE_ALLOWED.get(
                    (method, template), ALLOWED_ANSWER.get(template, (200, 201))
                )
                if response.status_code not in answers:
                    failures.append(f"{cell}: expected {answers}, got {response.status_code}")
            elif response.status_code != 403:
                failures.append(f"{cell}: expected 403, got {response.status_code}")
    assert checked > 100
    assert failures == [], "\n".join(failures)
