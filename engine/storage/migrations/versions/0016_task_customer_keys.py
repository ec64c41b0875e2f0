"""tasks: the customer's phone, e-mail and CRM id in indexed columns

A customer's contacts on every channel are found by these (engine.storage.customers); rows that
exist already get them from their ``customer`` JSON.

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

from engine.storage.customers import customer_keys

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_COLUMNS = ("customer_phone", "customer_email", "customer_ref")


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        for name in _COLUMNS:
            batch.add_column(sa.Column(name, sa.String(length=255), nullable=True))
            batch.create_index(f"ix_tasks_{name}", [name])
    conn = op.get_bind()
    tasks = sa.table("tasks", sa.column("id"), sa.column("customer", sa.JSON),
                     *(sa.column(n) for n in _COLUMNS))  # fmt: skip
    rows = conn.execute(
        sa.select(tasks.c.id, tasks.c.customer).where(tasks.c.customer.is_not(None))
    )
    for task_id, customer in rows.all():
        if isinstance(customer, dict):
            conn.execute(
                tasks.update().where(tasks.c.id == task_id).values(customer_keys(customer))
            )


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        for name in _COLUMNS:
            batch.drop_index(f"ix_tasks_{name}")
            batch.drop_column(name)
