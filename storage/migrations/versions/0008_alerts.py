"""Admin alerts: one row per problem kind and subject (storage/alerts.py).

Revision ID: 0008
Revises: 0007
Create Date: 2027-03-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Frozen here on purpose, as in 0001: the schema as it was when this was written.
    op.create_table(
        "alerts",
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "subject", name="pk_alerts"),
    )


def downgrade() -> None:
    op.drop_table("alerts")
