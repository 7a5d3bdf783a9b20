"""What every part of the walk shares: the accounts it acts as, what it made so far, small
helpers for times and payloads, and how it asks the API."""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

from tests.e2e.checks import (
    EXTERNAL,
    CheckFailed,
    Runner,
    Skipped,
    expect,
    need,
)
from tests.e2e.client import Api
from tests.e2e.session import Local
from tests.support.receivers import Received, signed_with
from tests.support.settings import ROOT

FIXTURES = ROOT / "tests" / "alerts" / "fixtures"
PROJECT_NAME = "Incident Management System"  # the default PROJECT_NAME
BERLIN = ZoneInfo("Europe/Berlin")
INCIDENT_FIELDS = {
    *("id", "title", "description", "status", "severity", "service_id", "source", "dedup_key"),
    *("alert_count", "labels", "custom_fields", "assignees", "escalation_policy_id"),
    *("escalation_level", "acknowledged_at", "acknowledged_by", "resolved_at", "resolved_by"),
    *("snoozed_until", "created_at", "updated_at", "version"),
}
USER_FIELDS = {"id", "email", "full_name", "role", "is_active", "phone", "timezone", "created_at"}


@dataclass
class Account:
    key: str
    full_name: str
    email: str
    password: str
    id: int | None = None
    token: str | None = None

    @property
    def bearer(self) -> str:
        return need(self.token, f"{self.key}'s access token")

    @property
    def uid(self) -> int:
        return need(self.id, f"{self.key}'s user id")


def new_password() -> str:
    return "pw-" + secrets.token_urlsafe(12)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def now_utc() -> datetime:
    return datetime.now(UTC)


def close_to(actual: str | None, expected: datetime, tolerance: float, what: str) -> None:
    if actual is None:
        raise CheckFailed(f"{what} is null, expected about {expected}")
    off = abs((parse_time(actual) - expected).total_seconds())
    expect(off <= tolerance, f"{what} is {actual}, {off:.0f} s from the expected {expected}")


def is_subsequence(wanted: Sequence[str], seen: Sequence[str]) -> bool:
    rest = iter(seen)
    return all(any(item == s for s in rest) for item in wanted)


def rotation_user(at: datetime, *, start: datetime, users: Sequence[int]) -> int:
    """Who a layer rotating daily at `start` (Berlin wall-clock time) names at instant `at`."""
    local = at.astimezone(BERLIN)
    turns = (local.date() - start.date()).days
    if local.time() < start.time():
        turns -= 1
    return users[turns % len(users)]


def find_key(data: Any, key: str) -> Any:
    """The value of `key` in nested JSON (the first found), or None."""
    if isinstance(data, dict):
        if key in data:
            return data[key]
        data = list(data.values())
    if isinstance(data, list):
        for item in data:
            found = find_key(item, key)
            if found is not None:
                return found
    return None


def load_fixture(name: str) -> Any:
    path = FIXTURES / name
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise CheckFailed(f"fixture {path} cannot be read: {exc}") from None


def plain_text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    return str(part.get_content()) if isinstance(part, EmailMessage) else ""


def json_body_matches(request: Received, check: Callable[[Any], bool]) -> bool:
    try:
        return bool(check(json.loads(request["body"])))
    except (ValueError, KeyError, TypeError):
        return False


def delivery_of(event: str, incident_id: int, path: str) -> Callable[[Received], bool]:
    """Matches the delivery of `event` about one incident to `path`."""

    def matches(request: Received) -> bool:
        return request["path"] == path and json_body_matches(
            request, lambda b: b["event"] == event and b["incident"]["id"] == incident_id
        )

    return matches


def verify_signed(request: Received, secret: str) -> None:
    """The delivery is signed with `secret`, and recently (receivers refuse old timestamps)."""
    timestamp = request["headers"].get("x-timestamp", "")
    expect(timestamp.isdigit(), f"no X-Timestamp: headers {sorted(request['headers'])}")
    expect(abs(time.time() - int(timestamp)) <= 300, f"X-Timestamp {timestamp} is not recent")
    sent = request["headers"].get("x-signature")
    expect(signed_with(request, secret), f"X-Signature {sent} does not verify with the secret")


