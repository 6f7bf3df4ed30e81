"""Today's states read from one index: `digest status` at 100,000 readers (issue 14).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # `digest status` asks, for a date, each subscriber's state and whether it may have gone
    # twice. With only the date indexed, every one of the day's rows was read from the table,
    # whose rows carry the picks and reasons (about a kilobyte each): after a run of 100,000,
    # pages not in the page cache. Every column it reads is in this index, so the table is not
    # touched. It starts with the date, so it also serves every look-up the old one-column
    # index did, which goes: one index fewer to keep up as rows change state. Either may
    # already be as wanted in a database an older release made by hand: no error for that.
    op.create_index(
        "ix_delivery_day_states",
        "delivery",
        ["digest_date", "subscriber", "state", "ambiguous_count"],
        unique=False,
        if_not_exists=True,
    )
    op.drop_index("ix_delivery_digest_date", table_name="delivery", if_exists=True)


def downgrade() -> None:
    op.create_index(
        "ix_delivery_digest_date", "delivery", ["digest_date"], unique=False, if_not_exists=True
    )
    op.drop_index("ix_delivery_day_states", table_name="delivery", if_exists=True)
