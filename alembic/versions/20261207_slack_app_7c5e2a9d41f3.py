"""slack app: a service's Slack channel, and the Slack messages kept to be updated

`services.slack_channel` names the channel where the Slack app posts a service's new incidents;
`slack_messages` keeps each message the app posted (incident, conversation, ts) so that it can be
updated when the incident changes. Downgrading drops both.

Revision ID: 7c5e2a9d41f3
Revises: 7c41e9a2d5b8
Create Date: 2026-12-07 19:45:00.000000+00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '7c5e2a9d41f3'
down_revision: str | None = '7c41e9a2d5b8'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('services', schema=None) as batch_op:
        batch_op.add_column(sa.Column('slack_channel', sa.String(length=32), nullable=True))
    op.create_table('slack_messages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('incident_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('ts', sa.String(length=32), nullable=False),
    sa.Column('notification_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_slack_messages_incident_id_incidents'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['notification_id'], ['notifications.id'], name=op.f('fk_slack_messages_notification_id_notifications'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_slack_messages')),
    sa.UniqueConstraint('channel', 'ts', name=op.f('uq_slack_messages_channel_ts')),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('slack_messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_slack_messages_incident_id'), ['incident_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('slack_messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_slack_messages_incident_id'))
    op.drop_table('slack_messages')
    with op.batch_alter_table('services', schema=None) as batch_op:
        batch_op.drop_column('slack_channel')
