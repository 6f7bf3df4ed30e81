"""What planning needs to know of many subscribers at once: a mixin of Store (digest.store).

A run plans thousands of digests. Asking the database four questions per subscriber (blocked?
already planned today? which papers were sent? when was the last digest?) is four round trips
each; here each question is one query per batch of subscribers, and the rows each reader
needs are handed over together (`Standing`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, and_, func, insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, select

from digest.states import DUE, LIVE
from digest.states import Delivery as DS
from digest.store.feedback import TrainedModel, upsert_rank_models
from digest.store.packing import pack, unpack
from digest.store.schema import (
    Delivery,
    DeliveryMessage,
    LinkRef,
    SubscriberState,
    utcnow,
)

# Bound parameters per IN (...): well under SQLite's and PostgreSQL's limits.
CHUNK = 500


def _insert_new_refs(s: Session, refs: dict[str, str]) -> None:
    """Add the refs (ref -> email) not recorded yet, in the session's transaction: one plain
    insert (a row object each cost more than writing it)."""
    if not refs:
        return
    known: set[str] = set()
    for part in _chunks(list(refs)):
        known.update(s.exec(select(LinkRef.ref).where(col(LinkRef.ref).in_(part))))
    new = [{"ref": r, "email": e.lower()} for r, e in refs.items() if r not in known]
    if new:
        s.connection().execute(insert(LinkRef), new)


@dataclass(frozen=True)
class Planned:
    """A digest ready to be queued: its row and the exact bytes every attempt sends."""

    email: str
    day: date
    message_id: str
    paper_ids: list[str]
    reasons: dict[str, Any]
    # Compressed as it is stored (digest.store.packing) as soon as it is made: a batch holds
    # a thousand of these until they are written, 30 MB a batch uncompressed.
    packed: bytes
    expire_at: datetime | None


class FinalState(NamedTuple):
    """A digest's state as a run reports it."""

    subscriber: str
    state: str
    paper_ids: list[str]
    last_error: str | None
    next_attempt_at: datetime | None


@dataclass
class Standing:
    """One subscriber as planning finds them."""

    blocked: bool = False  # unsubscribed, or disabled after bounces
    today: Delivery | None = None  # the delivery of their digest day, if planned already
    sent: set[str] = field(default_factory=set)  # papers in digests that went out or may
    last_digest_at: datetime | None = None
    last_digest_day: date | None = None  # the date of their latest digest


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _pairs_in(
    days: dict[str, date],
) -> Iterator[tuple[ColumnElement[bool], set[tuple[str, date]]]]:
    """Conditions finding the deliveries of these (subscriber, day) pairs, a chunk of
    subscribers a query, each with the pairs its rows must be one of (the caller keeps only
    those). Subscribers IN a list and days IN a list, which the (subscriber, digest_date)
    index serves: SQLite reads a row-value IN of the pairs themselves as a scan of the whole
    table, which at the end of a 100,000-reader run was 400 scans of 100,000 rows."""
    pairs = list(days.items())
    for start in range(0, len(pairs), CHUNK):
        part = pairs[start : start + CHUNK]
        yield (
            and_(
                col(Delivery.subscriber).in_([e for e, _ in part]),
                col(Delivery.digest_date).in_(sorted({d for _, d in part})),
            ),
            set(part),
        )


def _on_days(s: Session, days: dict[str, date]) -> list[Delivery]:
    """The deliveries of these (subscriber, day) pairs."""
    return [
        d
        for where, wanted in _pairs_in(days)
        for d in s.exec(select(Delivery).where(where))
        if (d.subscriber, d.digest_date) in wanted
    ]


