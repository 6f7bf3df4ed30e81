"""Batches of a run claimed by the node that plans them: a mixin of Store (digest.store).

Several `digest run` or `digest serve` processes on one database split a run's planning by
claiming its batches one at a time: a claim is a row keyed by (run, batch), so of two nodes
inserting the same one, the database lets exactly one succeed. A node that dies leaves its
claim unfinished; once the claim is older than the lease, another node takes it over (a
conditional update, so again only one does). Planning a batch twice is safe (each subscriber's
digest is one row per day, and the first one made stands), so the lease only has to be long
enough that this is rare, not exact.

A run repeated later in the day must plan everyone again (papers arrived since), while nodes
firing the same slot must share one set of batches: claims carry a generation, and a node
joins the newest one while it is unfinished and starts the next once it is complete
(`plan_generation`). Only the lease compares times, so nodes' clocks need only roughly agree.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, func, select

from digest.store.schema import PlanClaim


class ClaimQueries:
    def session(self) -> AbstractContextManager[Session]:  # pragma: no cover - Store's
        raise NotImplementedError

    def plan_generation(self, run: str, batches: int) -> int:
        """The generation of `run` a node starting now joins: the newest one while any of
        its batches is unclaimed or unfinished (nodes firing the same slot share it), else
        a new one (a later run of the day plans everyone again, with what arrived since).
        Decided by the rows alone, not by clocks."""
        with self.session() as s:
            newest = s.exec(
                select(func.max(PlanClaim.generation)).where(PlanClaim.run == run)
            ).one()
            if newest is None:
                return 0
            done = s.exec(
                select(func.count()).where(
                    PlanClaim.run == run,
                    PlanClaim.generation == newest,
                    col(PlanClaim.done_at).is_not(None),
                )
            ).one()
        return int(newest) + 1 if done >= batches else int(newest)

    def claim_plan_batch(
        self,
        run: str,
        generation: int,
        batches: int,
        owner: str,
        now: datetime,
        lease: timedelta,
        take_own: bool = False,
    ) -> int | None:
        """The lowest batch (0 .. batches - 1) of this generation of `run` nobody has
        claimed, now claimed by `owner`; else one whose claim is unfinished past its lease
        (its node died), or with ``take_own`` one of `owner`'s own unfinished ones (its
        planner is known to be gone); else None."""
        stamp = now.astimezone(UTC)

        def free_to_take(r: PlanClaim) -> bool:
            if r.batch >= batches or r.done_at is not None:
                return False
            return _aware(r.claimed_at) < stamp - lease or (take_own and r.owner == owner)

        mine = (col(PlanClaim.run) == run, col(PlanClaim.generation) == generation)
        for _ in range(batches + 1):
            with self.session() as s:
                rows = s.exec(select(PlanClaim).where(*mine)).all()
                taken = {r.batch for r in rows}
                free = next((i for i in range(batches) if i not in taken), None)
                if free is not None:
                    claim = PlanClaim(
                        run=run, generation=generation, batch=free, owner=owner, claimed_at=stamp
                    )
                    s.add(claim)
                    try:
                        s.commit()
                        return free
                    except IntegrityError:
                        s.rollback()  # another node claimed it first: look again
                        continue
                for r in sorted((r for r in rows if free_to_take(r)), key=lambda r: r.batch):
                    took = s.execute(
                        update(PlanClaim)
                        .where(
                            *mine,
                            col(PlanClaim.batch) == r.batch,
                            # Unchanged since read (owners are unique per node and run), so of
                            # two nodes taking it over only one matches.
                            col(PlanClaim.owner) == r.owner,
                            col(PlanClaim.done_at).is_(None),
                        )
                        .values(owner=owner, claimed_at=stamp)
                    )
                    s.commit()
                    if took.rowcount == 1:  # type: ignore[attr-defined]
                        return r.batch
                return None
        return None

    def finish_plan_batch(
        self, run: str, generation: int, batch: int, owner: str, now: datetime
    ) -> None:
        with self.session() as s:
            s.execute(
                update(PlanClaim)
                .where(
                    col(PlanClaim.run) == run,
                    col(PlanClaim.generation) == generation,
                    col(PlanClaim.batch) == batch,
                )
                # Whoever finishes it: a node that took it over from a slow one, or the slow
                # one after all; either way its subscribers are planned.
                .values(done_at=now.astimezone(UTC))
            )
            s.commit()

    def renew_plan_batch(
        self, run: str, generation: int, batch: int, owner: str, now: datetime
    ) -> bool:
        """Keep `owner`'s unfinished claim alive for another lease; False if it is not theirs
        any more (taken over after all)."""
        with self.session() as s:
            kept = s.execute(
                update(PlanClaim)
                .where(
                    col(PlanClaim.run) == run,
                    col(PlanClaim.generation) == generation,
                    col(PlanClaim.batch) == batch,
                    col(PlanClaim.owner) == owner,
                    col(PlanClaim.done_at).is_(None),
                )
                .values(claimed_at=now.astimezone(UTC))
            )
            s.commit()
            return bool(kept.rowcount)  # type: ignore[attr-defined]

    def batches_in_progress(
        self, run: str, generation: int, now: datetime, lease: timedelta
    ) -> int:
        """Claims of this generation of `run` that are unfinished and within their lease."""
        cutoff = now.astimezone(UTC) - lease
        with self.session() as s:
            rows = s.exec(
                select(PlanClaim).where(
                    PlanClaim.run == run,
                    PlanClaim.generation == generation,
                    col(PlanClaim.done_at).is_(None),
                )
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
