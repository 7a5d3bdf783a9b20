"""Infrastructure every domain stands on: settings, the database, time, errors, logging,
metrics, limits, HTTP plumbing. Nothing here imports a domain package (see docs/architecture.md)."""
