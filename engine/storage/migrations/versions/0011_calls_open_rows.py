"""calls: a row per live call, and the node that holds it

A call's row is written while it is live (ended_at NULL) and completed when it ends, so a crash
leaves rows the restarted daemon closes (``engine.storage.cdr.close_interrupted_calls``). ``node``
names the daemon that held the call, so one node only ever closes its own rows in a shared
database; the index serves that start-up query.

Revision ID: 0011
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("node", sa.String(length=64), nullable=True))
        batch.create_index("ix_calls_node_ended_at", ["node", "ended_at"])


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_index("ix_calls_node_ended_at")
        batch.drop_column("node")
