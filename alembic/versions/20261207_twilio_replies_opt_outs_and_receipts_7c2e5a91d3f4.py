"""twilio: SMS reply codes, opted-out numbers, and delivery receipts on notifications

`sms_reply_codes` holds the short per-user codes that SMS pages ask to be answered with ("Reply 4a
to ack"); `sms_opt_outs` the numbers that answered STOP; `notifications` gains the provider's last
status callback (`receipt`, `receipt_at`, `provider_error`). Nothing is backfilled: older rows have
no receipt. Downgrading drops the tables and the columns.

Revision ID: 7c2e5a91d3f4
Revises: c7a1e5d93b20
Create Date: 2026-12-07 19:34:26.976951+00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '7c2e5a91d3f4'
down_revision: str | None = 'c7a1e5d93b20'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('sms_opt_outs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('address', sa.String(length=32), nullable=False),
    sa.Column('keyword', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sms_opt_outs')),
    sa.UniqueConstraint('address', name=op.f('uq_sms_opt_outs_address')),
    sqlite_autoincrement=True
    )
    op.create_table('sms_reply_codes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('code', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_sms_reply_codes_incident_id_incidents'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_sms_reply_codes_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sms_reply_codes')),
    sa.UniqueConstraint('user_id', 'code', name=op.f('uq_sms_reply_codes_user_id_code')),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('sms_reply_codes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sms_reply_codes_incident_id'), ['incident_id'], unique=False)

    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.add_column(sa.Column('receipt', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('receipt_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('provider_error', sa.String(length=64), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_column('provider_error')
        batch_op.drop_column('receipt_at')
        batch_op.drop_column('receipt')

    with op.batch_alter_table('sms_reply_codes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sms_reply_codes_incident_id'))

    op.drop_table('sms_reply_codes')
    op.drop_table('sms_opt_outs')
