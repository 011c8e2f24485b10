"""The allowlist kept in the store, pairing codes and the audit of its changes.

Revision ID: 0007
Revises: 0006
Create Date: 2027-03-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Frozen here on purpose, as in 0001: the schema as it was when this was written.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "access_allowed",
        sa.Column("platform", sa.String(), nullable=False),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("added_by", sa.String(), nullable=False),
        sa.Column("added_at", When, nullable=False),
        sa.PrimaryKeyConstraint("platform", "user_id", name="pk_access_allowed"),
    )
    op.create_table(
        "access_codes",
        sa.Column("code", sa.String(16), nullable=False),
        sa.Column("platform", sa.String(), nullable=False),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("chat", sa.String(), nullable=True),
        sa.Column("created_at", When, nullable=False),
        sa.Column("expires_at", When, nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_access_codes"),
        sa.UniqueConstraint("platform", "user_id", name="uq_access_codes_platform_user_id"),
    )
    op.create_table(
        "access_audit",
        sa.Column("id", Id, primary_key=True),
        sa.Column("at", When, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("platform", sa.String(), nullable=False),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_access_audit"),
    )
    op.create_index("ix_access_audit_at", "access_audit", ["at"])


def downgrade() -> None:
    op.drop_table("access_audit")
    op.drop_table("access_codes")
    op.drop_table("access_allowed")
