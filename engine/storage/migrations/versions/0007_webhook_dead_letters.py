"""outbound webhook deliveries that ran out of attempts (the dead-letter list)

A row keeps the exact body that was sent, so a retry from the API re-sends the same event (with
a fresh timestamp and signature); a delivery that then succeeds is marked, not deleted, so the
list also says what was recovered and when.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_dead_letters",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("failed_at", sa.Double(), nullable=False),
        sa.Column("delivered_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_dead_letters")),
    )
    op.create_index(
        op.f("ix_webhook_dead_letters_delivered_at_failed_at"),
        "webhook_dead_letters",
        ["delivered_at", "failed_at"],
    )


def downgrade() -> None:
    op.drop_table("webhook_dead_letters")
