"""teams: members with a role, and the team that owns each service, policy, schedule and webhook

Existing services, escalation policies, schedules and webhook subscriptions are moved into one
team, "Everyone", whose members are the existing users (admins as managers, the others as
responders), so that nobody loses a right they had. `audit_log.team_id` names the team of the
object changed. Downgrading drops the teams and the columns (the rows they owned stay).

Revision ID: b8e31f6c2a17
Revises: a4d17c3e9b52
Create Date: 2026-12-07 23:30:00.000000+00:00

"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "b8e31f6c2a17"
down_revision: str | None = "a4d17c3e9b52"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
OWNED = ("services", "escalation_policies", "schedules", "webhook_subscriptions")
DEFAULT_TEAM = "Everyone"
# SQLite rebuilds a table to add a foreign key: it must stay AUTOINCREMENT (ids never reused).
AUTOINCREMENT = {"sqlite_autoincrement": True}


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("name_key", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("is_private", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_teams")),
        sa.UniqueConstraint("name_key", name=op.f("uq_teams_name_key")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "team_members",
        sa.Column("id", ID, nullable=False),
        sa.Column("team_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "role IN ('manager', 'responder', 'observer')", name=op.f("ck_team_members_role")
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_team_members_team_id_teams"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_team_members_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_team_members")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("team_members", schema=None) as batch_op:
        batch_op.create_index("uq_team_members_team_user", ["team_id", "user_id"], unique=True)
        batch_op.create_index("ix_team_members_user", ["user_id", "team_id"], unique=False)
    for table in OWNED:
        with op.batch_alter_table(table, table_kwargs=AUTOINCREMENT) as batch_op:
            batch_op.add_column(sa.Column("team_id", ID, nullable=True))
            batch_op.create_index(batch_op.f(f"ix_{table}_team_id"), ["team_id"], unique=False)
            batch_op.create_foreign_key(
                batch_op.f(f"fk_{table}_team_id_teams"),
                "teams",
                ["team_id"],
                ["id"],
                ondelete="RESTRICT",
            )
    with op.batch_alter_table("audit_log", table_kwargs=AUTOINCREMENT) as batch_op:
        batch_op.add_column(sa.Column("team_id", ID, nullable=True))
        batch_op.create_index("ix_audit_log_team", ["team_id", "id"], unique=False)
    _move_existing_rows_into_one_team()


def _move_existing_rows_into_one_team() -> None:
    bind = op.get_bind()
    owned = sum(bind.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in OWNED)
    if not owned:
        return
    now = datetime.now(UTC)
    teams = sa.table(
        "teams",
        sa.column("id", ID),
        sa.column("name", sa.String),
        sa.column("name_key", sa.String),
        sa.column("description", sa.Text),
        sa.column("is_private", sa.Boolean),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    bind.execute(
        teams.insert().values(
            name=DEFAULT_TEAM,
            name_key=DEFAULT_TEAM.lower(),
            description="Everything that existed before teams; move it to teams of its own.",
            is_private=False,
            created_at=now,
            updated_at=now,
        )
    )
    team_id = bind.execute(
        sa.text("SELECT id FROM teams WHERE name_key = :key"), {"key": DEFAULT_TEAM.lower()}
    ).scalar_one()
    bind.execute(
        sa.text(
            "INSERT INTO team_members (team_id, user_id, role, created_at) "
            "SELECT :team, id, CASE WHEN role = 'admin' THEN 'manager' ELSE 'responder' END, :now "
            "FROM users ORDER BY id"
        ),
        {"team": team_id, "now": now},
    )
    for table in OWNED:
        bind.execute(sa.text(f"UPDATE {table} SET team_id = :team"), {"team": team_id})


def downgrade() -> None:
    with op.batch_alter_table("audit_log", table_kwargs=AUTOINCREMENT) as batch_op:
        batch_op.drop_index("ix_audit_log_team")
        batch_op.drop_column("team_id")
    for table in reversed(OWNED):
        with op.batch_alter_table(table, table_kwargs=AUTOINCREMENT) as batch_op:
            batch_op.drop_constraint(batch_op.f(f"fk_{table}_team_id_teams"), type_="foreignkey")
            batch_op.drop_index(batch_op.f(f"ix_{table}_team_id"))
            batch_op.drop_column("team_id")
    with op.batch_alter_table("team_members", schema=None) as batch_op:
        batch_op.drop_index("ix_team_members_user")
        batch_op.drop_index("uq_team_members_team_user")
    op.drop_table("team_members")
    op.drop_table("teams")
