"""Cross-domain steps, each written once: what happens when an incident changes state, when alerts
arrive, when a step comes due, when a user leaves, when a password is recovered.

The API's routers, the console, ingestion and the worker call these (or a single domain's service
for what concerns that domain alone); domains never call each other's services. See
docs/architecture.md.
"""
