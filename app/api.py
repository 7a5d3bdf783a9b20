"""The `/v1` API: each domain's router, included once (the alert sources' endpoints are installed
first, by app.alerts.router: they are the busiest)."""

from fastapi import APIRouter

from app.actions.router import router as actions_router
from app.analytics.router import router as analytics_router
from app.apikeys.router import router as apikeys_router
from app.audit.router import router as audit_router
from app.auth.router import router as auth_router
from app.escalation.router import incidents as incident_escalation_router
from app.escalation.router import legacy as legacy_escalation_router
from app.escalation.router import policies as policies_router
from app.incidents.router import router as incidents_router
from app.integrations.router import router as integrations_router
from app.notifications import router as notifications
from app.schedules.router import oncall_router
from app.schedules.router import router as schedules_router
from app.services.router import router as services_router
from app.slack.router import router as slack_router
from app.teams.router import router as teams_router
from app.telephony.router import router as telephony_router
from app.users.router import router as users_router

api_router = APIRouter(prefix="/v1")
# Routes are matched in order, one after another: the busiest (incidents) first.
api_router.include_router(incidents_router)
api_router.include_router(incident_escalation_router)
api_router.include_router(auth_router)
api_router.include_router(users_router)
api_router.include_router(teams_router)
api_router.include_router(services_router)
api_router.include_router(integrations_router)
api_router.include_router(policies_router)
api_router.include_router(notifications.incident_notifications)
api_router.include_router(notifications.preferences)
api_router.include_router(notifications.contact_routes)
api_router.include_router(notifications.notifications)
api_router.include_router(notifications.webhooks)
api_router.include_router(schedules_router)
api_router.include_router(oncall_router)
api_router.include_router(analytics_router)
api_router.include_router(audit_router)
api_router.include_router(apikeys_router)
# Twilio's webhooks (outside the OpenAPI document: Twilio calls them, not API clients).
api_router.include_router(telephony_router)
api_router.include_router(actions_router)
# Slack's calls (the Slack app's buttons and slash command), not in the OpenAPI document.
api_router.include_router(slack_router)
# The original API's escalation paths, deprecated aliases: last, as the least used.
api_router.include_router(legacy_escalation_router)
