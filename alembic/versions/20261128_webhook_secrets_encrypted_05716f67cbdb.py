"""webhook secrets encrypted

Revision ID: 05716f67cbdb
Revises: e13749274df0
Create Date: 2026-11-28 15:04:16.746252+00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '05716f67cbdb'
down_revision: str | None = 'e13749274df0'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Secrets are now stored encrypted (`fernet:…`, longer than before); the first characters,
    # shown in listings, get a column of their own. `incident-management migrate` encrypts the
    # secrets stored before this (a migration has no SECRET_KEY to encrypt with).
    with op.batch_alter_table(
        'webhook_subscriptions', schema=None, table_kwargs={'sqlite_autoincrement': True}
    ) as batch_op:
        batch_op.add_column(sa.Column('secret_prefix', sa.String(length=16), nullable=True))
        batch_op.alter_column('secret',
               existing_type=sa.VARCHAR(length=128),
               type_=sa.String(length=512),
               existing_nullable=False)
    op.execute("UPDATE webhook_subscriptions SET secret_prefix = substr(secret, 1, 10)")
    with op.batch_alter_table(
        'webhook_subscriptions', schema=None, table_kwargs={'sqlite_autoincrement': True}
    ) as batch_op:
        batch_op.alter_column('secret_prefix', existing_type=sa.String(length=16), nullable=False)


def downgrade() -> None:
    sealed = op.get_bind().execute(
        sa.text("SELECT count(*) FROM webhook_subscriptions WHERE secret LIKE 'fernet:%'")
    ).scalar()
    if sealed:
        raise RuntimeError(
            f"{sealed} webhook secret(s) are stored encrypted and the older schema keeps them in "
            "plain text: delete those subscriptions (or downgrade from a backup) first"
        )
    with op.batch_alter_table(
        'webhook_subscriptions', schema=None, table_kwargs={'sqlite_autoincrement': True}
    ) as batch_op:
        batch_op.alter_column('secret',
               existing_type=sa.String(length=512),
               type_=sa.VARCHAR(length=128),
               existing_nullable=False)
        batch_op.drop_column('secret_prefix')
