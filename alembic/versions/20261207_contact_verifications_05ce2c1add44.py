"""contact verifications: email addresses and phone numbers proven to be their user's

Nothing but the verification message is sent to an email address or a phone number that is not
verified (the account's own email excepted, unless its user set it themselves). So that an upgrade
does not silently stop paging anyone, every address already in use when this runs is
grandfathered: each explicit address of an email or SMS preference, and each profile phone, gets
a row verified at upgrade time with `verified_via = 'migration'` and no `verified_by`. Only
addresses set or changed afterwards need a code (or an admin's word). Downgrading drops the table.

Revision ID: 05ce2c1add44
Revises: b3d9e1f47a20
Create Date: 2026-12-07 15:00:00.000000+00:00

"""
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op


revision: str = '05ce2c1add44'
down_revision: str | None = 'b3d9e1f47a20'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('contact_verifications',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=True),
    sa.Column('code_sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('verified_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('verified_via', sa.String(length=16), nullable=True),
    sa.Column('verified_by', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("channel IN ('email', 'sms')", name=op.f('ck_contact_verifications_channel')),
    sa.CheckConstraint("verified_via IN ('code', 'admin', 'migration')", name=op.f('ck_contact_verifications_verified_via')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_contact_verifications_user_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['verified_by'], ['users.id'], name=op.f('fk_contact_verifications_verified_by_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contact_verifications')),
    sa.UniqueConstraint('user_id', 'channel', 'address', name=op.f('uq_contact_verifications_user_id_channel_address')),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('contact_verifications', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_contact_verifications_verified_by'), ['verified_by'], unique=False)

    # Grandfathered: the addresses in use now keep receiving what they received.
    bind = op.get_bind()
    now = datetime.now(UTC)
    if bind.dialect.name == 'sqlite':
        now = now.replace(tzinfo=None)  # as app.core.db.UTCDateTime stores it there
    bind.execute(
        sa.text(
            "INSERT INTO contact_verifications (user_id, channel, address, attempts, verified_at, "
            "verified_via, created_at, updated_at) "
            "SELECT user_id, channel, address, 0, :now, 'migration', :now, :now FROM ("
            "SELECT user_id, channel, address FROM notification_preferences "
            "WHERE channel IN ('email', 'sms') AND address IS NOT NULL "
            "UNION SELECT id, 'sms', phone FROM users WHERE phone IS NOT NULL AND phone <> ''"
            ") AS in_use"
        ).bindparams(sa.bindparam('now', now, type_=sa.DateTime(timezone=True)))
    )


def downgrade() -> None:
    with op.batch_alter_table('contact_verifications', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_contact_verifications_verified_by'))

    op.drop_table('contact_verifications')
