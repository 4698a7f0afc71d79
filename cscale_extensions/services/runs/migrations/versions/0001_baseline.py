"""The runs and schedules tables as ``create_all`` made them before migrations existed.

Revision ID: 0001
Revises: (none)
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("dispatched", sa.Float),
        sa.Column("started", sa.Float),
        sa.Column("finished", sa.Float),
        sa.Column("notebook", sa.Text),
        sa.Column("path", sa.String(1024)),
        sa.Column("parameters", sa.Text, nullable=False),
        sa.Column("timeout", sa.Float, nullable=False),
        sa.Column("kernel_name", sa.String(255)),
        sa.Column("cwd", sa.String(1024)),
        sa.Column("sweep_id", sa.String(32)),
        sa.Column("schedule_id", sa.String(32)),
        sa.Column("rerun_of", sa.String(32)),
        sa.Column("cell", sa.Integer, nullable=False),
        sa.Column("cells", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("cancel_sent", sa.Boolean, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("pid", sa.Integer),
    )
    for column in ("owner", "state", "sweep_id", "schedule_id"):
        op.create_index(f"ix_runs_{column}", "runs", [column])
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("cron", sa.String(255), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("next_fire", sa.Float, nullable=False),
        sa.Column("last_fire", sa.Float),
        sa.Column("last_run", sa.String(32)),
        sa.Column("notebook", sa.Text),
        sa.Column("path", sa.String(1024)),
        sa.Column("parameters", sa.Text, nullable=False),
        sa.Column("timeout", sa.Float, nullable=False),
        sa.Column("kernel_name", sa.String(255)),
        sa.Column("cwd", sa.String(1024)),
    )
    op.create_index("ix_schedules_owner", "schedules", ["owner"])


def downgrade() -> None:
    op.drop_table("schedules")
    op.drop_table("runs")
