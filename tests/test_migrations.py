"""The Alembic history builds exactly the models' schema, and unwinds, on both databases."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.core.db import create_engine
from app.core.migrations import downgrade_connection, upgrade_connection
from app.models import Base
from tests.support.settings import make_settings


def _diff(connection, metadata=Base.metadata):
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return compare_metadata(context, metadata)


async def test_upgrade_from_empty_gives_the_models_schema_and_downgrade_unwinds(
    fresh_database_url,
):
    engine = create_engine(make_settings(fresh_database_url))
    try:
        async with engine.begin() as connection:
            await upgrade_connection(connection)
            assert await connection.run_sync(_diff) == []
            tables = set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
            assert tables == set(Base.metadata.tables) | {"alembic_version"}

        async with engine.begin() as connection:
            await downgrade_connection(connection, "base")
            left = set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
            assert left <= {"alembic_version"}

        # And up again: the history is repeatable.
        async with engine.begin() as connection:
            await upgrade_connection(connection)
            assert await connection.run_sync(_diff) == []
    finally:
        await engine.dispose()


async def test_drift_is_detected(fresh_database_url):
    """The comparison above can fail: a model change without a migration shows up."""
    from sqlalchemy import Column, MetaData, String

    changed = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["users"].append_column(Column("nickname", String(20)))
    engine = create_engine(make_settings(fresh_database_url))
    try:
        async with engine.begin() as connection:
            await upgrade_connection(connection)
            diff = await connection.run_sync(_diff, changed)
        assert any(op[0] == "add_column" and op[3].name == "nickname" for op in diff)
    finally:
        await engine.dispose()


async def test_sqlite_ids_are_never_reused(backend, fresh_database_url):
    """Every table with an id is AUTOINCREMENT on SQLite, including ones rebuilt by batch mode."""
    from sqlalchemy import text

    if backend != "sqlite":
        return  # PostgreSQL sequences never hand out an id twice
    engine = create_engine(make_settings(fresh_database_url))
    try:
        async with engine.begin() as connection:
            await upgrade_connection(connection)
            rows = (await connection.execute(text("SELECT name, sql FROM sqlite_master"))).all()
    finally:
        await engine.dispose()
    schemas = {name: sql for name, sql in rows if sql}
    with_ids = [t.name for t in Base.metadata.sorted_tables if "id" in t.c and t.c.id.primary_key]
    assert with_ids
    assert [n for n in with_ids if "AUTOINCREMENT" not in schemas[n]] == []


def test_upgrading_keeps_deliveries_linked_and_encrypts_older_secrets(
    fresh_database_url, monkeypatch
):
    """`incident-management migrate` over a database with a subscription from before secrets were
    encrypted: its queued delivery still points at it (on SQLite, altering a table copies it and
    drops the original, which with foreign keys on would unlink every delivery), and its secret
    ends up encrypted, still the same secret."""
    from datetime import UTC, datetime

    from sqlalchemy import insert, select, text

    from app import migrations
    from app.core.crypto import Sealer
    from app.notifications.models import Notification, WebhookSubscription
    from tests.support.settings import TEST_SECRET

    monkeypatch.setenv("DATABASE_URL", fresh_database_url)
    monkeypatch.setenv("SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("ENVIRONMENT", "test")
    migrations.upgrade("e13749274df0")  # the revision before encryption at rest
    now = datetime(2026, 11, 1, tzinfo=UTC)

    async def seed() -> None:
        engine = create_engine(make_settings(fresh_database_url))
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO webhook_subscriptions (id, name, description, url, events, "
                    "enabled, secret, created_at, updated_at) VALUES (1, 'old', '', "
                    "'https://hooks.example.com/in', '[\"triggered\"]', true, 'whsec_plain_old', "
                    ":now, :now)"
                ),
                {"now": now},
            )
            await connection.execute(
                insert(Notification.__table__).values(
                    key="queued", channel="webhook", webhook_id=1, address="x", event="triggered",
                    subject="s", body="", payload={}, status="pending", attempts=0,
                    next_attempt_at=now, created_at=now, updated_at=now,
                )
            )  # fmt: skip
        await engine.dispose()

    async def stored() -> tuple[int | None, str, str]:
        engine = create_engine(make_settings(fresh_database_url))
        async with engine.connect() as connection:
            webhook_id = await connection.scalar(select(Notification.webhook_id))
            row = (
                await connection.execute(
                    select(WebhookSubscription.secret, WebhookSubscription.secret_prefix)
                )
            ).one()
        await engine.dispose()
        return webhook_id, row.secret, row.secret_prefix

    asyncio.run(seed())
    migrations.upgrade()
    webhook_id, secret, prefix = asyncio.run(stored())
    assert webhook_id == 1
    assert secret.startswith("fernet:") and Sealer(TEST_SECRET).open(secret) == "whsec_plain_old"
    assert prefix == "whsec_plai"


def test_upgrading_grandfathers_the_addresses_in_use(fresh_database_url, monkeypatch):
    """Verified addresses arrive with a migration that must not stop anyone's pages: every
    explicit email or SMS address of a preference, and every profile phone, in use before it ran
    is verified by it (`verified_via = 'migration'`, nobody's `verified_by`); slack, webhook and
    addresses left empty are not."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    from app import migrations
    from tests.support.settings import TEST_SECRET

    monkeypatch.setenv("DATABASE_URL", fresh_database_url)
    monkeypatch.setenv("SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("ENVIRONMENT", "test")
    migrations.upgrade("b3d9e1f47a20")  # the revision before verified addresses
    now = datetime(2026, 12, 1, tzinfo=UTC)

    async def seed() -> None:
        engine = create_engine(make_settings(fresh_database_url))
        async with engine.begin() as connection:
            for uid, phone in ((1, "+15550000001"), (2, None)):
                await connection.execute(
                    text(
                        "INSERT INTO users (id, email, full_name, role, is_active, phone, "
                        "timezone, hashed_password, token_version, created_at, updated_at) "
                        "VALUES (:id, :email, 'x', 'user', true, :phone, 'UTC', 'x', 0, :now, :now)"
                    ),
                    {"id": uid, "email": f"u{uid}@example.com", "phone": phone, "now": now},
                )
            for uid, channel, address in (
                (1, "email", "pager@elsewhere.example"), (1, "sms", "+15550000001"),
                (2, "sms", "+15550000002"), (2, "email", None),
                (2, "slack", "https://hooks.slack.example/x"),
            ):  # fmt: skip
                await connection.execute(
                    text(
                        "INSERT INTO notification_preferences (user_id, channel, enabled, address, "
                        "min_severity, events, created_at, updated_at) VALUES (:uid, :channel, "
                        "true, :address, 'info', '[]', :now, :now)"
                    ),
                    {"uid": uid, "channel": channel, "address": address, "now": now},
                )
        await engine.dispose()

    async def verified() -> list[tuple[int, str, str, str, object, bool]]:
        engine = create_engine(make_settings(fresh_database_url))
        async with engine.connect() as connection:
            found = await connection.execute(
                text(
                    "SELECT user_id, channel, address, verified_via, verified_by, "
                    "verified_at IS NOT NULL FROM contact_verifications "
                    "ORDER BY user_id, channel, address"
                )
            )
            result = [tuple(row) for row in found]
        await engine.dispose()
        return result

    asyncio.run(seed())
    migrations.upgrade()
    assert asyncio.run(verified()) == [
        (1, "email", "pager@elsewhere.example", "migration", None, True),
        (1, "sms", "+15550000001", "migration", None, True),  # the profile's and the preference's
        (2, "sms", "+15550000002", "migration", None, True),
    ]
