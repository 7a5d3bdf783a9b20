"""escalation policies, events, notifications outbox

Revision ID: d4416675b35f
Revises: 738280b68aad
Create Date: 2026-11-28 07:50:27.661066+00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = 'd4416675b35f'
down_revision: str | None = '738280b68aad'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('escalation_policies',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('repeat_count', sa.Integer(), nullable=False),
    sa.Column('repeat_delay_minutes', sa.Float(), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('conditions', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('steps', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_escalation_policies')),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('escalation_policies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_escalation_policies_priority'), ['priority'], unique=False)

    op.create_table('escalation_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('incident_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('policy_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('run', sa.Integer(), nullable=False),
    sa.Column('cycle', sa.Integer(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('executed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('delay_minutes', sa.Double(), nullable=False),
    sa.Column('targets', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('actions', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('notified_user_ids', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('scheduled', 'executed', 'cancelled', 'failed', 'skipped')", name=op.f('ck_escalation_events_status')),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_escalation_events_incident_id_incidents'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_escalation_events')),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('escalation_events', schema=None) as batch_op:
        batch_op.create_index('ix_escalation_events_due', ['status', 'due_at'], unique=False)
        batch_op.create_index('uq_escalation_events_step', ['incident_id', 'run', 'cycle', 'step'], unique=True)

    op.create_table('notifications',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('incident_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('escalation_event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('address', sa.String(length=2048), nullable=False),
    sa.Column('event', sa.String(length=32), nullable=False),
    sa.Column('subject', sa.String(length=500), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('provider_message_id', sa.String(length=255), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('pending', 'sending', 'sent', 'failed', 'cancelled')", name=op.f('ck_notifications_status')),
    sa.ForeignKeyConstraint(['escalation_event_id'], ['escalation_events.id'], name=op.f('fk_notifications_escalation_event_id_escalation_events'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_notifications_incident_id_incidents'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_notifications_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications')),
    sa.UniqueConstraint('key', name=op.f('uq_notifications_key')),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.create_index('ix_notifications_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_notifications_incident', ['incident_id', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_notifications_user_id'), ['user_id'], unique=False)

    with op.batch_alter_table('incidents', schema=None, table_kwargs={'sqlite_autoincrement': True}) as batch_op:
        # Defaults only to fill the rows that exist; the application always sets both.
        batch_op.add_column(sa.Column('escalation_status', sa.String(length=16), nullable=False, server_default='none'))
        batch_op.add_column(sa.Column('escalation_run', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('escalation_snapshot', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))
        batch_op.create_index(batch_op.f('ix_incidents_escalation_policy_id'), ['escalation_policy_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_incidents_escalation_policy_id_escalation_policies'), 'escalation_policies', ['escalation_policy_id'], ['id'], ondelete='SET NULL')

    with op.batch_alter_table('incidents', schema=None, table_kwargs={'sqlite_autoincrement': True}) as batch_op:
        batch_op.alter_column('escalation_status', server_default=None)
        batch_op.alter_column('escalation_run', server_default=None)

    with op.batch_alter_table('services', schema=None, table_kwargs={'sqlite_autoincrement': True}) as batch_op:
        batch_op.add_column(sa.Column('escalation_policy_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.create_index(batch_op.f('ix_services_escalation_policy_id'), ['escalation_policy_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_services_escalation_policy_id_escalation_policies'), 'escalation_policies', ['escalation_policy_id'], ['id'], ondelete='RESTRICT')



def downgrade() -> None:
    with op.batch_alter_table('services', schema=None, table_kwargs={'sqlite_autoincrement': True}) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_services_escalation_policy_id_escalation_policies'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_services_escalation_policy_id'))
        batch_op.drop_column('escalation_policy_id')

    with op.batch_alter_table('incidents', schema=None, table_kwargs={'sqlite_autoincrement': True}) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_incidents_escalation_policy_id_escalation_policies'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_incidents_escalation_policy_id'))
        batch_op.drop_column('escalation_snapshot')
        batch_op.drop_column('escalation_run')
        batch_op.drop_column('escalation_status')

    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notifications_user_id'))
        batch_op.drop_index('ix_notifications_incident')
        batch_op.drop_index('ix_notifications_due')

    op.drop_table('notifications')
    with op.batch_alter_table('escalation_events', schema=None) as batch_op:
        batch_op.drop_index('uq_escalation_events_step')
        batch_op.drop_index('ix_escalation_events_due')

    op.drop_table('escalation_events')
    with op.batch_alter_table('escalation_policies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_escalation_policies_priority'))

    op.drop_table('escalation_policies')
