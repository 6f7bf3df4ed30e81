"""Database tables: what the program remembers (papers, feed validators, deliveries).

Plain column types only (JSON lists, dates, text) so the same schema runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc_naive(t: datetime) -> datetime:
    """A comparable UTC moment: SQLite hands datetimes back without their zone (all are UTC)."""
    return t if t.tzinfo is None else t.astimezone(UTC).replace(tzinfo=None)


class Paper(SQLModel, table=True):
    # Canonical id: the arXiv id without version; else "doi:..." or the entry's URL.
    id: str = Field(primary_key=True, max_length=512)
    version: int | None = None
    title: str = Field(sa_column=Column(Text, nullable=False))
    abstract: str = Field(default="", sa_column=Column(Text, nullable=False))
    authors: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    categories: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # The day the paper appeared in a listing (or was published, for lookups and plain feeds).
    announced: date = Field(index=True)
    announce_type: str | None = None
    abs_url: str | None = Field(default=None, sa_column=Column(Text))
    pdf_url: str | None = Field(default=None, sa_column=Column(Text))
    hf_url: str | None = Field(default=None, sa_column=Column(Text))
    doi: str | None = None
    journal_ref: str | None = Field(default=None, sa_column=Column(Text))
    upvotes: int | None = None
    sources: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    first_seen: datetime = Field(default_factory=utcnow, index=True)
    updated: datetime = Field(default_factory=utcnow)


class FeedState(SQLModel, table=True):
    """Per source: HTTP validators for conditional GET and the outcome of the last fetch."""

    source: str = Field(primary_key=True, max_length=64)
    url: str = Field(sa_column=Column(Text, nullable=False))
    etag: str | None = Field(default=None, sa_column=Column(Text))
    last_modified: str | None = None
    last_attempt: datetime | None = None
    last_success: datetime | None = None
    last_status: str | None = None  # ok | not-modified | error
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    last_count: int = 0


class SubscriberState(SQLModel, table=True):
    """What the program knows about a subscriber beyond their file (checked at send time)."""

    email: str = Field(primary_key=True, max_length=254)
    unsubscribed_at: datetime | None = None
    disabled: bool = False
    disabled_reason: str | None = Field(default=None, sa_column=Column(Text))
    bounce_count: int = 0
    # Soft bounces (a digest that expired undelivered) count at most once a day.
    last_soft_bounce: date | None = None


class LinkRef(SQLModel, table=True):
    """The opaque reader id that an email's links carry instead of the address, and whose it is.

    Written when a digest is made; a forwarded email's links then show no address. A table of
    its own (not a column) so a database made before it gains it without touching old rows.
    """

    ref: str = Field(primary_key=True, max_length=64)
    email: str = Field(max_length=254, index=True)


class Control(SQLModel, table=True):
    """Service-wide switches shared by every process: the pause flag lives here."""

    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(sa_column=Column(Text, nullable=False))
    updated: datetime = Field(default_factory=utcnow)


class Delivery(SQLModel, table=True):
    """One digest for one subscriber and one digest date. Unique, so a day is sent at most once."""

    __table_args__ = (
        UniqueConstraint("subscriber", "digest_date", name="uq_delivery_day"),
        # Claims look rows up by state: pending in id order, retries by due time.
        Index("ix_delivery_state_id", "state", "id"),
        Index("ix_delivery_due", "state", "next_attempt_at"),
        # `digest status`: a day's subscribers, states and repeats from the index alone
        # (migration 0005); its leading date serves every look-up by date.
        Index("ix_delivery_day_states", "digest_date", "subscriber", "state", "ambiguous_count"),
    )

    id: int | None = Field(default=None, primary_key=True)
    subscriber: str = Field(max_length=254, index=True)
    digest_date: date
    # Fixed when the row is made and reused on every attempt, so receivers can de-duplicate.
    message_id: str = Field(max_length=255, unique=True)
    # pending -> sending -> sent | retry | ambiguous | bounced | expired | dead | cancelled
    state: str = Field(default="pending", max_length=16)
    attempts: int = 0
    lease_until: datetime | None = None
    # Which claim holds the row while it is `sending` (a batch of rows shares one token).
    claim_token: str | None = Field(default=None, max_length=64)
    next_attempt_at: datetime | None = None
    # Temporary failures are retried until this moment (before the next digest), then expire.
    expire_at: datetime | None = None
    # Times the connection was lost after the message was handed over (RFC 5321 §6.1 window).
    ambiguous_count: int = 0
    paper_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    reasons: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    sent_at: datetime | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))


# In a delivery's `reasons` (paper id -> reason): each paper's email section, where a digest
# has sections. "#" starts no paper id (arXiv ids, "doi:…", URLs).
SECTIONS_KEY = "#sections"


class DeliveryMessage(SQLModel, table=True):
    """The rendered message of a delivery, exactly as it is sent on every attempt.

    A table of its own: the delivery row changes state several times per message, and an UPDATE
    rewrites the whole row, so keeping 30 KB of message beside the state would rewrite it too.
    """

    delivery_id: int = Field(primary_key=True, foreign_key="delivery.id")
    message: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Feedback(SQLModel, table=True):
    """A reader's verdict on one paper; the latest verdict per (subscriber, paper) counts."""

    __table_args__ = (UniqueConstraint("subscriber", "paper_id", name="uq_feedback_paper"),)

    id: int | None = Field(default=None, primary_key=True)
    subscriber: str = Field(max_length=254, index=True)
    paper_id: str = Field(max_length=512)
    verdict: str = Field(max_length=16)  # like | dislike
    at: datetime = Field(default_factory=utcnow)


class RankModel(SQLModel, table=True):
    """A reader's trained ranking model, kept until its inputs change (see digest.rank.model)."""

    subscriber: str = Field(primary_key=True, max_length=254)
    fingerprint: str = Field(max_length=64)
    vocabulary: str = Field(max_length=64)
    blob: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    trained_at: datetime = Field(default_factory=utcnow)


class PlanClaim(SQLModel, table=True):
    """Which node plans which batch of a run's subscribers (several `digest run` or `serve`
    processes on one database share the planning this way; digest.store.claims).

    `run` names the day and the exact list of subscribers planned (a hash of their addresses),
    so only nodes that see the same subscribers share batches; a node that sees others plans
    its own, and the one row per (subscriber, day) keeps anyone from being sent twice.
    """

    run: str = Field(primary_key=True, max_length=64)
    generation: int = Field(primary_key=True)  # digest.store.claims.plan_generation
    batch: int = Field(primary_key=True)
    owner: str = Field(max_length=128)
    claimed_at: datetime
    done_at: datetime | None = None


class PlainText(SQLModel, table=True):
    """A title or abstract with LaTeX in it, as readers see it (digest.text.plain_latex): the
    conversion takes about 8 ms a text, so it is made once, at ingest, and not again in every
    run and planning process. Keyed by a hash of the converter's version and the source text,
    so a changed abstract, or a better converter, simply misses (digest.store.plaintext)."""

    key: str = Field(primary_key=True, max_length=64)
    plain: str = Field(sa_column=Column(Text, nullable=False))
