"""Every model, imported in one place so that metadata (and Alembic) sees all tables."""

from app.analytics.models import AnalyticsSnapshot
from app.apikeys.models import ApiKey
from app.audit import recording  # noqa: F401  (the session records audited changes)
from app.audit.models import AuditEntry
from app.auth.models import PasswordResetToken
from app.core.db import Base
from app.core.ratelimit import RateLimitState
from app.escalation.models import EscalationEvent, EscalationPolicy
from app.incidents.models import Assignment, Comment, Incident, TimelineEntry
from app.integrations.models import Integration
from app.notifications.models import (
    ContactVerification,
    Notification,
    NotificationPreference,
    SmsOptOut,
    SmsReplyCode,
    WebhookSubscription,
)
from app.schedules.models import Schedule, ScheduleChange, ScheduleOverride, UserCalendar
from app.services.models import Service
from app.teams.models import Team, TeamMember
from app.ui.models import UiSession
from app.users.models import User

__all__ = [
    "AnalyticsSnapshot",
    "ApiKey",
    "Assignment",
    "AuditEntry",
    "Base",
    "Comment",
    "ContactVerification",
    "EscalationEvent",
    "EscalationPolicy",
    "Incident",
    "Integration",
    "Notification",
    "NotificationPreference",
    "PasswordResetToken",
    "RateLimitState",
    "Schedule",
    "ScheduleChange",
    "ScheduleOverride",
    "Service",
    "SmsOptOut",
    "SmsReplyCode",
    "Team",
    "TeamMember",
    "TimelineEntry",
    "UiSession",
    "User",
    "UserCalendar",
    "WebhookSubscription",
]

# SQLite reuses the highest deleted rowid unless a table says AUTOINCREMENT: a deleted user's id
# (and so their old tokens) must never come back as someone else's.
for _table in Base.metadata.tables.values():
    if "id" in _table.c and _table.c.id.primary_key:
        _table.dialect_options["sqlite"]["autoincrement"] = True
