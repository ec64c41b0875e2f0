"""recordings index: a recording that continues another of the same call

When a call's media worker dies (or refuses the call) mid-call, the file it was writing is
repaired up to that moment and the daemon goes on recording the call in a new file. The new row
names the one it continues, so a reviewer sees that the two files together cover the call, and
where the seam is.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("continues", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.drop_column("continues")
