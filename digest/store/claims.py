"""Batches of a run claimed by the node that plans them: a mixin of Store (digest.store).

Several `digest run` or `digest serve` processes on one database split a run's planning by
claiming its batches one at a time: a claim is a row keyed by (run, batch), so of two nodes
inserting the same one, the database lets exactly one succeed. A node that dies leaves its
claim unfinished; once the claim is older than the lease, another node takes it over (a
conditional update, so again only one does). Planning a batch twice is safe (each subscriber's
digest is one row per day, and the first one made stands), so the lease only has to be long
enough that this is rare, not exact.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, select

from digest.store.schema import PlanClaim


class ClaimQueries:
    def session(self) -> AbstractContextManager[Session]:  # pragma: no cover - Store's
        raise NotImplementedError

    def claim_plan_batch(
        self,
        run: str,
        batches: int,
        owner: str,
        now: datetime,
        lease: timedelta,
        since: datetime,
        take_own: bool = False,
    ) -> int | None:
        """The lowest batch of `run` (0 .. batches - 1) nobody has claimed, now claimed by
        `owner`; else one free to take: claimed before `since` (the start of the claiming
        node's run: a run that began after that batch was planned, a later run of the day,
        plans it again), or unfinished past its lease (its node died), or with ``take_own``
        one of `owner`'s own unfinished ones (its planner is known to be gone); else None."""
        stamp, begun = now.astimezone(UTC), since.astimezone(UTC)

        def free_to_take(r: PlanClaim) -> bool:
            if r.batch >= batches:
                return False
            if _aware(r.claimed_at) < begun:
                return True  # an earlier run's
            if r.done_at is not None:
                return False
            return _aware(r.claimed_at) < stamp - lease or (take_own and r.owner == owner)

        for _ in range(batches + 1):
            with self.session() as s:
                rows = s.exec(select(PlanClaim).where(PlanClaim.run == run)).all()
                taken = {r.batch for r in rows}
                free = next((i for i in range(batches) if i not in taken), None)
                if free is not None:
                    s.add(PlanClaim(run=run, batch=free, owner=owner, claimed_at=stamp))
                    try:
                        s.commit()
                        return free
                    except IntegrityError:
                        s.rollback()  # another node claimed it first: look again
                        continue
                stale = [r for r in rows if free_to_take(r)]
                for r in sorted(stale, key=lambda r: r.batch):
                    took = s.execute(
                        update(PlanClaim)
                        .where(
                            col(PlanClaim.run) == run,
                            col(PlanClaim.batch) == r.batch,
                            # Unchanged since read (owners are unique per run and node), so of
                            # two nodes taking it over only one matches.
                            col(PlanClaim.owner) == r.owner,
                            col(PlanClaim.done_at).is_(None)
                            if r.done_at is None
                            else col(PlanClaim.done_at).is_not(None),
                        )
                        .values(owner=owner, claimed_at=stamp, done_at=None)
                    )
                    s.commit()
                    if took.rowcount == 1:  # type: ignore[attr-defined]
                        return r.batch
                return None
        return None

    def finish_plan_batch(self, run: str, batch: int, owner: str, now: datetime) -> None:
        with self.session() as s:
            s.execute(
                update(PlanClaim)
                .where(
                    col(PlanClaim.run) == run,
                    col(PlanClaim.batch) == batch,
                    col(PlanClaim.owner) == owner,
                )
                .values(done_at=now.astimezone(UTC))
            )
            s.commit()

    def batches_in_progress(
        self, run: str, now: datetime, lease: timedelta, since: datetime
    ) -> int:
        """Claims of `run` made since `since`, unfinished and still within their lease."""
        cutoff = max(now.astimezone(UTC) - lease, since.astimezone(UTC))
        with self.session() as s:
            rows = s.exec(
                select(PlanClaim).where(PlanClaim.run == run, col(PlanClaim.done_at).is_(None))
            ).all()
        return sum(1 for r in rows if _aware(r.claimed_at) >= cutoff)

    def prune_claims(self, before: datetime) -> int:
        with self.session() as s:
            gone = s.execute(
                delete(PlanClaim).where(col(PlanClaim.claimed_at) < before.astimezone(UTC))
            )
            s.commit()
            return int(gone.rowcount)  # type: ignore[attr-defined]


def _aware(t: datetime) -> datetime:
    """A stored time as UTC with its zone (SQLite hands them back without one)."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
