"""Who may call each endpoint with which credentials (`RULES`), a body each accepts (`BODIES`)
and what an allowed call answers (`ALLOWED_ANSWER`): shared by tests/test_authorization.py (no
credentials, deactivated users, keys) and tests/teams/test_matrix.py (team roles)."""

from __future__ import annotations

from typing import Any

PUBLIC, SIGNED_IN, ADMIN = "public", "signed-in", "admin"
# Signed in, and only the owner (here: the admin) or an admin sees it; anyone else gets 404.
OWNER = "owner"
# An integration key, never a user token: every caller here (none has a key) gets 401.
KEY = "integration key"
# PagerDuty's endpoint: the key is in the body; without one, PagerDuty's 400.
ROUTING_KEY = "routing key"
# Calendar feeds: the secret token in the URL, never a user token: without it, 401 for everyone.
FEED_TOKEN = "feed token"
# A page email's one-click link: the signed token in the URL, never a user token: a made-up one
# gets the 404 page whoever calls.
ACTION_TOKEN = "action token"

# (method, path template) → who may call it.
RULES: dict[tuple[str, str], str] = {
    ("GET", "/"): PUBLIC,
    ("GET", "/health"): PUBLIC,
    ("GET", "/health/ready"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,  # METRICS_ACCESS=open, the default (token: test_metrics.py)
    ("POST", "/v1/auth/signup"): PUBLIC,
    ("POST", "/v1/auth/login/access-token"): PUBLIC,
    ("POST", "/v1/auth/login/test-token"): SIGNED_IN,
    ("POST", "/v1/auth/password-recovery/{email}"): PUBLIC,
    ("POST", "/v1/auth/reset-password/"): PUBLIC,
    ("GET", "/v1/users/me"): SIGNED_IN,
    ("PUT", "/v1/users/me"): SIGNED_IN,
    ("POST", "/v1/users/me/password"): SIGNED_IN,
    ("GET", "/v1/users/"): ADMIN,
    ("POST", "/v1/users/"): ADMIN,
    ("GET", "/v1/users/{user_id}"): ADMIN,
    ("PUT", "/v1/users/{user_id}"): ADMIN,
    ("DELETE", "/v1/users/{user_id}"): ADMIN,
    ("GET", "/v1/services/"): SIGNED_IN,
    ("POST", "/v1/services/"): ADMIN,
    ("GET", "/v1/services/{service_id}"): SIGNED_IN,
    ("PUT", "/v1/services/{service_id}"): ADMIN,
    ("DELETE", "/v1/services/{service_id}"): ADMIN,
    ("GET", "/v1/incidents/"): SIGNED_IN,
    ("POST", "/v1/incidents/"): SIGNED_IN,
    ("GET", "/v1/incidents/{incident_id}"): SIGNED_IN,
    ("PUT", "/v1/incidents/{incident_id}"): SIGNED_IN,
    ("POST", "/v1/incidents/{incident_id}/acknowledge"): SIGNED_IN,
    ("POST", "/v1/incidents/{incident_id}/resolve"): SIGNED_IN,
    ("POST", "/v1/incidents/{incident_id}/snooze"): SIGNED_IN,
    ("POST", "/v1/incidents/{incident_id}/unsnooze"): SIGNED_IN,
    ("POST", "/v1/incidents/{incident_id}/unacknowledge"): SIGNED_IN,
    ("POST", "/v1/incidents/{incident_id}/reopen"): SIGNED_IN,
    ("POST", "/v1/incidents/{incident_id}/assign"): SIGNED_IN,
    ("POST", "/v1/incidents/{incident_id}/comments"): SIGNED_IN,
    ("GET", "/v1/incidents/{incident_id}/comments"): SIGNED_IN,
    ("GET", "/v1/incidents/{incident_id}/timeline"): SIGNED_IN,
    ("GET", "/v1/incidents/{incident_id}/escalation-events"): SIGNED_IN,
    ("POST", "/v1/incidents/{incident_id}/escalate"): SIGNED_IN,
    ("GET", "/v1/escalation/incidents/{incident_id}/escalation-events/"): SIGNED_IN,
    ("POST", "/v1/escalation/incidents/{incident_id}/escalate/"): SIGNED_IN,
    ("GET", "/v1/escalation/policies/"): SIGNED_IN,  # webhook URLs: admins (test_policies.py)
    ("POST", "/v1/escalation/policies/"): ADMIN,
    ("GET", "/v1/escalation/policies/{policy_id}"): SIGNED_IN,
    ("PUT", "/v1/escalation/policies/{policy_id}"): ADMIN,
    ("DELETE", "/v1/escalation/policies/{policy_id}"): ADMIN,
    ("GET", "/v1/incidents/{incident_id}/notifications"): SIGNED_IN,
    ("POST", "/v1/alerts/alertmanager"): KEY,
    ("POST", "/v1/alerts/grafana"): KEY,
    ("POST", "/v1/alerts/generic"): KEY,
    ("POST", "/v1/alerts/elastic"): KEY,
    ("POST", "/v2/enqueue"): ROUTING_KEY,
    ("GET", "/v1/services/{service_id}/integrations/"): ADMIN,
    ("POST", "/v1/services/{service_id}/integrations/"): ADMIN,
    ("GET", "/v1/services/{service_id}/integrations/{integration_id}"): ADMIN,
    ("PUT", "/v1/services/{service_id}/integrations/{integration_id}"): ADMIN,
    ("DELETE", "/v1/services/{service_id}/integrations/{integration_id}"): ADMIN,
    ("POST", "/v1/services/{service_id}/integrations/{integration_id}/rotate"): ADMIN,
    ("GET", "/v1/notification-preferences/me"): SIGNED_IN,
    ("PUT", "/v1/notification-preferences/me/{channel}"): SIGNED_IN,
    ("POST", "/v1/notification-preferences/me/{channel}/verify"): SIGNED_IN,
    ("POST", "/v1/notification-preferences/me/{channel}/confirm"): SIGNED_IN,
    # Another user's: the target is never the caller, so only admins get through.
    ("GET", "/v1/notification-preferences/{user_id}"): ADMIN,
    ("PUT", "/v1/notification-preferences/{user_id}/{channel}"): ADMIN,
    ("POST", "/v1/notification-preferences/{user_id}/{channel}/verified"): ADMIN,
    ("GET", "/v1/notifications/"): SIGNED_IN,
    ("GET", "/v1/notifications/{notification_id}"): OWNER,
    ("GET", "/v1/webhooks/"): SIGNED_IN,  # only those the caller may change: none here
    ("POST", "/v1/webhooks/"): ADMIN,
    ("GET", "/v1/webhooks/{webhook_id}"): ADMIN,
    ("PUT", "/v1/webhooks/{webhook_id}"): ADMIN,
    ("DELETE", "/v1/webhooks/{webhook_id}"): ADMIN,
    ("POST", "/v1/webhooks/{webhook_id}/rotate-secret"): ADMIN,
    ("POST", "/v1/webhooks/{webhook_id}/test"): ADMIN,
    ("GET", "/v1/schedules/"): SIGNED_IN,
    ("POST", "/v1/schedules/"): ADMIN,
    ("GET", "/v1/schedules/{schedule_id}"): SIGNED_IN,
    ("PUT", "/v1/schedules/{schedule_id}"): ADMIN,
    ("DELETE", "/v1/schedules/{schedule_id}"): ADMIN,
    ("GET", "/v1/schedules/{schedule_id}/history"): SIGNED_IN,
    ("GET", "/v1/schedules/{schedule_id}/overrides"): SIGNED_IN,
    ("POST", "/v1/schedules/{schedule_id}/overrides"): ADMIN,
    ("DELETE", "/v1/schedules/{schedule_id}/overrides/{override_id}"): ADMIN,
    ("GET", "/v1/schedules/{schedule_id}/on-call"): SIGNED_IN,
    ("GET", "/v1/schedules/{schedule_id}/shifts"): SIGNED_IN,
    ("POST", "/v1/schedules/{schedule_id}/calendar-url"): ADMIN,
    ("GET", "/v1/schedules/{schedule_id}/calendar.ics"): FEED_TOKEN,
    ("GET", "/v1/oncall"): SIGNED_IN,
    ("GET", "/v1/users/me/shifts"): SIGNED_IN,
    ("POST", "/v1/users/me/calendar-url"): SIGNED_IN,
    ("GET", "/v1/users/{user_id}/calendar.ics"): FEED_TOKEN,
    # Teams: the objects here belong to no team and the caller manages none (the team matrix in
    # tests/teams/test_matrix.py checks the rights a team's roles give).
    ("GET", "/v1/teams/"): SIGNED_IN,
    ("POST", "/v1/teams/"): ADMIN,
    ("GET", "/v1/teams/{team_id}"): SIGNED_IN,
    ("PUT", "/v1/teams/{team_id}"): ADMIN,
    ("DELETE", "/v1/teams/{team_id}"): ADMIN,
    ("GET", "/v1/teams/{team_id}/members"): SIGNED_IN,
    ("POST", "/v1/teams/{team_id}/members"): ADMIN,
    ("PUT", "/v1/teams/{team_id}/members/{user_id}"): ADMIN,
    ("DELETE", "/v1/teams/{team_id}/members/{user_id}"): ADMIN,
    ("GET", "/v1/analytics/incidents"): SIGNED_IN,  # as reading incidents
    ("GET", "/v1/audit"): ADMIN,
    # Your own contact methods and rules ({method_id}, {rule_id}: the caller's own).
    ("GET", "/v1/users/me/contact-methods"): SIGNED_IN,
    ("POST", "/v1/users/me/contact-methods"): SIGNED_IN,
    ("GET", "/v1/users/me/contact-methods/{method_id}"): SIGNED_IN,
    ("PATCH", "/v1/users/me/contact-methods/{method_id}"): SIGNED_IN,
    ("DELETE", "/v1/users/me/contact-methods/{method_id}"): SIGNED_IN,
    ("POST", "/v1/users/me/contact-methods/{method_id}/verify"): SIGNED_IN,
    ("POST", "/v1/users/me/contact-methods/{method_id}/confirm"): SIGNED_IN,
    ("GET", "/v1/users/me/notification-rules"): SIGNED_IN,
    ("POST", "/v1/users/me/notification-rules"): SIGNED_IN,
    ("PATCH", "/v1/users/me/notification-rules/{rule_id}"): SIGNED_IN,
    ("DELETE", "/v1/users/me/notification-rules/{rule_id}"): SIGNED_IN,
    # Another user's (the target is never the caller): admins only.
    ("GET", "/v1/users/{user_id}/contact-methods"): ADMIN,
    ("POST", "/v1/users/{user_id}/contact-methods"): ADMIN,
    ("PATCH", "/v1/users/{user_id}/contact-methods/{method_id}"): ADMIN,
    ("DELETE", "/v1/users/{user_id}/contact-methods/{method_id}"): ADMIN,
    ("POST", "/v1/users/{user_id}/contact-methods/{method_id}/verified"): ADMIN,
    ("GET", "/v1/users/{user_id}/notification-rules"): ADMIN,
    ("POST", "/v1/users/{user_id}/notification-rules"): ADMIN,
    ("PATCH", "/v1/users/{user_id}/notification-rules/{rule_id}"): ADMIN,
    ("DELETE", "/v1/users/{user_id}/notification-rules/{rule_id}"): ADMIN,
    # Your own keys; {key_id}: the admin's key, so anyone else gets 404.
    ("POST", "/v1/api-keys"): SIGNED_IN,
    ("GET", "/v1/api-keys"): SIGNED_IN,
    ("GET", "/v1/api-keys/{key_id}"): OWNER,
    ("DELETE", "/v1/api-keys/{key_id}"): OWNER,
    ("GET", "/v1/actions/{token}"): ACTION_TOKEN,
    ("POST", "/v1/actions/{token}"): ACTION_TOKEN,
}

# A body each endpoint accepts, so that a refusal is about who calls, not what is sent.
BODIES = {
    ("POST", "/v1/auth/signup"): {
        "email": "s@example.com",
        "password": "long enough",
        "full_name": "S",
    },
    ("POST", "/v1/auth/reset-password/"): {
        "token": "not-a-real-token",
        "new_password": "long enough",
    },
    ("POST", "/v1/users/"): {"email": "x@example.com", "password": "long enough", "full_name": "X"},
    ("PUT", "/v1/users/{user_id}"): {"full_name": "Renamed"},
    ("PUT", "/v1/users/me"): {"full_name": "Renamed"},
    ("POST", "/v1/users/me/password"): {"current_password": "x", "new_password": "long enough"},
    ("POST", "/v1/services/"): {"name": "svc"},
    ("PUT", "/v1/services/{service_id}"): {"description": "d"},
    ("POST", "/v1/incidents/"): {"title": "t"},
    ("PUT", "/v1/incidents/{incident_id}"): {"title": "t2"},
    ("POST", "/v1/incidents/{incident_id}/snooze"): {"minutes": 5},
    ("POST", "/v1/incidents/{incident_id}/assign"): {"user_ids": []},
    ("POST", "/v1/incidents/{incident_id}/comments"): {"content": "c"},
    ("POST", "/v1/escalation/policies/"): {
        "name": "p",
        "steps": [{"actions": [{"type": "webhook", "url": "http://127.0.0.1:9/hook"}]}],
    },
    ("PUT", "/v1/escalation/policies/{policy_id}"): {"priority": 5},
    ("PUT", "/v1/notification-preferences/me/{channel}"): {"enabled": True},
    ("PUT", "/v1/notification-preferences/{user_id}/{channel}"): {"enabled": False},
    ("POST", "/v1/notification-preferences/me/{channel}/confirm"): {"code": "123456"},
    ("POST", "/v1/notification-preferences/{user_id}/{channel}/verified"): {},
    ("POST", "/v1/webhooks/"): {
        "name": "w",
        "url": "http://127.0.0.1:9/hook",
        "events": ["triggered"],
    },
    ("PUT", "/v1/webhooks/{webhook_id}"): {"enabled": False},
    ("POST", "/v1/services/{service_id}/integrations/"): {"name": "am", "kind": "alertmanager"},
    ("PUT", "/v1/services/{service_id}/integrations/{integration_id}"): {"name": "renamed"},
    ("POST", "/v1/schedules/"): {"name": "s", "time_zone": "UTC"},
    ("PUT", "/v1/schedules/{schedule_id}"): {"description": "d"},
    ("POST", "/v1/teams/"): {"name": "t"},
    ("PUT", "/v1/teams/{team_id}"): {"description": "d"},
    ("POST", "/v1/teams/{team_id}/members"): {"email": "member@example.com", "role": "observer"},
    ("PUT", "/v1/teams/{team_id}/members/{user_id}"): {"role": "observer"},
    ("POST", "/v1/alerts/generic"): {"summary": "disk full", "dedup_key": "disk"},
    ("POST", "/v1/users/me/contact-methods"): {"type": "voice", "address": "+14155552671"},
    ("POST", "/v1/users/{user_id}/contact-methods"): {"type": "email", "address": "a@example.com"},
    ("PATCH", "/v1/users/me/contact-methods/{method_id}"): {"label": "Mobile"},
    ("PATCH", "/v1/users/{user_id}/contact-methods/{method_id}"): {"label": "Mobile"},
    ("POST", "/v1/users/me/contact-methods/{method_id}/confirm"): {"code": "123456"},
    ("POST", "/v1/users/me/notification-rules"): lambda method: {
        "contact_method_id": method.id,
        "delay_minutes": 2,
    },
    ("POST", "/v1/users/{user_id}/notification-rules"): lambda method: {
        "contact_method_id": method.id,
        "delay_minutes": 5,
    },
    ("PATCH", "/v1/users/me/notification-rules/{rule_id}"): {"delay_minutes": 3},
    ("PATCH", "/v1/users/{user_id}/notification-rules/{rule_id}"): {"min_severity": "high"},
    ("POST", "/v1/api-keys"): {"name": "k", "role": "read-only"},
    ("POST", "/v1/schedules/{schedule_id}/overrides"): {
        "user_id": 1,
        "start": "2026-11-28T00:00:00Z",
        "end": "2026-11-29T00:00:00Z",
    },
}
# "integration key": a generic integration's key sent as a bearer token, as a sender would.
CALLERS = ("anonymous", "deactivated", "user", "admin", "integration key")
# The one endpoint the integration key caller's key is for.
KEYS_OWN_ENDPOINT = "/v1/alerts/generic"
# What a caller who may call the endpoint gets with the request sent here. The login and password
# change get a wrong password (401 whoever calls); escalate has no policy to fire (409).
ALLOWED_ANSWER = {
    "/v1/auth/login/access-token": (401,),
    "/v1/users/me/password": (401,),
    "/v1/auth/reset-password/": (400,),
    "/v1/incidents/{incident_id}/escalate": (409,),
    "/v1/escalation/incidents/{incident_id}/escalate/": (409,),
    "/v1/incidents/{incident_id}/unsnooze": (409,),
    "/v1/incidents/{incident_id}/unacknowledge": (409,),
    "/v1/incidents/{incident_id}/reopen": (409,),
    "/v1/webhooks/{webhook_id}/test": (202,),
    "/v1/schedules/{schedule_id}/overrides/{override_id}": (204,),
    "/v1/alerts/generic": (202,),
    "/v1/teams/{team_id}/members/{user_id}": (200, 204),
    # The caller's own account email needs no code.
    "/v1/notification-preferences/me/{channel}/verify": (409,),
    "/v1/users/me/contact-methods/{method_id}/verify": (202,),
    "/v1/users/me/contact-methods/{method_id}/confirm": (400,),  # no such code
    "/v1/users/me/contact-methods/{method_id}": (200, 204),
    "/v1/users/{user_id}/contact-methods/{method_id}": (200, 204),
    "/v1/users/me/notification-rules/{rule_id}": (200, 204),
    "/v1/users/{user_id}/notification-rules/{rule_id}": (200, 204),
}


def route_list(app: Any) -> set[tuple[str, str]]:
    """(method, path template) of every operation the app's OpenAPI document lists."""
    return {(m.upper(), p) for p, item in app.openapi()["paths"].items() for m in item}
