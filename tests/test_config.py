"""Settings: URL forms, production refusals, `.env` reading."""

from __future__ import annotations

import secrets
import uuid

import pytest
from pydantic import ValidationError

from app.core.config import DEFAULT_SECRET_KEY, DEVELOPMENT_TWILIO_TOKEN, Settings, to_async_url

STRONG = "q3Jd8-Lx0vTn2Yw_Fb7Rk4Hm9Pc1Zs6Ga5Ue"  # 36 characters, none repeated


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db/ims", "postgresql+asyncpg://u:p@db/ims"),
        ("postgres://u:p@db/ims", "postgresql+asyncpg://u:p@db/ims"),
        ("postgresql+psycopg2://u@db/ims", "postgresql+asyncpg://u@db/ims"),
        ("postgresql+asyncpg://u@db/ims", "postgresql+asyncpg://u@db/ims"),
        ("sqlite:///./data/x.db", "sqlite+aiosqlite:///./data/x.db"),
        ("sqlite+aiosqlite:///./data/x.db", "sqlite+aiosqlite:///./data/x.db"),
    ],
)
def test_database_url_forms_map_to_async_drivers(given, expected):
    assert to_async_url(given) == expected


def test_defaults_run_a_development_instance_on_sqlite(monkeypatch):
    for name in ("DATABASE_URL", "SECRET_KEY", "ENVIRONMENT", "ALGORITHM"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)
    assert settings.async_database_url == "sqlite+aiosqlite:///./data/incidents.db"
    assert settings.is_sqlite and not settings.is_production
    assert settings.algorithm == "HS256"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"secret_key": DEFAULT_SECRET_KEY}, "SECRET_KEY is the development default"),
        ({"secret_key": "short"}, "at least 32 characters"),
        ({"secret_key": "a" * 64}, "does not look random"),
        ({"secret_key": "password" * 5}, "does not look random"),
        ({"secret_key": "abcdefgh" * 4 + "abcd"}, "does not look random"),
        ({"secret_key": "0123456" * 6}, "does not look random"),
        ({"database_url": "sqlite:///x.db"}, "use PostgreSQL in production"),
    ],
)
def test_production_refuses_unsafe_values(overrides, message):
    values = {"environment": "production", "secret_key": STRONG, "database_url": "postgresql://d/x"}
    with pytest.raises(ValidationError, match=message):
        Settings(_env_file=None, **(values | overrides))


@pytest.mark.parametrize(
    "key",
    [
        *(secrets.token_hex(16) for _ in range(20)),
        secrets.token_hex(32),
        secrets.token_urlsafe(32),
        uuid.uuid4().hex,
        "correct horse battery staple, 2026",
    ],
)
def test_production_accepts_the_usual_random_keys(key):
    Settings(
        _env_file=None, environment="production", secret_key=key, database_url="postgresql://d/x"
    )


def test_production_accepts_safe_values_and_explicit_sqlite():
    Settings(
        _env_file=None, environment="production", secret_key=STRONG, database_url="postgresql://d/x"
    )
    Settings(
        _env_file=None,
        environment="production",
        secret_key=STRONG,
        database_url="sqlite:///x.db",
        allow_sqlite_in_production=True,
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("algorithm", "none"), ("algorithm", "RS256"), ("default_timezone", "Nowhere/Land"),
     ("log_level", "LOUD"), ("access_token_expire_minutes", 0)],
)  # fmt: skip
def test_bad_values_are_refused(field, value):
    with pytest.raises(ValidationError):
        Settings(_env_file=None, **{field: value})


@pytest.mark.parametrize(
    ("url", "message"),
    [("mysql://u:p@db/ims", "DATABASE_URL names 'mysql', which is not supported"),
     ("notaurl", "DATABASE_URL is not a URL"), ("", "DATABASE_URL is not a URL")],
)  # fmt: skip
def test_only_postgresql_and_sqlite_urls_are_taken(url, message):
    with pytest.raises(ValidationError, match=message):
        Settings(_env_file=None, database_url=url)


def test_env_file_and_environment_are_read(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text(
        "SECRET_KEY=from-the-env-file\nACCESS_TOKEN_EXPIRE_MINUTES=15\nLOG_LEVEL=debug\n"
    )
    monkeypatch.setenv("ACCESS_TOKEN_EXPIRE_MINUTES", "20")
    settings = Settings(_env_file=env_file)
    assert settings.secret_key == "from-the-env-file"
    assert settings.access_token_expire_minutes == 20  # the environment wins over the file
    assert settings.log_level == "DEBUG"


def test_the_example_env_file_starts_as_it_is(monkeypatch):
    """docs/configuration.md says: copy .env.example to .env. Every value in it must load."""
    from pathlib import Path

    for name in list(__import__("os").environ):
        if name in Settings.model_fields or name.lower() in Settings.model_fields:
            monkeypatch.delenv(name, raising=False)
    example = Path(__file__).resolve().parent.parent / ".env.example"
    settings = Settings(_env_file=example)
    assert settings.allow_private_outbound is True  # development default
    assert settings.signup_enabled is None


def test_empty_optional_switches_mean_unset():
    settings = Settings(_env_file=None, outbound_allow_private_networks="", signup_enabled=" ")
    assert settings.outbound_allow_private_networks is None and settings.allow_signup


def test_twilio_webhooks_have_a_development_token_and_none_in_production():
    """A reply can be tried with curl on a development server left at its defaults; anything
    configured (its own SECRET_KEY, production) checks Twilio's signatures against
    TWILIO_AUTH_TOKEN only, and refuses them all without it."""
    development = Settings(_env_file=None)
    assert development.twilio_webhook_token == DEVELOPMENT_TWILIO_TOKEN
    configured = Settings(_env_file=None, secret_key=STRONG)
    assert configured.twilio_webhook_token is None
    chosen = Settings(_env_file=None, twilio_auth_token="from-twilio")
    assert chosen.twilio_webhook_token == "from-twilio"
    production = Settings(
        _env_file=None, environment="production", secret_key=STRONG,
        database_url="postgresql://d/x",
    )  # fmt: skip
    assert production.twilio_webhook_token is None
    production_with = Settings(
        _env_file=None, environment="production", secret_key=STRONG,
        database_url="postgresql://d/x", twilio_auth_token="from-twilio",
    )  # fmt: skip
    assert production_with.twilio_webhook_token == "from-twilio"