class PlanningQueries:
    def session(self) -> AbstractContextManager[Session]:  # pragma: no cover - Store's
        raise NotImplementedError

    def save_rank_models(self, models: Sequence[TrainedModel]) -> None:  # pragma: no cover
        raise NotImplementedError  # FeedbackQueries', ahead of this class in Store

    def standings(self, days: dict[str, date]) -> dict[str, Standing]:
        """For each subscriber (lower-case email) and their digest day: what planning needs."""
        out = {email: Standing() for email in days}
        emails = list(days)
        with self.session() as s:
            for part in _chunks(emails):
                for st in s.exec(
                    select(SubscriberState).where(col(SubscriberState.email).in_(part))
                ):
                    out[st.email].blocked = st.unsubscribed_at is not None or st.disabled
                for d in _on_days(s, {e: days[e] for e in part}):
                    out[d.subscriber].today = d
                # Every digest of these subscribers, the live ones kept here: with the states
                # in the query, SQLite chose the index on state and read every digest ever
                # sent, once a chunk.
                q = select(  # type: ignore[call-overload]  # five columns: no overload
                    Delivery.subscriber,
                    Delivery.state,
                    Delivery.paper_ids,
                    Delivery.created_at,
                    Delivery.digest_date,
                ).where(col(Delivery.subscriber).in_(part))
                for email, state, ids, created, day in s.exec(q):
                    if state in LIVE:
                        standing = out[email]
                        standing.sent.update(ids)
                        last = standing.last_digest_at
                        standing.last_digest_at = created if last is None else max(last, created)
                        before = standing.last_digest_day
                        standing.last_digest_day = day if before is None else max(before, day)
        return out

    def last_digest_days(self, emails: Sequence[str]) -> dict[str, date]:
        """The date of each subscriber's latest digest that went out (or may yet), for those
        that have one: whether a weekly reader missed their day (`digest serve`'s catch-up)."""
        out: dict[str, date] = {}
        with self.session() as s:
            for part in _chunks(list(emails)):
                q = (
                    select(Delivery.subscriber, func.max(Delivery.digest_date))
                    .where(col(Delivery.subscriber).in_(part), col(Delivery.state).in_(LIVE))
                    .group_by(Delivery.subscriber)
                )
                out.update({email: day for email, day in s.exec(q) if day is not None})
        return out

    def outcomes_on(self, days: dict[str, date]) -> Iterator[FinalState]:
        """Where each subscriber's digest of their own day (lower-case email -> day) stands,
        where one exists: what a run reads back at its end. Only these columns, a chunk at a
        time: 100,000 whole rows with their reasons took half a gigabyte at the end of a run."""
        with self.session() as s:
            for where, wanted in _pairs_in(days):
                q = select(  # type: ignore[call-overload]  # six columns: no overload
                    Delivery.subscriber,
                    Delivery.state,
                    Delivery.paper_ids,
                    Delivery.last_error,
                    Delivery.next_attempt_at,
                    Delivery.digest_date,
                ).where(where)
                yield from (FinalState(*row[:5]) for row in s.exec(q) if (row[0], row[5]) in wanted)

    def prune_messages(self, before: date) -> int:
        """Drop the stored messages of digests older than ``before`` that are settled (not
        due any more); their delivery rows stay. Returns how many were dropped."""
        with self.session() as s:
            old = select(Delivery.id).where(
                col(Delivery.digest_date) < before, col(Delivery.state).not_in(DUE)
            )
            gone = s.exec(  # type: ignore[call-overload]
                delete(DeliveryMessage).where(col(DeliveryMessage.delivery_id).in_(old))
            )
            s.commit()
            return int(gone.rowcount or 0)

    def remember_refs(self, refs: dict[str, str]) -> None:
        """Record whose each link ref is (ref -> email), those not recorded yet, in one go."""
        if not refs:
            return
        with self.session() as s:
            try:
                _insert_new_refs(s, refs)
                s.commit()
            except IntegrityError:
                s.rollback()  # another node recorded some of the same pairs: one at a time
                for ref, email in refs.items():
                    self.remember_ref(ref, email)

    def remember_ref(self, ref: str, email: str) -> None:
        """Record whose the ref in a digest's links is (the same pair on every node)."""
        with self.session() as s:
            if s.get(LinkRef, ref) is not None:
                return
            s.add(LinkRef(ref=ref, email=email.lower()))
            try:
                s.commit()
            except IntegrityError:
                s.rollback()  # another node recorded the very same pair first

    def plan_deliveries(
        self,
        planned: Sequence[Planned],
        models: Sequence[TrainedModel] = (),
        refs: dict[str, str] | None = None,
    ) -> list[tuple[str, date]]:
        """Many `plan_delivery` calls in one transaction: each (subscriber, day) row is made
        once, and where another runner made one first, theirs stands. Returns the (lower-case
        subscriber, day) of each.

        The batch's trained ``models`` and link ``refs`` go in the same transaction: one write
        lock a batch instead of three, with two planners and the engine sharing SQLite's one
        writer. (In a 30,000-reader run this made no difference beyond the machine's noise.)

        Plain inserts rather than ORM objects: building a row object cost more than writing it
        (its defaults are worked out through pydantic's signature checks, twice a digest)."""
        if not (planned or models or refs):
            return []
        now = utcnow()
        rows = [
            {
                "subscriber": p.email.lower(),
                "digest_date": p.day,
                "message_id": p.message_id,
                "state": DS.PENDING,
                "attempts": 0,
                "ambiguous_count": 0,
                "paper_ids": p.paper_ids,
                "reasons": p.reasons,
                "created_at": now,
                "expire_at": p.expire_at,
            }
            for p in planned
        ]
        with self.session() as s:
            conn = s.connection()
            try:
                _insert_new_refs(s, refs or {})
                upsert_rank_models(conn, models)
                if rows:
                    made = conn.execute(
                        insert(Delivery).returning(col(Delivery.id), sort_by_parameter_order=True),
                        rows,
                    )
                    ids = list(made.scalars())
                    conn.execute(
                        insert(DeliveryMessage),
                        [
                            {"delivery_id": i, "message": p.packed}
                            for i, p in zip(ids, planned, strict=True)
                        ],
                    )
                s.commit()
                return [(p.email.lower(), p.day) for p in planned]
            except IntegrityError:
                s.rollback()
        # Another runner wrote some of the same rows first: each piece on its own, theirs
        # standing.
        self.save_rank_models(models)
        self.remember_refs(refs or {})
        return [
            (d.subscriber, d.digest_date)
            for d in (
                self.plan_delivery(
                    p.email,
                    p.day,
                    p.message_id,
                    p.paper_ids,
                    p.reasons,
                    unpack(p.packed),
                    p.expire_at,
                )
                for p in planned
            )
        ]

    def delivery(self, email: str, day: date) -> Delivery | None:
        with self.session() as s:
            return s.exec(
                select(Delivery).where(
                    Delivery.subscriber == email.lower(), Delivery.digest_date == day
                )
            ).first()

    def plan_delivery(
        self,
        email: str,
        day: date,
        message_id: str,
        paper_ids: list[str],
        reasons: dict[str, Any],
        message: bytes | None = None,
        expire_at: datetime | None = None,
    ) -> Delivery:
        """The delivery row for (subscriber, day), made once; a second call returns the first.

        The papers chosen at planning time are kept on the row, so a retry sends the same digest.
        """
        existing = self.delivery(email, day)
        if existing is not None:
            return existing
        row = Delivery(
            subscriber=email.lower(),
            digest_date=day,
            message_id=message_id,
            paper_ids=paper_ids,
            reasons=reasons,
            expire_at=expire_at,
        )
        with self.session() as s:
            s.add(row)
            try:
                if message is not None:
                    s.flush()
                    assert row.id is not None
                    s.add(DeliveryMessage(delivery_id=row.id, message=pack(message)))
                s.commit()
            except IntegrityError:
                # Another runner planned it first: theirs stands.
                s.rollback()
                found = self.delivery(email, day)
                if found is None:  # pragma: no cover - the unique row must exist now
                    raise
                return found
        return row
