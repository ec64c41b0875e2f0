"""ticket lifecycle: state history, SLA due times, scheduled tasks, task rows in agent_events

- ``tasks``: SLA columns (first response and resolution due times, when the first response came,
  whether each was breached, since when the SLA clock is paused), ``solved_at`` and
  ``not_before`` (a scheduled follow-up enters routing then);
- ``task_states``: every state change of a task (from, to, who, when), for reports of the time
  spent in each state;
- ``agent_events``: ``channel`` and ``task_id``, so a task's offer, accept and end are rows of the
  agent event log beside the calls' (occupancy per channel).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("first_response_at", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("first_response_due_at", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("resolution_due_at", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("sla_paused_at", sa.Double(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "first_response_breached", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
        batch_op.add_column(
            sa.Column(
                "resolution_breached", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
        batch_op.add_column(sa.Column("solved_at", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("not_before", sa.Double(), nullable=True))

    op.create_table(
        "task_states",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=True),
        sa.Column("agent_id", sa.String(length=64), nullable=True),
        sa.Column("queue", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_states")),
    )
    with op.batch_alter_table("task_states", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_task_states_task_id_at"), ["task_id", "at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_task_states_at"), ["at"], unique=False)

    with op.batch_alter_table("agent_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("channel", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("task_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agent_events", schema=None) as batch_op:
        batch_op.drop_column("task_id")
        batch_op.drop_column("channel")
    op.drop_table("task_states")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        for column in (
            "not_before",
            "solved_at",
            "resolution_breached",
            "first_response_breached",
            "sla_paused_at",
            "resolution_due_at",
            "first_response_due_at",
            "first_response_at",
        ):
            batch_op.drop_column(column)
