"""api keys: personal and organisation keys, and the service accounts of organisation keys

`api_keys` holds each key's public prefix and the SHA-256 of the whole key (never the key);
`users.is_service_account` marks the account an organisation key acts as. Downgrading drops the
keys and deletes the service accounts (they could do nothing without their keys).

Revision ID: 116e17e2d605
Revises: b8e31f6c2a17
Create Date: 2026-12-08 09:00:00.000000+00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "116e17e2d605"
down_revision: str | None = "b8e31f6c2a17"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# SQLite rebuilds a table to drop a column: it must stay AUTOINCREMENT (ids never reused).
AUTOINCREMENT = {"sqlite_autoincrement": True}


def upgrade() -> None:
    with op.batch_alter_table("users", table_kwargs=AUTOINCREMENT) as batch_op:
        batch_op.add_column(
            sa.Column(
                "is_service_account", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )
    op.create_table(
        "api_keys",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("team_id", ID, nullable=True),
        sa.Column("team_role", sa.String(length=16), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_from", sa.String(length=64), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", ID, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('personal', 'organisation')", name=op.f("ck_api_keys_kind")),
        sa.CheckConstraint("role IN ('admin', 'user', 'read-only')", name=op.f("ck_api_keys_role")),
        sa.CheckConstraint(
            "team_role IS NULL OR team_role IN ('manager', 'responder', 'observer')",
            name=op.f("ck_api_keys_team_role"),
        ),
        sa.CheckConstraint(
            "(team_id IS NULL) = (team_role IS NULL)", name=op.f("ck_api_keys_team_scope")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_keys_user_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_api_keys_team_id_teams"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_api_keys_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_user_id"), ["user_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_api_keys_team_id"), ["team_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_api_keys_created_by"), ["created_by"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_created_by"))
        batch_op.drop_index(batch_op.f("ix_api_keys_team_id"))
        batch_op.drop_index(batch_op.f("ix_api_keys_user_id"))
    op.drop_table("api_keys")
    op.execute("DELETE FROM users WHERE is_service_account")
    with op.batch_alter_table("users", table_kwargs=AUTOINCREMENT) as batch_op:
        batch_op.drop_column("is_service_account")