class WalkBase:
    """The walk's state and the helpers of its steps; each area of the walk (tests/e2e/*.py) adds
    its checks to it, and tests/e2e/walk.py puts them together in order."""

    def __init__(
        self,
        runner: Runner,
        api: Api,
        *,
        local: Local | None,
        admin_login: tuple[str, str] | None,
    ) -> None:
        self.runner, self.api, self.local = runner, api, local
        self.admin_login = admin_login
        self.run = run = secrets.token_hex(3)  # names and emails unique to this run
        self.ada = Account("ada", "Ada Admin", f"Ada.{run}@Example.com", new_password())
        self.bob = Account("bob", "Bob User", f"bob.{run}@example.com", new_password())
        self.carol = Account("carol", "Carol Oncall", f"carol.{run}@example.com", new_password())
        self.dave = Account("dave", "Dave Oncall", f"dave.{run}@example.com", new_password())
        self.ids: dict[str, int] = {}  # what the walk made, by name
        self.keys: dict[str, str] = {}  # integration keys by kind
        self.texts: dict[str, str] = {}  # secrets, tokens and versions seen on the way
        berlin_today = now_utc().astimezone(BERLIN).date()
        self.layer_start = datetime.combine(berlin_today - timedelta(days=14), clock_time(9))

    # -- helpers -----------------------------------------------------------------------------------

    def check(self, name: str, group: str) -> contextlib.AbstractContextManager[None]:
        return self.runner.check(name, group)

    def needs_local(self) -> Local:
        if self.local is None:
            raise Skipped(EXTERNAL)
        return self.local

    def id_of(self, name: str) -> int:
        return need(self.ids.get(name), f"the id of {name}")

    def text(self, name: str) -> str:
        return need(self.texts.get(name), name)

    def key(self, kind: str) -> str:
        return need(self.keys.get(kind), f"the {kind} integration key")

    def login(self, account: Account, password: str | None = None) -> str:
        form = {"username": account.email, "password": password or account.password}
        token = self.api.post("/v1/auth/login/access-token", data=form)["access_token"]
        expect(isinstance(token, str) and token, f"no access_token for {account.key}")
        return str(token)

    def incident(self, incident_id: int, token: str | None = None) -> dict[str, Any]:
        found: dict[str, Any] = self.api.get(
            f"/v1/incidents/{incident_id}", token=token or self.ada.bearer
        )
        return found

    def act(self, incident_id: int, action: str, **kwargs: Any) -> Any:
        """POST /v1/incidents/{id}/{action}, as ada unless `token` says otherwise."""
        kwargs.setdefault("token", self.ada.bearer)
        return self.api.post(f"/v1/incidents/{incident_id}/{action}", **kwargs)

    def page(self, path: str, token: str, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.api.get(
            path, token=token, params={"limit": 500, **params}
        )["items"]
        return items

    def timeline(self, incident_id: int) -> list[dict[str, Any]]:
        return self.page(f"/v1/incidents/{incident_id}/timeline", self.ada.bearer)

    def events(self, incident_id: int) -> list[dict[str, Any]]:
        return self.page(f"/v1/incidents/{incident_id}/escalation-events", self.ada.bearer)

    def alert(self, kind: str, payload: Any, **kwargs: Any) -> list[dict[str, Any]]:
        """Send to /v1/alerts/{kind} with the integration's key; answers the `incidents`."""
        kwargs.setdefault("headers", {"X-Integration-Key": self.key(kind)})
        answer = self.api.post(f"/v1/alerts/{kind}", json=payload, expect=202, **kwargs)
        incidents: list[dict[str, Any]] = answer["incidents"]
        return incidents

    def on_call_now(self, at: datetime) -> int:
        users = [self.carol.uid, self.dave.uid]
        return rotation_user(at, start=self.layer_start, users=users)
