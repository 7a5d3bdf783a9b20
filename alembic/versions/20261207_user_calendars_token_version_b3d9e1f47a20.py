"""user calendars keep the token version they were made under

A user's own calendar feed ends, as their sign-in tokens do, when they change their password or
are deactivated: the feed stores the user's token_version when its secret was made. Feeds made
before keep working until then (they take the user's current version).

Revision ID: b3d9e1f47a20
Revises: 6a1f0c2e9b47
Create Date: 2026-12-07 14:45:00.000000+00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'b3d9e1f47a20'
down_revision: str | None = '6a1f0c2e9b47'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('user_calendars', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('token_version', sa.Integer(), server_default='0', nullable=False)
        )
    op.execute(
        "UPDATE user_calendars SET token_version = "
        "(SELECT users.token_version FROM users WHERE users.id = user_calendars.user_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table('user_calendars', schema=None) as batch_op:
        batch_op.drop_column('token_version')
