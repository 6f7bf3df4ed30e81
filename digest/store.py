"""All database access lives here; every other module passes plain objects around.

Works on SQLite (the default, a file in the data directory) and PostgreSQL: only portable SQL,
and the delivery claim is a conditional UPDATE that a later `FOR UPDATE SKIP LOCKED` can replace.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, bindparam, case, event, func, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, SQLModel, col, create_engine, select

from digest.errors import StoreError
from digest.models import (
    Control,
    Delivery,
    DeliveryMessage,
    FeedState,
    Paper,
    SubscriberState,
    utcnow,
)
from digest.record import PaperRecord

# Text from the arXiv itself wins over text from aggregators when both describe one paper.
_TEXT_PRIORITY = {"arxiv-rss": 3, "arxiv-api": 3, "hf-daily": 2, "rss": 1}
# Built once: the per-message statement would otherwise be rebuilt and re-coerced each call.
_MARK_SENT = (
    update(Delivery)
    .where(col(Delivery.id).in_(bindparam("ids", expanding=True)))
    .values(
        state="sent", sent_at=bindparam("now"), lease_until=None, claim_token=None, last_error=None
    )
)
# Deliveries that were, are being or will be sent: their papers are taken.
LIVE_STATES = ("pending", "sending", "retry", "ambiguous", "sent")
_CHUNK = 500


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets `digest preview` read while a run writes; busy_timeout waits out short locks.
    cur.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL still survives a crash of the process (the kill -9 case); only an OS
    # crash or power loss can drop the last commits, and a digest whose `sent` is lost that way
    # is sent again with the same Message-ID. FULL would fsync every delivery.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine: Engine = create_engine(url)
        except Exception as exc:  # bad URL, missing driver
            raise StoreError(f"cannot open database {self.safe_url}: {exc}") from exc
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        # One connection per thread kept open for the per-message `sent` commit (mark_sent);
        # `digest serve` runs jobs in threads.
        self._local = threading.local()

    @property
    def safe_url(self) -> str:
        """The URL with any password masked, for messages and logs."""
        return self.url.split("@")[-1] if "@" in self.url else self.url

    def create_all(self) -> None:
        try:
            SQLModel.metadata.create_all(self.engine)
        except OperationalError as exc:
            raise StoreError(f"cannot create tables in {self.safe_url}: {exc.orig}") from exc

    def dispose(self) -> None:
        hot: Connection | None = getattr(self._local, "hot", None)
        if hot is not None:
            hot.close()
            self._local.hot = None
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s:
            yield s

    # -- papers ---------------------------------------------------------------------------

    def upsert_papers(self, records: Iterable[PaperRecord]) -> tuple[int, int]:
        """Insert new papers, merge known ones; returns (added, updated).

        One canonical id is one row whatever the source or version: a Hugging Face entry adds
        upvotes to the arXiv paper, a later version updates the text.
        """
        by_id: dict[str, PaperRecord] = {}
        for r in records:
            prev = by_id.get(r.id)
            by_id[r.id] = r if prev is None else _prefer(prev, r)
        try:
            return self._upsert(by_id)
        except IntegrityError:
            # Another node inserted some of these papers between our look-up and our insert;
            # a second pass finds them and merges instead.
            return self._upsert(by_id)

    def _upsert(self, by_id: dict[str, PaperRecord]) -> tuple[int, int]:
        added = updated = 0
        ids = list(by_id)
        with self.session() as s:
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i : i + _CHUNK]
                existing = {
                    p.id: p for p in s.exec(select(Paper).where(col(Paper.id).in_(chunk))).all()
                }
                for pid in chunk:
                    rec = by_id[pid]
                    row = existing.get(pid)
                    if row is None:
                        s.add(_new_paper(rec))
                        added += 1
                    elif _merge(row, rec):
                        s.add(row)
                        updated += 1
            s.commit()
        return added, updated

    def papers(self, ids: Sequence[str]) -> dict[str, Paper]:
        out: dict[str, Paper] = {}
        with self.session() as s:
            for i in range(0, len(ids), _CHUNK):
                chunk = list(ids[i : i + _CHUNK])
                out.update((p.id, p) for p in s.exec(select(Paper).where(col(Paper.id).in_(chunk))))
        return out

    def papers_between(self, first: date, last: date) -> list[Paper]:
        """Papers announced in [first, last], oldest first, in a stable order."""
        with self.session() as s:
            q = (
                select(Paper)
                .where(Paper.announced >= first, Paper.announced <= last)
                .order_by(col(Paper.announced), col(Paper.id))
            )
            return list(s.exec(q).all())

    def latest_announced(self, exclude_types: Sequence[str] = ()) -> date | None:
        """The newest listing day in the store (papers of the excluded kinds do not count)."""
        with self.session() as s:
            q = select(func.max(Paper.announced))
            if exclude_types:
                q = q.where(
                    (col(Paper.announce_type).is_(None))
                    | (col(Paper.announce_type).not_in(list(exclude_types)))
                )
            return s.exec(q).one()

    def count_papers(self) -> int:
        with self.session() as s:
            return int(s.exec(select(func.count()).select_from(Paper)).one())

    # -- feeds ----------------------------------------------------------------------------

    def feed_state(self, source: str) -> FeedState | None:
        with self.session() as s:
            return s.get(FeedState, source)

    def feed_states(self) -> list[FeedState]:
        with self.session() as s:
            return list(s.exec(select(FeedState).order_by(col(FeedState.source))).all())

    def save_feed_state(self, state: FeedState) -> None:
        with self.session() as s:
            s.merge(state)
            s.commit()

    # -- subscribers and deliveries -------------------------------------------------------

    def is_unsubscribed(self, email: str) -> bool:
        with self.session() as s:
            st = s.get(SubscriberState, email.lower())
            return bool(st and (st.unsubscribed_at is not None or st.disabled))

    def set_unsubscribed(self, email: str, value: bool = True) -> None:
        with self.session() as s:
            st = s.get(SubscriberState, email.lower()) or SubscriberState(email=email.lower())
            st.unsubscribed_at = utcnow() if value else None
            s.add(st)
            s.commit()

    def sent_paper_ids(self, email: str) -> set[str]:
        """Every paper in a digest sent, possibly sent, or still to be sent to this subscriber."""
        with self.session() as s:
            rows = s.exec(
                select(Delivery.paper_ids).where(
                    Delivery.subscriber == email.lower(),
                    col(Delivery.state).in_(LIVE_STATES),
                )
            ).all()
        return {pid for ids in rows for pid in ids}

    def last_digest_at(self, email: str) -> datetime | None:
        """When the newest digest that went out (or may have) to this subscriber was made."""
        with self.session() as s:
            return s.exec(
                select(func.max(Delivery.created_at)).where(
                    Delivery.subscriber == email.lower(),
                    col(Delivery.state).in_(LIVE_STATES),
                )
            ).one()

    def message_of(self, delivery_id: int) -> bytes | None:
        with self.session() as s:
            row = s.get(DeliveryMessage, delivery_id)
            return bytes(row.message) if row else None

    def delivery(self, email: str, day: date) -> Delivery | None:
        with self.session() as s:
            return s.exec(
                select(Delivery).where(
                    Delivery.subscriber == email.lower(), Delivery.digest_date == day
                )
            ).first()

    def deliveries(self, day: date | None = None) -> list[Delivery]:
        with self.session() as s:
            q = select(Delivery).order_by(col(Delivery.digest_date), col(Delivery.subscriber))
            if day is not None:
                q = q.where(Delivery.digest_date == day)
            return list(s.exec(q).all())

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
                    s.add(DeliveryMessage(delivery_id=row.id, message=message))
                s.commit()
            except IntegrityError:
                # Another runner planned it first: theirs stands.
                s.rollback()
                found = self.delivery(email, day)
                if found is None:  # pragma: no cover - the unique row must exist now
                    raise
                return found
        return row

    # -- the delivery engine ----------------------------------------------------------------

    @staticmethod
    def _due(now: datetime) -> Any:
        return or_(
            col(Delivery.state) == "pending",
            and_(
                col(Delivery.state).in_(("retry", "ambiguous")),
                col(Delivery.next_attempt_at) <= now,
            ),
            and_(col(Delivery.state) == "sending", col(Delivery.lease_until) < now),
        )

    def sweep(self, now: datetime, max_attempts: int) -> dict[str, int]:
        """Expire digests past their deadline; give up on ones that keep dying mid-send."""
        with self.session() as s:
            expired = s.exec(  # type: ignore[call-overload]
                update(Delivery)
                .where(col(Delivery.state).in_(("pending", "retry", "ambiguous")))
                .where(col(Delivery.expire_at) < now)
                .values(state="expired", lease_until=None, next_attempt_at=None)
            ).rowcount
            dead = s.exec(  # type: ignore[call-overload]
                update(Delivery)
                .where(col(Delivery.state) == "sending", col(Delivery.lease_until) < now)
                .where(col(Delivery.attempts) >= max_attempts)
                .values(state="dead", lease_until=None, last_error="attempts exhausted")
            ).rowcount
            s.commit()
        return {"expired": int(expired), "dead": int(dead)}

    def claim_next(self, now: datetime, lease: timedelta) -> Delivery | None:
        """Claim the oldest due delivery, or None when nothing is due.

        The candidate is found with a plain SELECT (FOR UPDATE SKIP LOCKED on PostgreSQL, so
        concurrent runners pass each other's rows) and taken with a conditional UPDATE that
        re-checks it is still due: whoever loses the race sees rowcount 0 and tries again.
        """
        due = self._due(now)
        for _ in range(20):
            with self.session() as s:
                q = select(Delivery.id).where(due).order_by(col(Delivery.id)).limit(1)
                if self.engine.dialect.name == "postgresql":
                    q = q.with_for_update(skip_locked=True)
                found = s.exec(q).first()
                if found is None:
                    return None
                taken = s.exec(  # type: ignore[call-overload]
                    update(Delivery)
                    .where(col(Delivery.id) == found, due)
                    .values(
                        state="sending",
                        attempts=Delivery.attempts + 1,
                        lease_until=now + lease,
                    )
                ).rowcount
                s.commit()
                if taken == 1:
                    row = s.get(Delivery, found)
                    if row is not None:
                        s.refresh(row)
                        return row
        return None

    def claim_batch(self, now: datetime, lease: timedelta, limit: int, token: str) -> list[Claim]:
        """Claim up to ``limit`` due deliveries in one statement; they carry ``token``.

        UPDATE ... WHERE id IN (SELECT ... LIMIT n) re-checks that each row is still due, so two
        runners never share a row; on PostgreSQL the sub-select skips rows another runner has
        locked. The claimed rows come back detached, message bytes included.
        """
        due = self._due(now)
        locking = self.engine.dialect.name == "postgresql"
        # Three narrow look-ups, each served by an index, rather than one OR that scans every
        # row already sent: claims stay cheap however far a run has got.
        lookups = [
            select(Delivery.id).where(col(Delivery.state) == "pending").order_by(col(Delivery.id)),
            select(Delivery.id)
            .where(col(Delivery.state).in_(("retry", "ambiguous")))
            .where(col(Delivery.next_attempt_at) <= now)
            .order_by(col(Delivery.next_attempt_at)),
            select(Delivery.id)
            .where(col(Delivery.state) == "sending", col(Delivery.lease_until) < now)
            .order_by(col(Delivery.id)),
        ]
        with self.session() as s:
            ids: list[int] = []
            for q in lookups:
                if len(ids) >= limit:
                    break
                q = q.limit(limit - len(ids))
                if locking:
                    q = q.with_for_update(skip_locked=True)
                ids += [int(r) for r in s.exec(q).all() if r is not None]
            if not ids:
                s.rollback()
                return []
            # Re-checked in the UPDATE: a row another runner took meanwhile is left alone.
            s.exec(  # type: ignore[call-overload]
                update(Delivery)
                .where(col(Delivery.id).in_(ids), due)
                .values(
                    state="sending",
                    attempts=Delivery.attempts + 1,
                    lease_until=now + lease,
                    claim_token=token,
                )
            )
            s.commit()
            # Core rows into a plain dataclass, not ORM or pydantic objects: this is the hot
            # path, and the engine only reads these fields.
            rows = s.execute(
                sa_select(
                    col(Delivery.id),
                    col(Delivery.subscriber),
                    col(Delivery.attempts),
                    col(Delivery.ambiguous_count),
                    col(Delivery.expire_at),
                    col(DeliveryMessage.message),
                )
                .join(DeliveryMessage, col(DeliveryMessage.delivery_id) == col(Delivery.id))
                .where(col(Delivery.claim_token) == token, col(Delivery.state) == "sending")
                .order_by(col(Delivery.id))
            ).all()
            return [Claim(r[0], r[1], r[2], r[3], r[4], bytes(r[5])) for r in rows]

    def release(self, ids: Sequence[int]) -> None:
        """Give back claimed rows that were not attempted (pause, shutdown): not `sending`."""
        if not ids:
            return
        with self.session() as s:
            s.exec(  # type: ignore[call-overload]
                update(Delivery)
                .where(col(Delivery.id).in_(list(ids)), col(Delivery.state) == "sending")
                .values(
                    state=case((col(Delivery.attempts) <= 1, "pending"), else_="retry"),
                    attempts=Delivery.attempts - 1,
                    lease_until=None,
                    claim_token=None,
                )
            )
            s.commit()

    def blocked(self, emails: Sequence[str]) -> dict[str, str]:
        """Of these subscribers, the ones not to send to now, with why."""
        with self.session() as s:
            rows = s.exec(
                select(SubscriberState).where(
                    col(SubscriberState.email).in_([e.lower() for e in emails]),
                    (col(SubscriberState.unsubscribed_at).is_not(None))
                    | (col(SubscriberState.disabled).is_(True)),
                )
            ).all()
        return {
            r.email: ("unsubscribed" if r.unsubscribed_at is not None else "subscriber disabled")
            for r in rows
        }

    def mark_sent(self, ids: Sequence[int], now: datetime) -> None:
        """`sent` for these deliveries, committed before the callers send anything else.

        The hot path of delivery: one statement for all messages whose 250 arrived together,
        on a connection kept open (per thread), with a locked database retried, not lost.
        """
        params = {"ids": list(ids), "now": now}
        delay = 0.05
        for attempt in range(12):
            hot: Connection | None = getattr(self._local, "hot", None)
            try:
                if hot is None:
                    hot = self._local.hot = self.engine.connect()
                hot.execute(_MARK_SENT, params)
                hot.commit()
                return
            except OperationalError:
                if hot is not None:
                    hot.rollback()
                if attempt == 11:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def settle(self, delivery_id: int, **values: Any) -> None:
        """Record an attempt's outcome durably before anything else is sent (A11).

        SQLite's busy timeout absorbs short locks; a longer one is retried here rather than
        lost, because a `sent` that is not recorded is a duplicate waiting to happen.
        """
        values.setdefault("lease_until", None)
        if values.get("state") == "sent":
            values.setdefault("sent_at", utcnow())
        values.setdefault("claim_token", None)
        stmt = update(Delivery).where(col(Delivery.id) == delivery_id).values(**values)
        delay = 0.05
        for attempt in range(12):
            try:
                # Core, not the ORM: this runs once per message on the hot path.
                with self.engine.begin() as conn:
                    conn.execute(stmt)
                return
            except OperationalError:
                if attempt == 11:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def record_bounce(self, email: str, hard: bool, threshold: int, today: date) -> bool:
        """Count a bounce; True if the subscriber is now disabled."""
        with self.session() as s:
            st = s.get(SubscriberState, email.lower()) or SubscriberState(email=email.lower())
            if not hard:
                if st.last_soft_bounce == today:
                    return st.disabled
                st.last_soft_bounce = today
            st.bounce_count += 1
            if st.bounce_count >= threshold and not st.disabled:
                st.disabled = True
                st.disabled_reason = f"{st.bounce_count} bounces"
            s.add(st)
            s.commit()
            return st.disabled

    def enable(self, email: str) -> bool:
        """Clear a bounce-disabled subscriber; False if they were not disabled."""
        with self.session() as s:
            st = s.get(SubscriberState, email.lower())
            if st is None or not st.disabled:
                return False
            st.disabled, st.disabled_reason, st.bounce_count = False, None, 0
            s.add(st)
            s.commit()
            return True

    def subscriber_state(self, email: str) -> SubscriberState | None:
        with self.session() as s:
            return s.get(SubscriberState, email.lower())

    def get_control(self, key: str) -> str | None:
        with self.session() as s:
            row = s.get(Control, key)
            return row.value if row else None

    def set_control(self, key: str, value: str | None) -> None:
        with self.session() as s:
            row = s.get(Control, key)
            if value is None:
                if row is not None:
                    s.delete(row)
            else:
                row = row or Control(key=key, value=value)
                row.value, row.updated = value, utcnow()
                s.add(row)
            s.commit()

    def requeue(self, states: Sequence[str], day: date | None, now: datetime) -> int:
        """Put finished-but-undelivered digests back in the queue (`digest retry`)."""
        with self.session() as s:
            q = update(Delivery).where(col(Delivery.state).in_(list(states)))
            if day is not None:
                q = q.where(col(Delivery.digest_date) == day)
            n = s.exec(  # type: ignore[call-overload]
                q.values(
                    state="retry", next_attempt_at=now, attempts=0, lease_until=None, expire_at=None
                )
            ).rowcount
            s.commit()
            return int(n)

    def counts_by_state(self, day: date | None = None) -> dict[str, int]:
        with self.session() as s:
            q = select(Delivery.state, func.count()).group_by(col(Delivery.state))
            if day is not None:
                q = q.where(Delivery.digest_date == day)
            return {state: int(n) for state, n in s.exec(q).all()}


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery taken for sending: what the engine needs, and the bytes to send."""

    id: int
    subscriber: str
    attempts: int
    ambiguous_count: int
    expire_at: datetime | None
    message: bytes


def _new_paper(rec: PaperRecord) -> Paper:
    return Paper(
        id=rec.id,
        version=rec.version,
        title=rec.title,
        abstract=rec.abstract,
        authors=list(rec.authors),
        categories=list(rec.categories),
        announced=rec.announced,
        announce_type=rec.announce_type,
        abs_url=rec.abs_url,
        pdf_url=rec.pdf_url,
        hf_url=rec.hf_url,
        doi=rec.doi,
        journal_ref=rec.journal_ref,
        upvotes=rec.upvotes,
        sources=[source_tag(rec)],
    )


def _prefer(a: PaperRecord, b: PaperRecord) -> PaperRecord:
    """Two records for one id within one batch: keep the more authoritative, newer one."""
    ka, kb = _TEXT_PRIORITY.get(a.kind, 0), _TEXT_PRIORITY.get(b.kind, 0)
    if kb > ka or (kb == ka and (b.version or 0) >= (a.version or 0)):
        winner, other = b, a
    else:
        winner, other = a, b
    if winner.upvotes is None:
        winner.upvotes = other.upvotes
    winner.hf_url = winner.hf_url or other.hf_url
    return winner


def _merge(row: Paper, rec: PaperRecord) -> bool:
    """Fold a record into a stored paper; True if anything changed."""
    before = row.model_dump()
    best_known = max((_TEXT_PRIORITY.get(_kind(s), 0) for s in row.sources), default=0)
    incoming = _TEXT_PRIORITY.get(rec.kind, 0)
    newer = (rec.version or 0) > (row.version or 0)
    if incoming > best_known or (incoming == best_known and newer):
        row.title = rec.title or row.title
        row.abstract = rec.abstract or row.abstract
        row.authors = list(rec.authors) or row.authors
        row.categories = list(rec.categories) or row.categories
        row.abs_url = rec.abs_url or row.abs_url
        row.pdf_url = rec.pdf_url or row.pdf_url
    if newer:
        row.version = rec.version
    # A listing date beats a publication date: keep the listing day the paper first appeared.
    if (
        rec.kind == "arxiv-rss"
        and rec.announce_type in ("new", "cross")
        and not any(_kind(s) == "arxiv-rss" for s in row.sources)
    ):
        row.announced = rec.announced
        row.announce_type = rec.announce_type
    row.doi = row.doi or rec.doi
    row.journal_ref = row.journal_ref or rec.journal_ref
    row.hf_url = rec.hf_url or row.hf_url
    if rec.upvotes is not None:
        row.upvotes = rec.upvotes
    tag = source_tag(rec)
    if tag not in row.sources:
        row.sources = [*row.sources, tag]
    if row.model_dump() == before:
        return False
    row.updated = utcnow()
    return True


def source_tag(rec: PaperRecord) -> str:
    """How a paper remembers where it came from: "kind:source-name"."""
    return f"{rec.kind}:{rec.source}"


def _kind(tag: str) -> str:
    return tag.split(":", 1)[0]
