"""Settings, read from the environment and a `.env` file (names as the spec's README has them)."""

from __future__ import annotations

import re
import sys
import zoneinfo
from enum import StrEnum
from functools import cached_property
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET_KEY = "dev-secret-key-change-me-in-production-0000000000"  # noqa: S105
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/incidents.db"
# On a development server left at its defaults (not production, the development SECRET_KEY, no
# TWILIO_AUTH_TOKEN), Twilio's webhooks are checked against this token, so that a text reply can
# be tried with curl (the README's walk-through does). Such a server's access tokens are signed
# with a key as public, so this opens nothing more. Anything configured has no such default:
# without TWILIO_AUTH_TOKEN, Twilio's webhooks are refused.
DEVELOPMENT_TWILIO_TOKEN = "development-only"  # noqa: S105
SUPPORTED_JWT_ALGORITHMS = ("HS256", "HS384", "HS512")
DATABASE_URL_FORMS = (
    "use postgresql://user:password@host:5432/database or sqlite:///path/to/file.db"
)


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class MetricsAccess(StrEnum):
    open = "open"
    token = "token"  # noqa: S105 - the name of a mode, not a secret
    off = "off"


class LogFormat(StrEnum):
    json = "json"
    text = "text"


class SmtpSecurity(StrEnum):
    none = "none"
    starttls = "starttls"
    tls = "tls"


