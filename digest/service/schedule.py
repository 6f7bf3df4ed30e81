"""When things happen: each subscriber's next send time, and send slots grouped by instant.

A slot is an instant in UTC at which one or more subscribers are due (their `send_at` in their
own time zone). Daylight-saving changes are handled by zoneinfo: a `send_at` that falls in a
spring-forward gap is sent at the first valid minute after it; in the autumn overlap, the first
of the two moments is used.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

from digest.packed import Timed

T = TypeVar("T", bound=Timed)


def digest_day(profile: Timed, now: datetime) -> date:
    """The digest date is the subscriber's local calendar day."""
    return now.astimezone(ZoneInfo(profile.timezone)).date()


def _send_time(profile: Timed) -> time:
    hh, mm = (int(x) for x in profile.send_at.split(":"))  # "HH:MM", checked at load
    return time(hh, mm)


def local_send_time(profile: Timed, day: date) -> datetime:
    """The moment (UTC) `send_at` happens on ``day`` in the subscriber's zone."""
    tz = ZoneInfo(profile.timezone)
    naive = datetime.combine(day, _send_time(profile))
    # A wall time that does not exist (spring forward) does not survive a round trip through
    # UTC: step to the first minute that does.
    for _ in range(24 * 60):
        candidate = naive.replace(tzinfo=tz, fold=0)
        if candidate.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == naive:
            return candidate.astimezone(UTC)
        naive += timedelta(minutes=1)
    raise AssertionError(f"no valid local time after {naive} in {tz}")  # pragma: no cover


def is_send_day(profile: Timed, day: date) -> bool:
    """Whether a digest may go out on this local day (a weekly reader's day, say)."""
    return not profile.send_days or str(day.weekday()) in profile.send_days


def next_send(profile: Timed, now: datetime) -> datetime:
    """The next `send_at` on a send day at or after ``now`` (UTC)."""
    today = digest_day(profile, now)
    for offset in range(9):
        day = today + timedelta(days=offset)
        if is_send_day(profile, day):
            at = local_send_time(profile, day)
            if at >= now:
                return at
    raise AssertionError("unreachable: a send day comes within a week")  # pragma: no cover


def due_today(profile: Timed, now: datetime) -> bool:
    """Whether today is a send day and its (local) send time has come."""
    today = digest_day(profile, now)
    return is_send_day(profile, today) and now >= local_send_time(profile, today)


def last_send_day(profile: Timed, now: datetime) -> date:
    """The latest send day whose send time has come by ``now`` (today's, if it has)."""
    today = digest_day(profile, now)
    for back in range(8):
        day = today - timedelta(days=back)
        if is_send_day(profile, day) and now >= local_send_time(profile, day):
            return day
    raise AssertionError("unreachable: a send day came within a week")  # pragma: no cover


def due_on(profile: Timed, now: datetime, last_digest_day: date | None) -> bool:
    """Whether a run now makes this reader's digest, whatever their send time (`digest run`):
    on each of their send days, and on the day after one that went without a digest (the
    service was down on a weekly reader's Monday, or nothing new had come: Tuesday makes up
    for it). Only the day after: a send day that passed with nothing new must not make every
    later day of the week a send day. A new reader waits for their day."""
    today = digest_day(profile, now)
    if is_send_day(profile, today):
        return True
    missed = last_send_day(profile, now)
    return (
        missed == today - timedelta(days=1)
        and last_digest_day is not None
        and last_digest_day < missed
    )


def longest_gap(send_days: str) -> int:
    """The most days from one send day to the next (1 for every day, 7 for weekly)."""
    if not send_days:
        return 1
    days = sorted(int(d) for d in send_days)
    return max((b - a) % 7 or 7 for a, b in zip(days, days[1:] + days[:1], strict=True))


def cadence(profile: Timed) -> str:
    """The reader's send days in words, for status lines: "" for every day."""
    if not profile.send_days:
        return ""
    names = [calendar.day_name[int(d)] for d in profile.send_days]
    return ("weekly on " if len(names) == 1 else "on ") + ", ".join(names)


def slots(
    profiles: Sequence[T],
    now: datetime,
    has_digest: Callable[[T, date], bool] | None = None,
) -> list[tuple[datetime, list[str]]]:
    """The next send instant of every subscriber, grouped: [(when, [emails])], soonest first.

    ``has_digest(profile, day)`` says a digest of that local day exists already (sent earlier,
    by hand): that day's slot sends nothing, so the next one is the following day's.
    """
    grouped: dict[datetime, list[str]] = defaultdict(list)
    # Readers share a few (zone, send_at) pairs: each pair's next two slots are worked out once
    # (zoneinfo arithmetic for each of 100,000 readers took seconds of `digest status`).
    pairs: dict[tuple[str, str, str], tuple[datetime, date, datetime]] = {}
    for p in profiles:
        key = (p.timezone, p.send_at, p.send_days)
        pair = pairs.get(key)
        if pair is None:
            first = next_send(p, now)
            after = next_send(p, first + timedelta(minutes=1))
            pair = pairs[key] = (first, digest_day(p, first), after)
        when, day, later = pair
        if has_digest is not None and has_digest(p, day):
            when = later
        grouped[when].append(p.email)
    return sorted(grouped.items())
