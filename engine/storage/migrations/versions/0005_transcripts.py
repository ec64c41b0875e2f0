"""transcripts of recordings, with their QA results

A transcript belongs to one recording (its primary key is the recording's id) and goes with it:
the retention purge deletes both, a legal hold keeps both.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "transcripts",
        sa.Column("recording_id", sa.String(length=64), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=True),
        sa.Column("agent_id", sa.String(length=64), nullable=True),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("engine", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("qa", sa.JSON(), nullable=True),
        sa.Column("qa_passed", sa.Boolean(), nullable=True),
        sa.PrimaryKeyConstraint("recording_id", name=op.f("pk_transcripts")),
    )
    op.create_index(op.f("ix_transcripts_call_id"), "transcripts", ["call_id"])
    op.create_index(op.f("ix_transcripts_started_at"), "transcripts", ["started_at"])
    op.create_index(
        op.f("ix_transcripts_qa_passed_started_at"), "transcripts", ["qa_passed", "started_at"]
    )


def downgrade() -> None:
    op.drop_table("transcripts")