def _obviously_not_random(key: str) -> bool:
    """Too few different characters (fewer than 8), or one piece repeated (`password` × 5).
    Random keys pass whatever their alphabet: `secrets.token_hex(16)`, `token_urlsafe(32)`,
    uuid4."""
    if len(set(key)) < 8:
        return True
    return any(
        key == (key[:p] * (len(key) // p + 1))[: len(key)] for p in range(1, len(key) // 2 + 1)
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    project_name: str = "Incident Management System"
    environment: Environment = Environment.development
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # One JSON object a line, or readable text. Unset: JSON in production, text otherwise.
    log_format: LogFormat | None = None
    # A line per request (`app.access`: method, route, status, duration, user, request id).
    access_log: bool = True

    # Who may read /metrics: `open`, `token` (Authorization: Bearer METRICS_TOKEN) or `off`.
    metrics_access: MetricsAccess = MetricsAccess.open
    metrics_token: str | None = None

    database_url: str = DEFAULT_DATABASE_URL
    database_pool_size: int = Field(default=10, ge=1, le=200)
    database_echo: bool = False
    allow_sqlite_in_production: bool = False

    secret_key: str = DEFAULT_SECRET_KEY
    # Former SECRET_KEYs (comma-separated): secrets stored encrypted under them stay readable.
    previous_secret_keys: str = ""
    algorithm: str = "HS256"
    access_token_expire_minutes: int = Field(default=60, ge=1, le=60 * 24 * 30)
    # The web console's sign-in lasts this long (then the login page again); logging out ends it.
    ui_session_hours: int = Field(default=12, ge=1, le=24 * 30)
    password_reset_token_expire_minutes: int = Field(default=60, ge=5, le=60 * 24)
    # Unset: open in development, closed in production (create the first admin with the CLI).
    signup_enabled: bool | None = None

    # A trigger this many minutes after its incident was resolved reopens it (0: never).
    reopen_window_minutes: int = Field(default=0, ge=0, le=60 * 24 * 7)

    # The audit log keeps its entries this many days (0: for ever); the worker deletes older ones.
    audit_retention_days: int = Field(default=365, ge=0, le=36500)

    worker_in_process: bool = True
    worker_poll_interval_seconds: float = Field(default=1.0, gt=0, le=60)
    worker_batch_size: int = Field(default=500, ge=1, le=5000)
    # `incident-management worker` serves its own /metrics on this port (unset: it does not), on
    # this address (no authentication: keep it private).
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    worker_metrics_host: str = "127.0.0.1"

    public_base_url: str = "http://127.0.0.1:8000"
    default_timezone: str = "UTC"

    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_security: SmtpSecurity = SmtpSecurity.none
    smtp_from: str = "incidents@localhost"
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    # SMS and phone calls over Twilio's Messages and Calls APIs (TWILIO_BASE_URL: another host
    # that speaks them). Calls come from TWILIO_FROM_NUMBER. See docs/twilio.md.
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_from_number: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_base_url: str = "https://api.twilio.com"
    # Whether the service answers STOP, START and HELP itself. Twilio answers them by default
    # (its own opt-out handling): leave this off unless that handling is turned off.
    twilio_keyword_replies: bool = False

    # The Slack app (buttons, message updates, /incident): on when both are set.
    slack_bot_token: str | None = None
    slack_signing_secret: str | None = None
    slack_api_url: str = "https://slack.com/api/"

    # Delivery of notifications.
    notify_max_attempts: int = Field(default=6, ge=1, le=20)
    # Waits between attempts: about base, 4 × base, 16 × base … never more than max (±20 %).
    notify_retry_base_seconds: float = Field(default=30.0, gt=0, le=3600)
    notify_retry_max_seconds: float = Field(default=3600.0, gt=0, le=24 * 3600)
    notify_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    notify_read_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # Signs policy-step webhooks and personal webhook channels (subscriptions have their own).
    webhook_signing_secret: str | None = None
    # Unset: allowed in development and test, refused in production.
    outbound_allow_private_networks: bool | None = None

    # Abuse limits, kept in the database (table rate_limits) so every API process agrees; 0: off.
    # Login attempts per client address, and per account: this many attempts without a success
    # lock the account's logins for LOGIN_LOCKOUT_MINUTES (the same answer for unknown emails).
    rate_limit_login_per_ip_per_minute: int = Field(default=30, ge=0, le=100_000)
    login_lockout_failures: int = Field(default=10, ge=0, le=1000)
    login_lockout_minutes: int = Field(default=15, ge=1, le=24 * 60)
    # Verification codes a user may ask to be sent to their addresses (email and SMS); never off,
    # as each code allows five guesses.
    rate_limit_verification_per_user_per_hour: int = Field(default=5, ge=1, le=1000)
    # Password recovery emails per account, and recovery requests and resets per client address.
    rate_limit_recovery_per_account_per_hour: int = Field(default=3, ge=0, le=1000)
    rate_limit_recovery_per_ip_per_hour: int = Field(default=20, ge=0, le=100_000)
    # Alerts per integration key (each alert of a request counts): a sustained rate, and a
    # burst taken at once (also the most alerts one request may carry).
    rate_limit_ingest_per_second: float = Field(default=50.0, ge=0, le=1_000_000)  # or ≥ 0.001
    rate_limit_ingest_burst: int = Field(default=1000, ge=1, le=1_000_000)
    # New incidents an integration may open per minute; past it, new alerts are kept on one
    # "alert storm" incident of its service instead of each opening (and paging) its own. 0: off.
    ingest_new_incidents_per_minute: int = Field(default=100, ge=0, le=1_000_000)

    # Browsers may call the API from these origins (comma-separated, e.g. https://ops.example.com;
    # `*` for any). Empty: no cross-origin access (the default).
    cors_allow_origins: str = ""
    # Host headers the service answers to (comma-separated; `*.example.com` allowed). `*`: any.
    trusted_hosts: str = "*"

    @field_validator(
        "signup_enabled",
        "outbound_allow_private_networks",
        "log_format",
        "metrics_token",
        "worker_metrics_port",
        mode="before",
    )
    @classmethod
    def _empty_means_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        url = to_async_url(value.strip())
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise ValueError(f"DATABASE_URL is not a URL; {DATABASE_URL_FORMS}") from None
        if not url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError(
                f"DATABASE_URL names {parsed.get_backend_name()!r}, which is not supported; "
                f"{DATABASE_URL_FORMS}"
            )
        return value.strip()

    @field_validator("rate_limit_ingest_per_second")
    @classmethod
    def _off_or_measurable(cls, value: float) -> float:
        if 0 < value < 0.001:
            raise ValueError("RATE_LIMIT_INGEST_PER_SECOND is 0 (off) or at least 0.001")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, value: str) -> str:
        if value not in SUPPORTED_JWT_ALGORITHMS:
            raise ValueError(f"ALGORITHM must be one of {', '.join(SUPPORTED_JWT_ALGORITHMS)}")
        return value

    @field_validator("default_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        if value not in zoneinfo.available_timezones():
            raise ValueError(f"DEFAULT_TIMEZONE {value!r} is not an IANA time zone")
        return value

    @field_validator("public_base_url", "twilio_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _metrics_token_when_needed(self) -> Settings:
        if self.metrics_access == MetricsAccess.token and len(self.metrics_token or "") < 16:
            raise ValueError("METRICS_ACCESS=token needs a METRICS_TOKEN of at least 16 characters")
        return self

    @property
    def slack_enabled(self) -> bool:
        return bool(self.slack_bot_token and self.slack_signing_secret)

    @property
    def json_logs(self) -> bool:
        if self.log_format is not None:
            return self.log_format == LogFormat.json
        return self.environment == Environment.production

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment != Environment.production:
            return self
        if self.secret_key == DEFAULT_SECRET_KEY:
            raise ValueError(
                "SECRET_KEY is the development default; set a random SECRET_KEY "
                '(for example: python -c "import secrets; print(secrets.token_urlsafe(48))")'
            )
        if len(self.secret_key) < 32:
            raise ValueError("SECRET_KEY must be at least 32 characters in production")
        if _obviously_not_random(self.secret_key):
            raise ValueError(
                "SECRET_KEY does not look random (few different characters, or a repeated piece); "
                'make one with: python -c "import secrets; print(secrets.token_urlsafe(48))"'
            )
        if self.is_sqlite and not self.allow_sqlite_in_production:
            raise ValueError(
                "DATABASE_URL points at SQLite; use PostgreSQL in production "
                "or set ALLOW_SQLITE_IN_PRODUCTION=true to accept a single-node SQLite deployment"
            )
        return self

    @property
    def previous_secret_key_list(self) -> list[str]:
        return [key.strip() for key in self.previous_secret_keys.split(",") if key.strip()]

    @property
    def cors_origins(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_allow_origins.split(",") if o.strip()]

    @property
    def allowed_hosts(self) -> list[str]:
        return [h.strip() for h in self.trusted_hosts.split(",") if h.strip()] or ["*"]

    @cached_property
    def async_database_url(self) -> str:
        return to_async_url(self.database_url)

    @property
    def is_sqlite(self) -> bool:
        return self.async_database_url.startswith("sqlite")

    @property
    def allow_signup(self) -> bool:
        return self.signup_enabled if self.signup_enabled is not None else not self.is_production

    @property
    def allow_private_outbound(self) -> bool:
        """May notifications go to private, loopback and link-local addresses (and plain http)?"""
        if self.outbound_allow_private_networks is not None:
            return self.outbound_allow_private_networks
        return not self.is_production

    @property
    def is_production(self) -> bool:
        return self.environment == Environment.production

    @property
    def twilio_webhook_token(self) -> str | None:
        """What Twilio's webhook signatures are checked against (None: refuse them all)."""
        if self.twilio_auth_token:
            return self.twilio_auth_token
        left_at_defaults = not self.is_production and self.secret_key == DEFAULT_SECRET_KEY
        return DEVELOPMENT_TWILIO_TOKEN if left_at_defaults else None


def to_async_url(url: str) -> str:
    """Map the spec's `postgresql://…` and plain `sqlite:///…` forms to the async drivers."""
    for prefix, replacement in (
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgresql+psycopg2://", "postgresql+asyncpg://"),
        ("postgresql+psycopg://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(prefix):
            return replacement + url[len(prefix) :]
    return url


def settings_or_exit() -> Settings:
    """Settings from the environment; a refused configuration exits with status 2 and two lines:
    what is wrong (every refused setting, named as its environment variable), and where to fix it.
    """
    try:
        return Settings()
    except ValidationError as exc:
        print(
            f"Refusing to start: {describe_invalid(exc)}.",
            "Correct it in the environment or in .env, then run the command again.",
            sep="\n",
            file=sys.stderr,
        )
        raise SystemExit(2) from None


# Settings whose values are never printed back: secrets, and URLs that may carry a password.
_SECRET_NAME = re.compile(r"secret|password|token|key|_url$|_sid$", re.IGNORECASE)


def describe_invalid(error: ValidationError) -> str:
    """`ENVIRONMENT='prod': Input should be …; DATABASE_POOL_SIZE=…: …` on one line."""
    parts = []
    for e in error.errors():
        message = str(e["msg"]).removeprefix("Value error, ").rstrip(".")
        if not e["loc"]:  # a check across settings: its message names them
            parts.append(message)
            continue
        name = "_".join(map(str, e["loc"])).upper()
        given = e.get("input")
        if isinstance(given, str) and not _SECRET_NAME.search(name):
            shown = given if len(given) <= 40 else given[:37] + "..."
            parts.append(f"{name}={shown!r}: {message}")
        elif message.startswith(name):
            parts.append(message)
        else:
            parts.append(f"{name}: {message}")
    return "; ".join(parts)
