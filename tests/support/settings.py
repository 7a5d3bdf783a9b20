"""The service's settings in tests, and the environments its processes run with."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from app.core.config import Settings

ROOT = Path(__file__).resolve().parents[2]  # the repository: app/, tests/, alembic.ini
TEST_SECRET = "test-secret-key-long-enough-for-every-hmac-algorithm-0123456789abcdef"
SIGNING_SECRET = "fault-test-signing-secret"  # WEBHOOK_SIGNING_SECRET of `service_env`


def make_settings(database_url: str, **overrides: object) -> Settings:
    """Settings for an app made in the test's process: nothing read from the environment."""
    values: dict[str, object] = {
        "database_url": database_url,
        "environment": "test",
        "secret_key": TEST_SECRET,
        "smtp_host": None,
        "signup_enabled": None,
        "database_pool_size": 5,
        # Tests run the worker's jobs themselves (harness.run_jobs) after moving the clock.
        "worker_in_process": False,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def service_env(database_url: str, **extra: str) -> dict[str, str]:
    """The caller's environment without its settings of the service, plus the test's: for
    processes that share a PostgreSQL server with others (small pools, a fast worker)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_", "SMTP_", "WORKER_", "NOTIFY_", "TEST_"))
    }
    env.update(
        DATABASE_URL=database_url,
        SECRET_KEY=TEST_SECRET,
        ENVIRONMENT="test",
        LOG_LEVEL="WARNING",
        DATABASE_POOL_SIZE="3",  # several processes share the test server
        WORKER_POLL_INTERVAL_SECONDS="0.2",
        # Load and fault tests send thousands of alerts: no per-key rate, and every new key opens
        # its own incident (no alert-storm incident), so that each alert's outcome can be checked.
        RATE_LIMIT_INGEST_PER_SECOND="0",
        INGEST_NEW_INCIDENTS_PER_MINUTE="0",
        OUTBOUND_ALLOW_PRIVATE_NETWORKS="true",
        WEBHOOK_SIGNING_SECRET=SIGNING_SECRET,
        PUBLIC_BASE_URL="http://127.0.0.1",
    )
    env.update(extra)
    return env


def clean_environment(tmp: Path, **settings: str) -> dict[str, str]:
    """An environment with nothing of the caller's shell in it (nor of a .env: run the process
    in `tmp`) apart from PATH, HOME and LANG: the service's settings are `settings` alone, and a
    fresh SECRET_KEY unless they give one. The repository comes first on PYTHONPATH."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(tmp)),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "TMPDIR": str(tmp),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "SECRET_KEY": secrets.token_urlsafe(48),
    }
    return env | settings
