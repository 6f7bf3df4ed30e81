"""The vocabulary of states, defined once: a delivery's state, a subscriber's outcome in a run,
and a reader's verdict, each a StrEnum whose value is what the database stores, with the named
sets every module decides by.
"""

from __future__ import annotations

from enum import StrEnum


class Delivery(StrEnum):
    """One digest's state: pending -> sending -> sent | retry | ambiguous | bounced | expired |
    dead | cancelled (see digest.mail.engine for what leads to each)."""

    PENDING = "pending"
    SENDING = "sending"  # claimed by a runner, with a lease
    SENT = "sent"
    RETRY = "retry"  # a temporary failure; tried again at next_attempt_at
    AMBIGUOUS = "ambiguous"  # lost after the message was handed over: it may have arrived
    BOUNCED = "bounced"  # refused for the recipient (5xx)
    EXPIRED = "expired"  # still undelivered when its retry window closed
    DEAD = "dead"  # its runners kept dying: attempts exhausted
    CANCELLED = "cancelled"  # the reader unsubscribed or was disabled before it went out


# Due: the engine takes these (a `sending` row only once its lease has run out).
DUE = frozenset({Delivery.PENDING, Delivery.RETRY, Delivery.AMBIGUOUS, Delivery.SENDING})
# Live: sent, or may still be; their papers are never offered to the reader again.
LIVE = frozenset(DUE | {Delivery.SENT})
# Failed: finished without arriving; `digest run` exits non-zero for them.
FAILED = frozenset({Delivery.BOUNCED, Delivery.EXPIRED, Delivery.DEAD})
# What `digest retry` may put back in the queue (after the cause was fixed).
REQUEUEABLE = frozenset(FAILED | {Delivery.AMBIGUOUS, Delivery.CANCELLED})


class Outcome(StrEnum):
    """A subscriber's line in a run's report, besides the state of a digest planned in it."""

    ALREADY_SENT = "already-sent"
    NOTHING_NEW = "nothing-new"
    NOT_DUE = "not-due"  # not one of the reader's send days (a weekly digest, say)
    UNSUBSCRIBED = "unsubscribed"
    DRY_RUN = "dry-run"
    ERROR = "error"


# A run is fine (exit 0) when every subscriber's line is one of these. `sending` and `pending`
# are another runner's work (a second node firing the same slot); the engine reports its own
# pause or relay backoff separately. Everything else (retry, ambiguous, FAILED, error) is 2.
SETTLED_OK = frozenset(
    {
        Delivery.SENT,
        Outcome.ALREADY_SENT,
        Outcome.NOTHING_NEW,
        Outcome.NOT_DUE,
        Outcome.UNSUBSCRIBED,
        Outcome.DRY_RUN,
        Delivery.SENDING,
        Delivery.PENDING,
        Delivery.CANCELLED,  # the reader unsubscribed before it went out: as they asked
    }
)


class Verdict(StrEnum):
    LIKE = "like"
    DISLIKE = "dislike"
