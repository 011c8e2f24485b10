"""Partial indexes of the unfinished messages, for claiming work in inbox order.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# As in storage/schema.py (a migration keeps its own copy: the schema may change later).
UNFINISHED_SQL = "status IN ('pending', 'running', 'answered')"


def upgrade() -> None:
    for name, columns in (
        ("ix_messages_unfinished", ["id"]),
        ("ix_messages_unfinished_conversation", ["conversation_id", "id"]),
    ):
        op.create_index(
            name,
            "messages",
            columns,
            postgresql_where=sa.text(UNFINISHED_SQL),
            sqlite_where=sa.text(UNFINISHED_SQL),
        )


def downgrade() -> None:
    op.drop_index("ix_messages_unfinished_conversation", table_name="messages")
    op.drop_index("ix_messages_unfinished", table_name="messages")
