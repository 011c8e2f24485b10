"""The claimed work queue: conversation leases, instances and named leases.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable or defaulted columns: a plain ADD COLUMN on both databases.
    op.add_column("conversations", sa.Column("lease_owner", sa.String(), nullable=True))
    op.add_column(
        "conversations", sa.Column("not_before", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "messages",
        sa.Column("delivery_attempts", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column(
        "messages",
        sa.Column("delivered_pieces", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_table(
        "instances",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_instances"),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_table("instances")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("delivered_pieces")
        batch.drop_column("delivery_attempts")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("not_before")
        batch.drop_column("lease_owner")
