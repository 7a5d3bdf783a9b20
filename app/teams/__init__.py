"""Teams: who owns which services, schedules, policies and webhooks, and each member's role."""
