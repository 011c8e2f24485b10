"""Usage accounting and budget counters: ``usage`` (one row per turn) and
``usage_counters`` (per subject and day or month).

Revision ID: 0006
Revises: 0005
Create Date: 2027-03-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Frozen here on purpose, as in 0001: the schema as it was when this was written.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "usage",
        sa.Column("id", Id, nullable=False),
        sa.Column("message_id", Id, nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("chat", sa.String(), nullable=False),
        sa.Column("agent", sa.String(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_usage"),
        sa.UniqueConstraint("message_id", name="uq_usage_message_id"),
    )
    op.create_index("ix_usage_day", "usage", ["day"])
    op.create_table(
        "usage_counters",
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("period", sa.String(10), nullable=False),
        sa.Column("messages", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("subject", "period", name="pk_usage_counters"),
    )


def downgrade() -> None:
    op.drop_table("usage_counters")
    op.drop_table("usage")
