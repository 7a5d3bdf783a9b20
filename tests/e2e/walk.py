"""The walk through the product: every area's checks, in the order a team meets them."""

from __future__ import annotations

from tests.e2e.accounts import Accounts
from tests.e2e.alerts import Alerts
from tests.e2e.analytics import Analytics
from tests.e2e.cleanup import Cleanup
from tests.e2e.escalation import Escalation
from tests.e2e.health import Health
from tests.e2e.incidents import Incidents
from tests.e2e.notifications import Notifications
from tests.e2e.schedules import Schedules
from tests.e2e.services import Services


class Walk(
    Health,
    Accounts,
    Services,
    Alerts,
    Incidents,
    Schedules,
    Notifications,
    Escalation,
    Analytics,
    Cleanup,
):
    """Every endpoint group, in the order a team meets them; each step is a check."""

    def run_all(self) -> None:
        sections = (
            self.health_and_docs,
            self.auth,
            self.users,
            self.api_keys,
            self.teams,
            self.password_recovery,
            self.services,
            self.integrations,
            self.alerts,
            self.pagerduty,
            self.incidents,
            self.lifecycle,
            self.schedules,
            self.calendars,
            self.preferences,
            self.contact_methods,
            self.escalation,
            self.delivery_log,
            self.analytics,
            self.webhooks,
            self.snooze_expiry,
            self.metrics,
            self.deletions,
            self.no_secret_in_logs,
        )
        for section in sections:
            section()
