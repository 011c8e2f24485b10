"""The allowlist kept in the store and pairing codes (reserved: no tables yet).

Revision ID: 0007
Revises: 0006
Create Date: 2027-03-01
"""

from __future__ import annotations

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
