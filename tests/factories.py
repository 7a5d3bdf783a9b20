"""Factories: plain async functions with keyword overrides, writing through the real database."""

from __future__ import annotations

import itertools
from datetime import timedelta
from functools import cache
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.apikeys import service as apikey_service
from app.apikeys.models import ApiKey
from app.auth import security
from app.core.clock import FrozenClock
from app.core.config import Settings
from app.core.crypto import Sealer
from app.core.db import session_scope
from app.escalation.models import EscalationEvent, EscalationPolicy
from app.incidents.models import Incident, TimelineEntry
from app.integrations.models import Integration
from app.notifications.models import (
    ContactMethod,
    Notification,
    NotificationRule,
    WebhookSubscription,
)
from app.schedules.models import Schedule, ScheduleOverride
from app.services.models import Service
from app.teams.models import Team, TeamMember
from app.users import passwords
from app.users.models import User

DEFAULT_PASSWORD = "correct horse battery staple"
_counter = itertools.count(1)


@cache
def _default_password_hash() -> str:
    # Hashing with argon2 costs tens of milliseconds; the factory reuses one hash.
    return passwords.hash_password(DEFAULT_PASSWORD)


class Factory:
    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, clock: FrozenClock
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.clock = clock

    async def user(self, **overrides: Any) -> User:
        n = next(_counter)
        values: dict[str, Any] = {
            "email": f"person{n}@example.com",
            "full_name": f"Person {n}",
            "role": "user",
            "is_active": True,
            "phone": None,
            "timezone": "UTC",
            "hashed_password": _default_password_hash(),
            "token_version": 0,
            "created_at": self.clock.now(),
            "updated_at": self.clock.now(),
        }
        if "password" in overrides:
            values["hashed_password"] = passwords.hash_password(overrides.pop("password"))
        values.update(overrides)
        user = User(**values)
        async with session_scope(self.sessionmaker) as session:
            session.add(user)
        return user

    async def reload_user(self, user_id: int) -> User | None:
        async with session_scope(self.sessionmaker) as session:
            return await session.get(User, user_id)

    def token(self, user: User) -> str:
        return security.create_access_token(
            self.settings, user_id=user.id, token_version=user.token_version, now=self.clock.now()
        ).token

    async def api_key(self, **overrides: Any) -> ApiKey:
        """A personal key (user_id required); the whole key is `key.secret` (not a column)."""
        n = next(_counter)
        key = f"imsk_{n:08d}_" + "s" * 43
        values: dict[str, Any] = {
            "name": f"Key {n}",
            "prefix": key[:13],
            "key_hash": apikey_service.key_hash(key),
            "kind": "personal",
            "role": "user",
            "created_at": self.clock.now(),
        }
        values.update(overrides)
        api_key = ApiKey(**values)
        async with session_scope(self.sessionmaker) as session:
            session.add(api_key)
        api_key.secret = key  # type: ignore[attr-defined]
        return api_key

    async def team(self, **overrides: Any) -> Team:
        n = next(_counter)
        name = overrides.pop("name", f"team-{n}")
        values: dict[str, Any] = {
            "name": name,
            "name_key": name.lower(),
            "description": "",
            "is_private": False,
            "created_at": self.clock.now(),
            "updated_at": self.clock.now(),
        }
        values.update(overrides)
        team = Team(**values)
        async with session_scope(self.sessionmaker) as session:
            session.add(team)
        return team

    async def member(self, *, team_id: int, user_id: int, role: str = "responder") -> TeamMember:
        member = TeamMember(
            team_id=team_id, user_id=user_id, role=role, created_at=self.clock.now()
        )
        async with session_scope(self.sessionmaker) as session:
            session.add(member)
        return member

    async def service(self, **overrides: Any) -> Service:
        n = next(_counter)
        name = overrides.pop("name", f"service-{n}")
        values: dict[str, Any] = {
            "name": name,
            "name_key": name.lower(),
            "description": "",
            "is_active": True,
            "created_at": self.clock.now(),
            "updated_at": self.clock.now(),
        }
        values.update(overrides)
        service = Service(**values)
        async with session_scope(self.sessionmaker) as session:
            session.add(service)
        return service

    async def incident(self, **overrides: Any) -> Incident:
        """An incident as the API would leave it, with its `created` timeline entry."""
        n = next(_counter)
        now = overrides.pop("created_at", self.clock.now())
        values: dict[str, Any] = {
            "title": f"Incident {n}",
            "description": "",
            "status": "triggered",
            "severity": "medium",
            "source": "api",
            "alert_count": 1,
            "labels": {},
            "custom_fields": {},
            "escalation_level": 0,
            "created_at": now,
            "updated_at": now,
        }
        values.update(overrides)
        incident = Incident(**values)
        async with session_scope(self.sessionmaker) as session:
            session.add(incident)
            await session.flush()
            session.add(
                TimelineEntry(
                    incident_id=incident.id, type="created", actor_type="system",
                    actor_id=None, actor_name="system", data={}, created_at=now,
                )
            )  # fmt: skip
        return incident

    async def timeline_types(self, incident_id: int, *, escalation: bool = False) -> list[str]:
        """Entry types in order; without the escalation engine's `policy_applied` unless asked."""
        from sqlalchemy import select

        async with session_scope(self.sessionmaker) as session:
            rows = await session.scalars(
                select(TimelineEntry.type)
                .where(TimelineEntry.incident_id == incident_id)
                .order_by(TimelineEntry.id)
            )
            types = list(rows)
        return types if escalation else [t for t in types if t != "policy_applied"]

    async def policy(self, **overrides: Any) -> EscalationPolicy:
        """A policy as the API stores it; by default one step that only raises the severity."""
        n = next(_counter)
        values: dict[str, Any] = {
            "name": f"Policy {n}",
            "description": "",
            "priority": 100,
            "repeat_count": 0,
            "is_active": True,
            "conditions": {},
            "steps": [
                {
                    "delay_minutes": 0,
                    "targets": [],
                    "actions": [{"type": "set_severity", "severity": "high"}],
                }
            ],
            "created_at": self.clock.now(),
            "updated_at": self.clock.now(),
        }
        values.update(overrides)
        policy = EscalationPolicy(**values)
        async with session_scope(self.sessionmaker) as session:
            session.add(policy)
        return policy

    async def contact_method(self, **overrides: Any) -> ContactMethod:
        """A contact method (give `user_id`): an SMS number unless told otherwise, not verified."""
        n = next(_counter)
        values: dict[str, Any] = {
            "type": "sms", "address": f"+1415555{n % 10000:04d}", "label": "",
            "created_at": self.clock.now(), "updated_at": self.clock.now(),
        }  # fmt: skip
        values.update(overrides)
        method = ContactMethod(**values)
        async with session_scope(self.sessionmaker) as session:
            session.add(method)
        return method

    async def notification_rule(self, **overrides: Any) -> NotificationRule:
        """A rule (give `user_id` and `contact_method_id`): at once, for every severity."""
        values: dict[str, Any] = {
            "delay_minutes": 0, "min_severity": "info", "created_at": self.clock.now(),
            "updated_at": self.clock.now(),
        }  # fmt: skip
        values.update(overrides)
        rule = NotificationRule(**values)
        async with session_scope(self.sessionmaker) as session:
            session.add(rule)
        return rule

    async def escalation_event(self, **overrides: Any) -> EscalationEvent:
        """Step 1 of an incident's first run, executed now (give `incident_id`)."""
        now = self.clock.now()
        values: dict[str, Any] = {
            "policy_id": None, "run": 1, "cycle": 1, "step": 1, "status": "executed",
            "due_at": now, "executed_at": now, "delay_minutes": 0.0, "targets": [],
            "actions": [{"type": "notify"}], "notified_user_ids": [], "detail": "",
            "created_at": now,
        }  # fmt: skip
        values.update(overrides)
        event = EscalationEvent(**values)
        async with session_scope(self.sessionmaker) as session:
            session.add(event)
        return event

    async def webhook(self, **overrides: Any) -> WebhookSubscription:
        """A subscription to every incident event, to a loopback URL by default."""
        n = next(_counter)
        values: dict[str, Any] = {
            "name": f"Hook {n}",
            "description": "",
            "url": "http://127.0.0.1:9/hook",
            "events": ["triggered", "escalated", "acknowledged", "resolved", "assigned",
                       "commented", "reopened"],
            "enabled": True,
            "secret": f"whsec_test_{n}",
            "created_at": self.clock.now(),
            "updated_at": self.clock.now(),
        }  # fmt: skip
        values.update(overrides)
        values["secret_prefix"] = values["secret"][:10]
        values["secret"] = Sealer.of(self.settings).seal(values["secret"])  # stored as the app does
        hook = WebhookSubscription(**values)
        async with session_scope(self.sessionmaker) as session:
            session.add(hook)
        return hook

    async def notification(self, **overrides: Any) -> Notification:
        """A sent email notification (the delivery log's row)."""
        n = next(_counter)
        now = self.clock.now()
        values: dict[str, Any] = {
            "key": f"test:{n}", "incident_id": None, "user_id": None, "channel": "email",
            "address": "someone@example.com", "event": "escalated", "subject": f"Subject {n}",
            "body": "", "payload": {}, "status": "sent", "attempts": 1, "next_attempt_at": now,
            "sent_at": now, "created_at": now, "updated_at": now,
        }  # fmt: skip
        values.update(overrides)
        row = Notification(**values)
        async with session_scope(self.sessionmaker) as session:
            session.add(row)
        return row

    async def integration(self, **overrides: Any) -> Integration:
        """An alertmanager integration (its key is not kept: rotate to get one)."""
        n = next(_counter)
        if "service_id" not in overrides:
            overrides["service_id"] = (await self.service()).id
        values: dict[str, Any] = {
            "name": f"Integration {n}", "kind": "alertmanager", "key_hash": f"{n:064d}",
            "key_prefix": f"k{n}", "created_at": self.clock.now(), "updated_at": self.clock.now(),
        }  # fmt: skip
        values.update(overrides)
        integration = Integration(**values)
        async with session_scope(self.sessionmaker) as session:
            session.add(integration)
        return integration

    async def schedule(self, **overrides: Any) -> Schedule:
        """A schedule in UTC with one daily rotation (of `user_ids`, by default nobody)."""
        n = next(_counter)
        name = overrides.pop("name", f"Schedule {n}")
        user_ids = overrides.pop("user_ids", [])
        values: dict[str, Any] = {
            "name": name, "name_key": name.lower(), "description": "", "time_zone": "UTC",
            "layers": [{"name": "Layer", "user_ids": user_ids, "rotation_length": 1,
                        "rotation_unit": "days", "start": "2026-01-01T09:00:00",
                        "restrictions": []}],
            "created_at": self.clock.now(), "updated_at": self.clock.now(),
        }  # fmt: skip
        values.update(overrides)
        schedule = Schedule(**values)
        async with session_scope(self.sessionmaker) as session:
            session.add(schedule)
        return schedule

    async def override(self, **overrides: Any) -> ScheduleOverride:
        """An override of the next hour, for `user_id` in `schedule_id`."""
        now = self.clock.now()
        values: dict[str, Any] = {
            "start_at": now, "end_at": now + timedelta(hours=1), "created_at": now,
        }  # fmt: skip
        values.update(overrides)
        override = ScheduleOverride(**values)
        async with session_scope(self.sessionmaker) as session:
            session.add(override)
        return override
