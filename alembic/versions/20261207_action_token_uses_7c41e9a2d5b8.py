"""action token uses: the one-click links of page emails that have been used

A page email carries signed Acknowledge and Resolve links; each acts once. Using one writes its
token's id here (unique) in the transaction of the action. Downgrading drops the table (every link
already used could then be used again until it expires, 24 hours after its page).

Revision ID: 7c41e9a2d5b8
Revises: 7c2e5a91d3f4
Create Date: 2026-12-07 19:45:00.000000+00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '7c41e9a2d5b8'
down_revision: str | None = '7c2e5a91d3f4'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('action_token_uses',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('token_id', sa.String(length=64), nullable=False),
    sa.Column('incident_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_action_token_uses_incident_id_incidents'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_action_token_uses_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_action_token_uses')),
    sa.UniqueConstraint('token_id', name=op.f('uq_action_token_uses_token_id')),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('action_token_uses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_action_token_uses_incident_id'), ['incident_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_action_token_uses_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('action_token_uses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_action_token_uses_user_id'))
        batch_op.drop_index(batch_op.f('ix_action_token_uses_incident_id'))

    op.drop_table('action_token_uses')
