"""The delivery queue's queries: claims, outcomes, bounces and the shared switches.

A mixin of Store (digest.store), kept apart because it is the engine's hot path and has rules
of its own: every claim is a conditional UPDATE that also works under FOR UPDATE SKIP LOCKED
on PostgreSQL, and `sent` is committed before a worker sends anything else.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, or_, true, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, func, select

from digest.states import Delivery as DS
from digest.store.packing import unpack_to_send
from digest.store.schema import Control, Delivery, DeliveryMessage, SubscriberState, utcnow

log = logging.getLogger("digest.send")  # the engine's log: where operators look for delivery

# Built once: the per-message statement would otherwise be rebuilt and re-coerced each call.
_MARK_SENT = (
    update(Delivery)
    .where(col(Delivery.id).in_(bindparam("ids", expanding=True)))
    .values(
        state=DS.SENT, sent_at=bindparam("now"), lease_until=None, claim_token=None, last_error=None
    )
)


def _release_untried(s: Session, now: datetime) -> int:
    """Give back to the queue the digests a runner that died had claimed but never tried.

    An engine worker claims a few rows under its own token and tries them one at a time in id
    order, and each outcome is committed before it starts the next (`Engine._record_sent`,
    `Engine._apply`). So of a dead worker's rows still `sending`, only the lowest id can have
    been on the wire; the others never left. Counted as possibly sent all the same, a digest
    claimed by two runs that both died was held for the operator without ever being tried
    (`bench/kill_test.py`: 96 of 500 readers once runs got fast enough for kills to land while
    sending). The attempt the claim counted is taken back. Rows `sending` without a claim
    token (not made by a worker that claims) are left to the rules that follow."""
    dead = and_(
        col(Delivery.state) == DS.SENDING,
        col(Delivery.lease_until) < now,
        col(Delivery.claim_token).is_not(None),
    )
    first_of_each = sa_select(func.min(Delivery.id)).where(dead).group_by(col(Delivery.claim_token))
    released = s.exec(  # type: ignore[call-overload]
        update(Delivery)
        .where(dead, col(Delivery.id).not_in(first_of_each))
        .values(**_back_in_queue(now))
    ).rowcount
    return int(released or 0)


def _back_in_queue(now: datetime) -> dict[str, Any]:
    """A claimed row given back untried: the attempt its claim counted taken back, due at
    once (a row taken over more than once goes back as `retry`, which needs a time, or no
    claim would find it)."""
    return {
        "state": case((col(Delivery.attempts) <= 1, DS.PENDING), else_=DS.RETRY),
        "attempts": case((col(Delivery.attempts) > 0, Delivery.attempts - 1), else_=0),
        "next_attempt_at": func.coalesce(col(Delivery.next_attempt_at), now),
        "lease_until": None,
        "claim_token": None,
    }


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery taken for sending: what the engine needs, and the bytes to send."""

    id: int
    subscriber: str
    attempts: int
    ambiguous_count: int
    expire_at: datetime | None
    # As it goes after DATA but for the final dot (digest.store.packing.unpack_to_send). None
    # only for a row planned without a message (never by the pipeline).
    message: bytes | None
    token: str | None = None  # the claim it was taken under


