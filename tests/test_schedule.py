"""Send times and slots, with injected time (no test waits for a real minute)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from digest.profiles import Profile
from digest.service.schedule import due_today, local_send_time, next_send, slots


def person(tz: str, at: str, email: str = "a@example.org") -> Profile:
    return Profile(email=email, timezone=tz, send_at=at)


def test_send_time_follows_daylight_saving() -> None:
    london = person("Europe/London", "07:00")
    assert local_send_time(london, date(2026, 11, 23)) == datetime(2026, 11, 23, 7, tzinfo=UTC)
    assert local_send_time(london, date(2026, 7, 1)) == datetime(2026, 7, 1, 6, tzinfo=UTC)


def test_a_send_time_in_the_spring_forward_gap_goes_at_the_first_valid_minute() -> None:
    # 2026-03-08 02:30 does not exist in New York; 03:00 EDT is 07:00 UTC.
    ny = person("America/New_York", "02:30")
    assert local_send_time(ny, date(2026, 3, 8)) == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)


def test_a_send_time_in_the_autumn_overlap_uses_the_first_occurrence() -> None:
    # 2026-11-01 01:30 happens twice in New York; the first (EDT) is 05:30 UTC.
    ny = person("America/New_York", "01:30")
    assert local_send_time(ny, date(2026, 11, 1)) == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)


def test_next_send_and_due_today() -> None:
    tokyo = person("Asia/Tokyo", "08:00")  # 23:00 UTC the day before
    now = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # 17:00 in Tokyo
    assert due_today(tokyo, now)
    assert next_send(tokyo, now) == datetime(2026, 11, 23, 23, 0, tzinfo=UTC)
    early = person("Europe/Berlin", "09:30")
    assert not due_today(early, datetime(2026, 11, 23, 8, 0, tzinfo=UTC))


def test_slots_group_subscribers_due_at_the_same_instant() -> None:
    now = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
    grouped = slots(
        [
            person("Europe/London", "07:00", "a@example.org"),
            person("UTC", "07:00", "b@example.org"),  # the same instant in November
            person("Europe/Berlin", "07:00", "c@example.org"),
        ],
        now,
    )
    assert grouped == [
        (datetime(2026, 11, 23, 6, 0, tzinfo=UTC), ["c@example.org"]),
        (datetime(2026, 11, 23, 7, 0, tzinfo=UTC), ["a@example.org", "b@example.org"]),
    ]
