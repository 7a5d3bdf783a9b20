"""The audit log: every change to the configuration (users, services, policies, schedules, …),
who made it, when, and what it was; see docs/audit.md."""
