"""Per-user file limits across instances: the files users sent (file_uses).

Revision ID: 0009
Revises: 0008
Create Date: 2027-03-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Frozen here on purpose, as in 0001: the schema as it was when this was written.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "file_uses",
        sa.Column("id", Id, primary_key=True),
        sa.Column("user_key", sa.String(), nullable=False),
        sa.Column("files", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_file_uses"),
    )
    op.create_index("ix_file_uses_user_key_created_at", "file_uses", ["user_key", "created_at"])


def downgrade() -> None:
    op.drop_table("file_uses")
