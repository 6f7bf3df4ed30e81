"""The first revision: every table as releases before link refs (issue 11) made them.

A database made by such a release has these tables and columns and no alembic_version; `digest
db upgrade` recognises it by them, stamps it with this revision, and upgrades it from here. (A
database made after link refs and before revisions matches 0002 and is only stamped.)

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "control",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber", sa.String(length=254), nullable=False),
        sa.Column("digest_date", sa.Date(), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claim_token", sa.String(length=64), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expire_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ambiguous_count", sa.Integer(), nullable=False),
        sa.Column("paper_ids", sa.JSON(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id"),
        sa.UniqueConstraint("subscriber", "digest_date", name="uq_delivery_day"),
    )
    op.create_index(op.f("ix_delivery_digest_date"), "delivery", ["digest_date"], unique=False)
    op.create_index("ix_delivery_due", "delivery", ["state", "next_attempt_at"], unique=False)
    op.create_index("ix_delivery_state_id", "delivery", ["state", "id"], unique=False)
    op.create_index(op.f("ix_delivery_subscriber"), "delivery", ["subscriber"], unique=False)
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber", sa.String(length=254), nullable=False),
        sa.Column("paper_id", sa.String(length=512), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscriber", "paper_id", name="uq_feedback_paper"),
    )
    op.create_index(op.f("ix_feedback_subscriber"), "feedback", ["subscriber"], unique=False)
    op.create_table(
        "feedstate",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("etag", sa.Text(), nullable=True),
        sa.Column("last_modified", sa.String(), nullable=True),
        sa.Column("last_attempt", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.String(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("source"),
    )
    op.create_table(
        "paper",
        sa.Column("id", sa.String(length=512), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("abstract", sa.Text(), nullable=False),
        sa.Column("authors", sa.JSON(), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("announced", sa.Date(), nullable=False),
        sa.Column("announce_type", sa.String(), nullable=True),
        sa.Column("abs_url", sa.Text(), nullable=True),
        sa.Column("pdf_url", sa.Text(), nullable=True),
        sa.Column("hf_url", sa.Text(), nullable=True),
        sa.Column("doi", sa.String(), nullable=True),
        sa.Column("journal_ref", sa.Text(), nullable=True),
        sa.Column("upvotes", sa.Integer(), nullable=True),
        sa.Column("sources", sa.JSON(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_paper_announced"), "paper", ["announced"], unique=False)
    op.create_index(op.f("ix_paper_first_seen"), "paper", ["first_seen"], unique=False)
    op.create_table(
        "rankmodel",
        sa.Column("subscriber", sa.String(length=254), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("vocabulary", sa.String(length=64), nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=False),
        sa.Column("trained_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subscriber"),
    )
    op.create_table(
        "subscriberstate",
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("unsubscribed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("bounce_count", sa.Integer(), nullable=False),
        sa.Column("last_soft_bounce", sa.Date(), nullable=True),
        sa.PrimaryKeyConstraint("email"),
    )
    op.create_table(
        "deliverymessage",
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("message", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["delivery.id"],
        ),
        sa.PrimaryKeyConstraint("delivery_id"),
    )


def downgrade() -> None:
    for table in [
        "deliverymessage",
        "subscriberstate",
        "rankmodel",
        "paper",
        "feedstate",
        "feedback",
        "delivery",
        "control",
    ]:
        op.drop_table(table)
