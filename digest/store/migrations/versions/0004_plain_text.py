"""Plain text of LaTeX titles and abstracts (issue 14): converted once, at ingest.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Filled as papers arrive, and for papers stored before it by the first run that needs
    # them: nothing to convert here, so the upgrade itself stays instant.
    op.create_table(
        "plaintext",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("plain", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("plaintext")
