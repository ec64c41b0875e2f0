"""calls.hold_s: the caller's time on the agent's hold

Seconds the agent held the bridged caller (re-INVITE sendonly/inactive from the agent's phone,
until it resumed or the call ended); NULL for a call that never reached an agent.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("hold_s", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("hold_s")
