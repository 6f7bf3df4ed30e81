"""Readers' feedback and the trained ranking models: a mixin of Store (digest.store)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, select

from digest.states import LIVE, Verdict
from digest.store.schema import SECTIONS_KEY, Delivery, Feedback, RankModel, utcnow

VERDICTS = tuple(Verdict)


@dataclass(frozen=True, slots=True)
class TrainedModel:
    """A model just trained, as it is stored (a `RankModel` row): a plain object, since a run
    makes one per reader and an ORM row cost more to build than to write."""

    subscriber: str
    fingerprint: str
    vocabulary: str
    blob: bytes


def upsert_rank_models(conn: Connection, models: Sequence[TrainedModel]) -> None:
    """Write these models in the connection's transaction, each replacing the subscriber's
    stored one (`save_rank_models`; a run writes them with the batch, `plan_deliveries`).

    One statement executed for many rows, not one statement holding every row's values: a
    1,000-row VALUES list was compiled anew for each batch, 0.1 ms a reader."""
    if not models:
        return
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = insert(RankModel)
    stmt = stmt.on_conflict_do_update(
        index_elements=["subscriber"],
        set_={k: stmt.excluded[k] for k in RankModel.model_fields if k != "subscriber"},
    )
    now = utcnow()
    rows = [
        {
            "subscriber": m.subscriber,
            "fingerprint": m.fingerprint,
            "vocabulary": m.vocabulary,
            "blob": m.blob,
            "trained_at": now,
        }
        for m in models
    ]
    conn.execute(stmt, rows)


class FeedbackQueries:
    engine: Engine

    def session(self) -> AbstractContextManager[Session]:  # pragma: no cover - Store's
        raise NotImplementedError

    def set_feedback(
        self, email: str, paper_id: str, verdict: str | None, now: datetime | None = None
    ) -> bool:
        """Record (or with None, withdraw) a verdict; True if anything changed."""
        if verdict is not None and verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}")
        email = email.lower()
        for _attempt in range(2):
            with self.session() as s:
                row = s.exec(
                    select(Feedback).where(
                        Feedback.subscriber == email, Feedback.paper_id == paper_id
                    )
                ).first()
                if verdict is None:
                    if row is None:
                        return False
                    s.delete(row)
                elif row is None:
                    s.add(
                        Feedback(
                            subscriber=email, paper_id=paper_id, verdict=verdict, at=now or utcnow()
                        )
                    )
                elif row.verdict == verdict:
                    return False
                else:
                    row.verdict, row.at = verdict, now or utcnow()
                    s.add(row)
                try:
                    s.commit()
                    return True
                except IntegrityError:
                    # Two clicks raced to insert the same pair: the second one updates instead.
                    s.rollback()
        return False

    def feedback(self, email: str) -> dict[str, str]:
        """paper id -> verdict for one subscriber, oldest first."""
        with self.session() as s:
            rows = s.exec(
                select(Feedback.paper_id, Feedback.verdict)
                .where(Feedback.subscriber == email.lower())
                .order_by(col(Feedback.at), col(Feedback.id))
            ).all()
        return {pid: verdict for pid, verdict in rows}

    def feedback_all(self, emails: Sequence[str] | None = None) -> dict[str, dict[str, str]]:
        """Every subscriber's feedback in one query (planning a run for many subscribers)."""
        out: dict[str, dict[str, str]] = defaultdict(dict)
        with self.session() as s:
            q = select(Feedback.subscriber, Feedback.paper_id, Feedback.verdict).order_by(
                col(Feedback.at), col(Feedback.id)
            )
            if emails is not None:
                q = q.where(col(Feedback.subscriber).in_([e.lower() for e in emails]))
            for email, pid, verdict in s.exec(q).all():
                out[email][pid] = verdict
        return dict(out)

    def shown_sections(self, emails: Sequence[str], since: date) -> dict[str, dict[str, str]]:
        """Per subscriber, the email section each paper of their digests since ``since`` was
        shown in, where a digest had sections: a verdict trains the topic its paper was shown
        under."""
        out: dict[str, dict[str, str]] = defaultdict(dict)
        with self.session() as s:
            for start in range(0, len(emails), 500):
                part = [e.lower() for e in emails[start : start + 500]]
                q = select(Delivery.subscriber, Delivery.reasons).where(
                    col(Delivery.subscriber).in_(part),
                    col(Delivery.state).in_(LIVE),
                    col(Delivery.digest_date) >= since,
                )
                for email, reasons in s.exec(q):
                    sections = reasons.get(SECTIONS_KEY) if isinstance(reasons, dict) else None
                    if isinstance(sections, dict):
                        out[email].update({k: str(v) for k, v in sections.items()})
        return dict(out)

    def rank_models(self, emails: Sequence[str] | None = None) -> dict[str, RankModel]:
        """Stored models, of these subscribers only when given (a slot, a preview)."""
        with self.session() as s:
            q = select(RankModel)
            if emails is not None:
                q = q.where(col(RankModel.subscriber).in_([e.lower() for e in emails]))
            return {m.subscriber: m for m in s.exec(q).all()}

    def save_rank_models(self, models: Sequence[TrainedModel]) -> None:
        """Keep trained models, one upsert per batch.

        An upsert, not read-then-write: two runners may train the same subscriber at once (a
        slot fired on two nodes), and a plain insert from the second would collide.
        """
        if not models:
            return
        with self.engine.begin() as conn:
            upsert_rank_models(conn, models)

    def prune_rank_models(self, keep: Sequence[str]) -> int:
        """Drop the models of subscribers whose profiles are gone; returns how many.

        The difference is taken here, not in SQL: `NOT IN` with 100,000 addresses is more bound
        parameters than SQLite (32,766) or PostgreSQL (65,535) take in one statement."""
        wanted = {e.lower() for e in keep}
        with self.engine.begin() as conn:
            stored = conn.execute(select(RankModel.subscriber)).scalars().all()
            # A topic's model is kept under its owner's address, ":" and a number.
            gone = [e for e in stored if e.split(":", 1)[0] not in wanted]
            for start in range(0, len(gone), 500):
                part = gone[start : start + 500]
                conn.execute(delete(RankModel).where(col(RankModel.subscriber).in_(part)))
        return len(gone)
