"""calls: the post-call CSAT survey's answers

A queue with ``csat`` keeps the caller on the line after the agent hangs up and asks for a score
of 1 (poor) to 5 (excellent), and optionally a second one. They belong to the call, so they are
columns of its row (NULL: not asked, or no answer), summed up per queue and interval by the API.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.add_column(sa.Column("csat_score", sa.SmallInteger(), nullable=True))
        batch_op.add_column(sa.Column("csat_second_score", sa.SmallInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_column("csat_second_score")
        batch_op.drop_column("csat_score")
