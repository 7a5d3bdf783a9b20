"""contact methods and notification rules: how each person is paged, and when

A user's contact methods (an email address, a number for texts, a number for calls, a Slack
member id) and their ordered rules "when I am paged, notify me by this method after N minutes".
A user without rules is paged through their notification preferences as before, so nothing
changes for anyone at upgrade time. Downgrading drops both tables.

Revision ID: c7a1e5d93b20
Revises: 05ce2c1add44
Create Date: 2026-12-07 19:40:00.000000+00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'c7a1e5d93b20'
down_revision: str | None = '05ce2c1add44'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('contact_methods',
    sa.Column('id', ID, nullable=False),
    sa.Column('user_id', ID, nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('label', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("type IN ('email', 'sms', 'voice', 'slack')", name=op.f('ck_contact_methods_type')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_contact_methods_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contact_methods')),
    sa.UniqueConstraint('user_id', 'type', 'address', name=op.f('uq_contact_methods_user_id_type_address')),
    sqlite_autoincrement=True
    )
    op.create_table('notification_rules',
    sa.Column('id', ID, nullable=False),
    sa.Column('user_id', ID, nullable=False),
    sa.Column('contact_method_id', ID, nullable=False),
    sa.Column('delay_minutes', sa.Integer(), nullable=False),
    sa.Column('min_severity', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('delay_minutes >= 0 AND delay_minutes <= 1440', name=op.f('ck_notification_rules_delay_minutes')),
    sa.ForeignKeyConstraint(['contact_method_id'], ['contact_methods.id'], name=op.f('fk_notification_rules_contact_method_id_contact_methods'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_notification_rules_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification_rules')),
    sa.UniqueConstraint('contact_method_id', 'delay_minutes', name=op.f('uq_notification_rules_contact_method_id_delay_minutes')),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('notification_rules', schema=None) as batch_op:
        batch_op.create_index('ix_notification_rules_user', ['user_id', 'delay_minutes'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('notification_rules', schema=None) as batch_op:
        batch_op.drop_index('ix_notification_rules_user')
    op.drop_table('notification_rules')
    op.drop_table('contact_methods')