class DeliveryQueries:
    """Delivery-queue queries; Store provides the engine, the sessions and the thread-local."""

    engine: Engine
    _local: threading.local

    def session(self) -> AbstractContextManager[Session]:  # pragma: no cover - Store's
        raise NotImplementedError

    @staticmethod
    def _due(now: datetime) -> Any:
        return or_(
            col(Delivery.state) == DS.PENDING,
            and_(
                col(Delivery.state).in_((DS.RETRY, DS.AMBIGUOUS)),
                col(Delivery.next_attempt_at) <= now,
            ),
            and_(col(Delivery.state) == DS.SENDING, col(Delivery.lease_until) < now),
        )

    def sweep(self, now: datetime, max_attempts: int, resends: int = 1) -> dict[str, int]:
        """Expire digests past their deadline; give up on ones that keep dying mid-send.

        A digest whose runner died while sending it may have arrived; it is sent again at most
        ``resends`` times in all (`ambiguous_count`), then held as `ambiguous` for the operator.
        """
        with self.session() as s:
            _release_untried(s, now)
            held = s.exec(  # type: ignore[call-overload]
                update(Delivery)
                .where(col(Delivery.state) == DS.SENDING, col(Delivery.lease_until) < now)
                .where(col(Delivery.ambiguous_count) >= resends)
                .values(
                    state=DS.AMBIGUOUS,
                    lease_until=None,
                    next_attempt_at=None,
                    ambiguous_count=Delivery.ambiguous_count + 1,
                    last_error="the sender stopped mid-send: it may have arrived; held",
                )
            ).rowcount
            expired = s.exec(  # type: ignore[call-overload]
                update(Delivery)
                .where(col(Delivery.state).in_((DS.PENDING, DS.RETRY, DS.AMBIGUOUS)))
                .where(col(Delivery.expire_at) < now)
                .values(state=DS.EXPIRED, lease_until=None, next_attempt_at=None)
            ).rowcount
            dead = s.exec(  # type: ignore[call-overload]
                update(Delivery)
                .where(col(Delivery.state) == DS.SENDING, col(Delivery.lease_until) < now)
                .where(col(Delivery.attempts) >= max_attempts)
                .values(state=DS.DEAD, lease_until=None, last_error="attempts exhausted")
            ).rowcount
            s.commit()
        return {DS.EXPIRED: int(expired), DS.DEAD: int(dead), "held": int(held)}

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
            select(Delivery.id).where(col(Delivery.state) == DS.PENDING).order_by(col(Delivery.id)),
            select(Delivery.id)
            .where(col(Delivery.state).in_((DS.RETRY, DS.AMBIGUOUS)))
            .where(col(Delivery.next_attempt_at) <= now)
            .order_by(col(Delivery.next_attempt_at)),
            select(Delivery.id)
            .where(col(Delivery.state) == DS.SENDING, col(Delivery.lease_until) < now)
            .order_by(col(Delivery.id)),
        ]
        with self.session() as s:
            # A runner that died since this pass began: only the row it may have had on the
            # wire is taken over as possibly sent; the rest of its claim goes back untried, as
            # the sweep at the start of a pass does. (A live worker starts nothing once its
            # lease is nearly over, `Engine._worker`.) An indexed look-up first: until the
            # row in flight is taken over (when nothing else is due), each claim repeats the
            # release, which then finds nothing.
            if s.exec(lookups[2].limit(1)).first() is not None:
                _release_untried(s, now)
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
                    state=DS.SENDING,
                    attempts=Delivery.attempts + 1,
                    # Taken over from a runner that died mid-send: it may have arrived already.
                    ambiguous_count=Delivery.ambiguous_count
                    + case((col(Delivery.state) == DS.SENDING, 1), else_=0),
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
                .join(
                    DeliveryMessage,
                    col(DeliveryMessage.delivery_id) == col(Delivery.id),
                    isouter=True,  # a row without a message must still come back, to be settled
                )
                .where(col(Delivery.claim_token) == token, col(Delivery.state) == DS.SENDING)
                .order_by(col(Delivery.id))
            ).all()
            return [
                Claim(
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    r[4],
                    unpack_to_send(bytes(r[5])) if r[5] is not None else None,
                    token,
                )
                for r in rows
            ]

    def release(
        self, ids: Sequence[int], token: str | None = None, now: datetime | None = None
    ) -> None:
        """Give back claimed rows that were not attempted (pause, shutdown, a lease running
        out): not `sending`, due at ``now``. With ``token``, only rows still under that claim:
        a row another runner has taken since is theirs."""
        if not ids:
            return
        mine = col(Delivery.claim_token) == token if token is not None else true()
        with self.session() as s:
            s.exec(  # type: ignore[call-overload]
                update(Delivery)
                .where(col(Delivery.id).in_(list(ids)), col(Delivery.state) == DS.SENDING, mine)
                .values(**_back_in_queue(now or utcnow()))
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

    # -- the transitions out of `sending`, one each (see digest.mail.engine for when) -------------

    def mark_retry(
        self,
        delivery_id: int,
        attempts: int,
        next_attempt_at: datetime,
        why: str,
        token: str | None = None,
    ) -> None:
        """A temporary failure: tried again at ``next_attempt_at``."""
        self._settle(
            delivery_id,
            token,
            state=DS.RETRY,
            attempts=attempts,
            next_attempt_at=next_attempt_at,
            last_error=why,
        )

    def mark_ambiguous(
        self,
        delivery_id: int,
        ambiguous_count: int,
        next_attempt_at: datetime | None,
        why: str,
        token: str | None = None,
    ) -> None:
        """Lost after the message was handed over; resent at ``next_attempt_at``, or held."""
        self._settle(
            delivery_id,
            token,
            state=DS.AMBIGUOUS,
            ambiguous_count=ambiguous_count,
            next_attempt_at=next_attempt_at,
            last_error=why,
        )

    def mark_bounced(self, delivery_id: int, why: str, token: str | None = None) -> None:
        self._settle(delivery_id, token, state=DS.BOUNCED, last_error=why)

    def mark_expired(
        self, delivery_id: int, attempts: int, why: str, token: str | None = None
    ) -> None:
        self._settle(delivery_id, token, state=DS.EXPIRED, attempts=attempts, last_error=why)

    def mark_dead(self, delivery_id: int, why: str, token: str | None = None) -> None:
        self._settle(delivery_id, token, state=DS.DEAD, last_error=why)

    def mark_cancelled(self, delivery_id: int, why: str, token: str | None = None) -> None:
        self._settle(delivery_id, token, state=DS.CANCELLED, last_error=why)

    def _settle(self, delivery_id: int, token: str | None = None, **values: Any) -> None:
        """Record an attempt's outcome durably before anything else is sent (A11).

        With ``token``, only while the row is still `sending` under that claim: an attempt
        that outlived its lease may end after another runner took the row over (and perhaps
        sent it), and its late failure must not undo what that runner recorded. (A `sent` is
        recorded whatever the claim, `mark_sent`: a 250 is proof of delivery.)

        SQLite's busy timeout absorbs short locks; a longer one is retried here rather than
        lost, because a `sent` that is not recorded is a duplicate waiting to happen.
        """
        values.setdefault("lease_until", None)
        if values.get("state") == DS.SENT:
            values.setdefault("sent_at", utcnow())
        values.setdefault("claim_token", None)
        stmt = update(Delivery).where(col(Delivery.id) == delivery_id)
        if token is not None:
            stmt = stmt.where(col(Delivery.claim_token) == token, col(Delivery.state) == DS.SENDING)
        stmt = stmt.values(**values)
        delay = 0.05
        for attempt in range(12):
            try:
                # Core, not the ORM: this runs once per message on the hot path.
                with self.engine.begin() as conn:
                    done = conn.execute(stmt).rowcount
                if not done:
                    log.warning(
                        "delivery=%s outcome %s not recorded: another runner holds it now",
                        delivery_id,
                        values.get("state"),
                    )
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

    def subscriber_states(self) -> dict[str, SubscriberState]:
        """Every stored subscriber state by lower-case address: unsubscribes, disables, bounces."""
        with self.session() as s:
            return {st.email: st for st in s.exec(select(SubscriberState))}

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
        """Put finished-but-undelivered digests back in the queue (`digest retry`). Only those
        whose message is still stored: one pruned after `[digest] keep_days` has nothing left
        to send (`unsendable` counts them)."""
        with self.session() as s:
            q = update(Delivery).where(
                col(Delivery.state).in_(list(states)),
                col(Delivery.id).in_(select(DeliveryMessage.delivery_id)),
            )
            if day is not None:
                q = q.where(col(Delivery.digest_date) == day)
            n = s.exec(  # type: ignore[call-overload]
                q.values(
                    state=DS.RETRY,
                    next_attempt_at=now,
                    attempts=0,
                    lease_until=None,
                    expire_at=None,
                )
            ).rowcount
            s.commit()
            return int(n)

    def unsendable(self, states: Sequence[str], day: date | None) -> int:
        """Digests in these states whose stored message was pruned (`requeue` leaves them)."""
        with self.session() as s:
            q = select(func.count()).where(
                col(Delivery.state).in_(list(states)),
                col(Delivery.id).not_in(select(DeliveryMessage.delivery_id)),
            )
            if day is not None:
                q = q.where(col(Delivery.digest_date) == day)
            return int(s.exec(q).one())

    def bring_forward(self, day: date | None, now: datetime) -> int:
        """Digests waiting for their next attempt are due now (`digest retry --state retry`,
        once the relay is back); their deadline and attempt count stay as they are."""
        with self.session() as s:
            q = update(Delivery).where(col(Delivery.state) == DS.RETRY)
            if day is not None:
                q = q.where(col(Delivery.digest_date) == day)
            n = s.exec(q.values(next_attempt_at=now)).rowcount  # type: ignore[call-overload]
            s.commit()
            return int(n)

    def states_on(self, days: dict[str, date]) -> dict[str, tuple[str, bool]]:
        """Each subscriber's digest of their own date, where one exists, as (state, whether it
        may have arrived more than once): "today" is a different date for a subscriber in Tokyo
        and one in Los Angeles."""
        if not days:
            return {}
        days = {email.lower(): day for email, day in days.items()}  # as deliveries store them
        q = select(
            col(Delivery.subscriber),
            col(Delivery.digest_date),
            col(Delivery.state),
            col(Delivery.ambiguous_count),
        ).where(col(Delivery.digest_date).in_(set(days.values())))
        # Plain rows through the connection: the ORM's row handling was a quarter of a second
        # of `digest status` at 100,000 readers.
        with self.session() as s:
            rows = s.connection().execute(q).all()
        return {who: (state, twice > 0) for who, day, state, twice in rows if days.get(who) == day}

    def counts_for_days(self, days: dict[str, date]) -> dict[str, int]:
        """Deliveries by state, each subscriber's counted only for its own date."""
        counts: dict[str, int] = {}
        for state, _ in self.states_on(days).values():
            counts[state] = counts.get(state, 0) + 1
        return counts

    def waiting(self, states: Sequence[str], limit: int) -> tuple[list[Delivery], int]:
        """Digests in ``states``, soonest next attempt first (at most ``limit``), and how many."""
        with self.session() as s:
            where = col(Delivery.state).in_(list(states))
            total = int(s.exec(select(func.count()).select_from(Delivery).where(where)).one())
            q = (
                select(Delivery)
                .where(where)
                .order_by(col(Delivery.next_attempt_at), col(Delivery.id))
            )
            return list(s.exec(q.limit(limit)).all()), total

    def counts_by_state(self) -> dict[str, int]:
        """Every delivery by state, whatever its date (the benchmarks' final tallies)."""
        with self.session() as s:
            q = select(col(Delivery.state), func.count()).group_by(col(Delivery.state))
            return {state: int(n) for state, n in s.exec(q).all()}
