"""`digest status` as an operator reads it: who is mailed next, what waits for a retry and until
when, and only the sources the config still names."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from digest.profiles import Profile
from digest.service.schedule import local_send_time, slots
from digest.store import Store
from tests.conftest import digest, drop_source, relay_elsewhere


def _slot_rows(stdout: str) -> dict[str, str]:
    """subscriber -> the slot line naming them, from the status table."""
    rows: dict[str, str] = {}
    for line in stdout.splitlines():
        for who in ("ada@example.org", "bob@example.org"):
            if who in line and line.lstrip("│ ")[:4].isdigit():
                rows[who] = line
    return rows


def test_a_reader_whose_digest_of_today_exists_is_next_mailed_on_the_following_day() -> None:
    ada = Profile(email="ada@example.org", timezone="Europe/London", send_at="07:00")
    early = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)  # before her 07:00
    assert slots([ada], early) == [(datetime(2026, 11, 23, 7, 0, tzinfo=UTC), [ada.email])]
    sent_today = slots([ada], early, lambda p, day: day == early.date())
    assert sent_today == [(datetime(2026, 11, 24, 7, 0, tzinfo=UTC), [ada.email])]


def test_status_leaves_unsubscribed_readers_out_of_the_next_slots_and_counts_them(
    site: Path,
) -> None:
    digest("subscribers", "unsubscribe", "bob@example.org", cwd=site)
    ran = digest("status", cwd=site)
    assert ran.returncode == 0, ran.stderr
    rows = _slot_rows(ran.stdout)
    assert "ada@example.org" in rows and "bob@example.org" not in rows
    assert "not mailed: 1 unsubscribed" in ran.stdout


def test_status_after_a_run_puts_each_reader_at_their_next_day_not_the_slot_already_served(
    site: Path,
) -> None:
    assert digest("run", cwd=site).returncode == 0
    ran = digest("status", cwd=site)
    now = datetime.now(UTC)
    readers = (
        Profile(email="ada@example.org", timezone="Europe/London", send_at="07:00"),
        Profile(email="bob@example.org", timezone="America/New_York", send_at="06:30"),
    )
    for profile in readers:
        local_today = now.astimezone(profile.tz).date()
        shown = _slot_rows(ran.stdout)[profile.email].lstrip("│ ")[:16]
        # Today's digest exists: the slot shown is the next local day's send time.
        tomorrow = local_send_time(profile, local_today + timedelta(days=1))
        assert shown == tomorrow.strftime("%Y-%m-%d %H:%M"), (profile.email, shown)
    assert "2 sent" in ran.stdout


def test_status_lists_waiting_digests_with_their_next_try_and_the_relay_backoff(
    site: Path,
) -> None:
    relay_elsewhere(site)
    run = digest("run", cwd=site)
    assert run.returncode == 2
    # The run's own table says when each waiting digest is tried next, not only the error.
    ada_line = next(ln for ln in run.stdout.splitlines() if "ada@" in ln)
    assert "retry" in ada_line and "next try" in run.stdout
    ran = digest("status", cwd=site)
    waiting = [
        ln for ln in ran.stdout.splitlines() if re.search(r"@example.org .* (retry|pending) ", ln)
    ]
    assert len(waiting) == 2, ran.stdout
    # Tried once the relay's break ends (the queued one too, not "now"), given up at a deadline.
    assert all(len(re.findall(r"\d\d-\d\d \d\d:\d\d", ln)) == 2 for ln in waiting), ran.stdout
    assert "the relay is down or asked for a break, until" in ran.stdout
    assert "digest retry --state retry" in ran.stdout


def test_status_shows_only_configured_sources_and_names_a_removed_one_once(site: Path) -> None:
    assert digest("ingest", cwd=site).returncode == 0
    drop_source(site, "hf")
    ran = digest("status", cwd=site)
    source_rows = [ln for ln in ran.stdout.splitlines() if ln.startswith("│ hf ")]
    assert source_rows == []
    assert "no longer configured: hf" in ran.stdout
    purge = digest("papers", "purge", "--source", "hf", cwd=site)
    assert purge.returncode == 0, purge.stderr
    assert "no longer configured" not in digest("status", cwd=site).stdout


def test_status_tells_a_digest_possibly_delivered_twice_from_a_plain_sent(site: Path) -> None:
    assert digest("run", cwd=site).returncode == 0
    store = Store(f"sqlite:///{site / 'data' / 'digest.db'}")
    try:
        (ada,) = [d for d in store.deliveries() if d.subscriber == "ada@example.org"]
        assert ada.id is not None
        store._settle(ada.id, ambiguous_count=1)  # as the engine records a resend after a lost 250
    finally:
        store.dispose()
    shown = digest("status", cwd=site).stdout
    assert "1 sent, 1 sent (possibly twice)" in shown
