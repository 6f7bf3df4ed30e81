"""All database access lives here; every other module passes plain objects around.

Works on SQLite (the default, a file in the data directory) and PostgreSQL: only portable SQL,
and the delivery claim is a conditional UPDATE that a later `FOR UPDATE SKIP LOCKED` can replace.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Text, cast, event, func
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session, col, create_engine, select

from digest.errors import StoreError
from digest.record import NOT_LISTED, PaperRecord
from digest.states import Delivery as DS
from digest.store import migrate
from digest.store.claims import ClaimQueries
from digest.store.deliveries import DeliveryQueries
from digest.store.failures import explain
from digest.store.feedback import FeedbackQueries
from digest.store.packing import unpack
from digest.store.plaintext import PlainTextQueries
from digest.store.planning import PlanningQueries
from digest.store.schema import (
    Delivery,
    DeliveryMessage,
    FeedState,
    LinkRef,
    Paper,
    SubscriberState,
    utcnow,
)

# Text from the arXiv itself wins over text from aggregators when both describe one paper.
_TEXT_PRIORITY = {"arxiv-rss": 3, "arxiv-api": 3, "hf-daily": 2, "rss": 1}
# Deliveries that were, are being or will be sent: their papers are taken.
_CHUNK = 500


class Entry(NamedTuple):
    """A stored paper without its text."""

    id: str
    announced: date
    announce_type: str | None
    sources: list[str]


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


class Store(DeliveryQueries, FeedbackQueries, PlanningQueries, ClaimQueries, PlainTextQueries):
    def __init__(self, url: str) -> None:
        self.url = url
        self.path = Path(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else None
        if self.path is not None:
            # Every reader's address and message lives here: private to the service's user.
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            # Statement values (readers' addresses) stay out of error messages, which reach
            # logs and terminals; the statement itself is still shown.
            self.engine: Engine = create_engine(url, hide_parameters=True)
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

    def upgrade(self) -> tuple[str | None, str]:
        """Bring the schema to this release's newest revision (making it in an empty database);
        returns (from, to). A damaged file, a full disk or an unknown schema is a StoreError."""
        try:
            moved = migrate.upgrade(self.engine, self.safe_url)
            self._private()
            return moved
        except (SQLAlchemyError, OSError) as exc:
            raise explain(exc, self.safe_url) from exc

    def open(self) -> None:
        """For every command but `digest init` and `digest db`: a new database is made at the
        newest revision; one at another revision is refused with what to do."""
        try:
            state = migrate.condition(self.engine)
            if state.empty:
                self.upgrade()
                return
            migrate.check(self.engine, self.safe_url, state)
            self._private()
        except (SQLAlchemyError, OSError) as exc:
            raise explain(exc, self.safe_url) from exc

    def _private(self) -> None:
        """The SQLite file 0600 (its -wal and -shm files copy its mode), whatever the umask; a
        file an older release left readable to all is tightened."""
        if self.path is None:
            return
        for f in (self.path.with_name(self.path.name + s) for s in ("", "-wal", "-shm")):
            # Only our own files: an operator reading another user's database changes nothing.
            if f.exists() and f.stat().st_mode & 0o077 and f.stat().st_uid == os.getuid():
                f.chmod(0o600)

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

    def titles(self, ids: Sequence[str]) -> dict[str, str]:
        """The title of each of these papers that is stored: which are, without loading whole
        papers (a run asks this of every example paper, 20,000 of them at 100,000 readers)."""
        out: dict[str, str] = {}
        with self.session() as s:
            for i in range(0, len(ids), _CHUNK):
                chunk = list(ids[i : i + _CHUNK])
                q = select(Paper.id, Paper.title).where(col(Paper.id).in_(chunk))
                out.update((pid, title) for pid, title in s.exec(q))
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

    def latest_announced(
        self, exclude_types: Sequence[str] = (), until: date | None = None
    ) -> date | None:
        """The newest listing day in the store, at most ``until`` (papers of the excluded
        kinds do not count). ``until`` keeps one paper stored with a date in the future, before
        dates were checked at ingest, from moving everybody's listing window to that day."""
        with self.session() as s:
            q = select(func.max(Paper.announced))
            if until is not None:
                q = q.where(col(Paper.announced) <= until)
            if exclude_types:
                q = q.where(_not_of_types(exclude_types))
            return s.exec(q).one()

    def newest_day(
        self,
        source: str,
        until: date,
        exclude_types: Sequence[str] = (),
        only_types: Sequence[str] = (),
    ) -> date | None:
        """The newest day (at most ``until``) of a paper this source brought (of ``only_types``
        if given, of none of ``exclude_types``)."""
        with self.session() as s:
            q = select(col(Paper.announced)).where(
                col(Paper.announced) <= until, _brought_by(source)
            )
            if exclude_types:
                q = q.where(_not_of_types(exclude_types))
            if only_types:
                q = q.where(col(Paper.announce_type).in_(list(only_types)))
            # Newest first along the date index: an active source stops the scan at once.
            return s.exec(q.order_by(col(Paper.announced).desc()).limit(1)).first()

    def source_entries(self, source: str, first: date, last: date) -> list[Entry]:
        """What a run needs to know of the papers this source brought, announced in [first,
        last], without their text: a 90-day corpus is 20,000 papers, and their texts are only
        read when the vocabulary is fitted again (`texts`)."""
        with self.session() as s:
            q = select(
                col(Paper.id), col(Paper.announced), col(Paper.announce_type), col(Paper.sources)
            ).where(Paper.announced >= first, Paper.announced <= last, _brought_by(source))
            return [Entry(*row) for row in s.exec(q)]

    def texts(self, ids: Sequence[str]) -> Iterator[tuple[str, str]]:
        """Title and abstract of each of these papers, in their order (empty for one not
        stored), a chunk at a time: the caller reads 20,000 abstracts once and keeps none."""
        with self.session() as s:
            for i in range(0, len(ids), _CHUNK):
                chunk = list(ids[i : i + _CHUNK])
                q = select(Paper.id, Paper.title, Paper.abstract).where(col(Paper.id).in_(chunk))
                found = {pid: (title, abstract) for pid, title, abstract in s.exec(q)}
                yield from (found.get(pid, ("", "")) for pid in chunk)

    def purge_source(self, source: str) -> tuple[int, int]:
        """Forget what one source brought: papers only it brought are deleted, others lose its
        tag. Returns (deleted, untagged). Deliveries keep their own copy of what was sent."""
        deleted = untagged = 0
        with self.session() as s:
            for paper in s.exec(select(Paper)):
                mine = [t for t in paper.sources if source_name(t) == source]
                if not mine:
                    continue
                rest = [t for t in paper.sources if t not in mine]
                if rest:
                    paper.sources = rest
                    s.add(paper)
                    untagged += 1
                else:
                    s.delete(paper)
                    deleted += 1
            # Its fetch history goes too: `digest status` stops listing a removed source.
            if (state := s.get(FeedState, source)) is not None:
                s.delete(state)
            s.commit()
        return deleted, untagged

    def has_category(self, category: str) -> bool:
        """Whether any stored paper carries ``category`` (a name outside arXiv's taxonomy may be
        a feed's own)."""
        # Categories are a JSON list stored as text; the quotes keep `cs.L` from matching `cs.LG`.
        needle = _like(json.dumps(category))
        with self.session() as s:
            q = select(Paper.id).where(cast(Paper.categories, Text).like(needle, escape="\\"))
            return s.exec(q.limit(1)).first() is not None

    def count_papers(self, announce_type: str | None = None) -> int:
        """Stored papers (of one announce type if given)."""
        with self.session() as s:
            q = select(func.count()).select_from(Paper)
            if announce_type is not None:
                q = q.where(Paper.announce_type == announce_type)
            return int(s.exec(q).one())

    # -- feeds ----------------------------------------------------------------------------

    def feed_state(self, source: str) -> FeedState | None:
        with self.session() as s:
            return s.get(FeedState, source)

    def feed_states(self) -> list[FeedState]:
        with self.session() as s:
            return list(s.exec(select(FeedState).order_by(col(FeedState.source))).all())

    def save_feed_state(self, state: FeedState) -> None:
        # merge is a read, then an insert or an update: two nodes fetching a new source at
        # once both read nothing and both insert. The second then updates the first's row.
        for attempt in range(2):
            with self.session() as s:
                s.merge(state)
                try:
                    s.commit()
                    return
                except IntegrityError:
                    s.rollback()
                    if attempt:
                        raise

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

    def ref_address(self, ref: str) -> str | None:
        with self.session() as s:
            row = s.get(LinkRef, ref)
            return row.email if row else None

    def message_bytes(self, delivery_id: int) -> bytes | None:
        """The rendered message stored with a delivery (what every attempt sends)."""
        with self.session() as s:
            row = s.get(DeliveryMessage, delivery_id)
            return unpack(bytes(row.message)) if row is not None else None

    def deliveries(self, day: date | None = None) -> list[Delivery]:
        with self.session() as s:
            q = select(Delivery).order_by(col(Delivery.digest_date), col(Delivery.subscriber))
            if day is not None:
                q = q.where(Delivery.digest_date == day)
            return list(s.exec(q).all())

    def sent_to(self, email: str, limit: int) -> list[Delivery]:
        """The reader's last ``limit`` digests that went out, newest first (their Atom feed)."""
        with self.session() as s:
            q = (
                select(Delivery)
                .where(Delivery.subscriber == email.lower(), Delivery.state == DS.SENT)
                .order_by(col(Delivery.digest_date).desc())
                .limit(limit)
            )
            return list(s.exec(q).all())

    # -- the delivery engine ----------------------------------------------------------------


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
    elif row.announce_type in NOT_LISTED and rec.announce_type not in NOT_LISTED:
        # A paper stored as context (looked up, or backfilled the day before it was announced)
        # that a listing now brings is listed, as if the listing had come first: else a
        # backfilled paper would never reach a digest or Hugging Face's trending section.
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


def _like(text: str) -> str:
    """A LIKE pattern finding ``text`` anywhere, its own wildcards escaped."""
    return "%" + text.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"


def _not_of_types(types: Sequence[str]) -> Any:
    return (col(Paper.announce_type).is_(None)) | (col(Paper.announce_type).not_in(list(types)))


def _brought_by(source: str) -> Any:
    """Papers whose JSON list of "kind:name" tags holds this source name."""
    return cast(Paper.sources, Text).like(_like(f':{source}"'), escape="\\")


def source_tag(rec: PaperRecord) -> str:
    """How a paper remembers where it came from: "kind:source-name"."""
    return f"{rec.kind}:{rec.source}"


def _kind(tag: str) -> str:
    return tag.split(":", 1)[0]


def source_name(tag: str) -> str:
    """The configured source name in a paper's "kind:source-name" tag."""
    return tag.split(":", 1)[-1]
