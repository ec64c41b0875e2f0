"""admin_objects: agents and queues made through the admin API

One row per (kind, name): the object's body in the shape of its TOML section, or a deleted
flag that hides a same-named object of the config file. The effective config is the file with
these rows applied on top (``engine.config.overlay``).

Revision ID: 0014
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_objects",
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("body", sa.JSON, nullable=True),
        sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("kind", "name", name="pk_admin_objects"),
    )


def downgrade() -> None:
    op.drop_table("admin_objects")
