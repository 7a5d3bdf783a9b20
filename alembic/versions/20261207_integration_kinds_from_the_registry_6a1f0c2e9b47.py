"""integration kinds from the registry: the kind's check constraint goes

Which kinds exist is the registry of alert sources (app/alerts/sources/), checked when an
integration is created; a database constraint listing them would need a migration for every new
source.

Revision ID: 6a1f0c2e9b47
Revises: 38eb6173c9f1
Create Date: 2026-12-07 04:00:00.000000+00:00

"""
from collections.abc import Sequence

from alembic import op


revision: str = '6a1f0c2e9b47'
down_revision: str | None = '38eb6173c9f1'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = "kind IN ('elastic', 'alertmanager', 'grafana', 'pagerduty', 'generic')"


def upgrade() -> None:
    with op.batch_alter_table(
        'integrations', schema=None, table_kwargs={'sqlite_autoincrement': True}
    ) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_integrations_kind'), type_='check')


def downgrade() -> None:
    with op.batch_alter_table(
        'integrations', schema=None, table_kwargs={'sqlite_autoincrement': True}
    ) as batch_op:
        batch_op.create_check_constraint(batch_op.f('ck_integrations_kind'), KINDS)
