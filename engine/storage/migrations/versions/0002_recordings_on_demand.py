"""recordings index: who started a recording on demand

A queue with ``record = "on_demand"`` (or a sampled call that was not drawn) is recorded only when
an authorised user asks through the API, and then only from that moment on. The index says so, so
a reviewer knows the file does not cover the whole call and who decided to record it.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("on_demand", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("started_by", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.drop_column("started_by")
        batch_op.drop_column("on_demand")
