"""request ids on timeline entries, escalation events and notifications

Revision ID: f0dff6dd9919
Revises: 05716f67cbdb
Create Date: 2026-11-28 17:50:52.187917+00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'f0dff6dd9919'
down_revision: str | None = '05716f67cbdb'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# The request that made each row (see app.logging): an API request's id, carried by the worker
# into the steps and pages it writes for that request. Nullable: older rows have none.
TABLES = ("escalation_events", "notifications", "timeline_entries")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(
            table, schema=None, table_kwargs={'sqlite_autoincrement': True}
        ) as batch_op:
            batch_op.add_column(sa.Column('request_id', sa.String(length=64), nullable=True))


def downgrade() -> None:
    for table in reversed(TABLES):
        with op.batch_alter_table(
            table, schema=None, table_kwargs={'sqlite_autoincrement': True}
        ) as batch_op:
            batch_op.drop_column('request_id')
