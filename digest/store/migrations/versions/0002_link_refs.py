"""Link refs (issue 11): the opaque reader id in an email's links, mapped back to the address.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "linkref",
        sa.Column("ref", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.PrimaryKeyConstraint("ref"),
    )
    op.create_index(op.f("ix_linkref_email"), "linkref", ["email"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_linkref_email"), table_name="linkref")
    op.drop_table("linkref")
