"""Every row of RELIABILITY.md sections A (delivery semantics), B (SMTP replies) and C
(connection and TLS), against the scripted fault server, real SQLite and an injected clock."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from digest.config import Config, DeliveryConfig, SmtpConfig, WebConfig
from digest.mail import engine as engine_module
from digest.mail.engine import PAUSE_KEY, Engine, EngineReport
from digest.mail.policy import Decision, decide
from digest.service.pipeline import run
from digest.store import Store
from digest.store.schema import Delivery
from tests.conftest import NOW
from tests.smtp_fault import FaultServer


class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kw: float) -> None:
        self.t += timedelta(**kw)


@pytest.fixture
def fault() -> Iterator[FaultServer]:
    server = FaultServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


def make_cfg(fault: FaultServer, tmp_path: Path, **delivery: Any) -> Config:
    key = tmp_path / "key"
    key.write_text("k" * 32)
    settings: dict[str, Any] = {
        "connections": 2,
        "retry_base": 60,
        "relay_backoff": 120,
        "error_pause_min": 50,
        **delivery,
    }
    return Config(
        smtp=SmtpConfig(
            host=fault.host,
            port=fault.port,
            security="none",
            from_address="digest@papers.example.org",
            timeout=2.0,
        ),
        web=WebConfig(secret_key_file=key),
        delivery=DeliveryConfig(**settings),
    )


def plan(
    store: Store, emails: list[str], clock: Clock, day: date | None = None, window_hours: float = 20
) -> list[Delivery]:
    day = day or clock().date()
    out = []
    for email in emails:
        mid = f"<{day}.{email}@papers.example.org>"
        msg = (
            f"From: digest@papers.example.org\r\nTo: {email}\r\nMessage-ID: {mid}\r\n"
            f"Subject: digest\r\n\r\nHello {email}\r\n"
        ).encode()
        out.append(
            store.plan_delivery(
                email,
                day,
                mid,
                ["p1"],
                {},
                message=msg,
                expire_at=clock() + timedelta(hours=window_hours),
            )
        )
    return out


def deliver(store: Store, cfg: Config, clock: Clock) -> EngineReport:
    return asyncio.run(Engine(store, cfg, clock).run())


def states(store: Store) -> dict[str, str]:
    return {d.subscriber: d.state for d in store.deliveries()}


def emails(n: int) -> list[str]:
    return [f"reader{i:03d}@example.org" for i in range(n)]


# -- A: delivery semantics --------------------------------------------------------------------


def test_A1_planned_digests_are_sent_exactly_once_after_a_restart(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path
) -> None:
    cfg = make_cfg(fault, tmp_path)
    plan(store, emails(12), clock)  # planned, then the process "died": nothing was sent
    report = deliver(store, cfg, clock)
    assert report.counts["sent"] == 12
    assert sorted(s.rcpt for s in fault.stored) == emails(12)
    assert deliver(store, cfg, clock).counts["sent"] == 0
    assert len(fault.stored) == 12


def test_A2_a_crash_after_250_resends_only_the_in_flight_digest_with_its_message_id(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg(fault, tmp_path, connections=1)
    plan(store, emails(5), clock)
    real_mark_sent = store.mark_sent

    class Crash(BaseException):
        pass

    def crash_on_third_sent(ids: list[int], now: datetime) -> None:
        if len(fault.stored) == 3:
            raise Crash  # the process dies between the server's 250 and our commit
        real_mark_sent(ids, now)

    monkeypatch.setattr(store, "mark_sent", crash_on_third_sent)
    with pytest.raises(Crash):
        deliver(store, cfg, clock)
    monkeypatch.setattr(store, "mark_sent", real_mark_sent)
    assert list(states(store).values()).count("sending") == 1
    clock.advance(seconds=cfg.delivery.lease_seconds + 1)
    deliver(store, cfg, clock)
    assert set(states(store).values()) == {"sent"}
    ids = [s.data.split(b"Message-ID: ")[1].split(b"\r\n")[0] for s in fault.stored]
    duplicates = len(ids) - len(set(ids))
    assert duplicates == 1  # bound: the rows in flight when the process died (one connection)
    assert len(set(ids)) == 5


def test_A3_a_lease_held_by_a_dead_worker_expires_and_attempts_are_capped(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path
) -> None:
    cfg = make_cfg(fault, tmp_path, max_attempts=3, lease_seconds=60, data_timeout=30)
    a, b = plan(store, emails(2), clock)
    # Both claimed by workers that died; a has used all its attempts, b has not.
    for row, attempts in ((a, 3), (b, 1)):
        assert row.id is not None
        store._settle(
            row.id, state="sending", attempts=attempts, lease_until=clock() + timedelta(seconds=60)
        )
    assert deliver(store, cfg, clock).counts["sent"] == 0  # leases still live
    clock.advance(seconds=61)
    report = deliver(store, cfg, clock)
    assert report.counts["dead"] == 1 and report.counts["sent"] == 1
    assert states(store) == {a.subscriber: "dead", b.subscriber: "sent"}


def test_A4_a_message_stored_before_the_drop_is_ambiguous_counted_and_resent_once(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path
) -> None:
    cfg = make_cfg(fault, tmp_path)
    (row,) = plan(store, ["ada@example.org"], clock)
    fault.plan("ada@example.org", "drop-after-data")
    report = deliver(store, cfg, clock)
    assert report.counts["ambiguous"] == 1 and report.possible_duplicates == 1
    assert states(store) == {"ada@example.org": "ambiguous"}
    assert deliver(store, cfg, clock).counts["sent"] == 0  # not before the retry delay
    clock.advance(seconds=cfg.delivery.retry_base + 1)
    deliver(store, cfg, clock)
    got = store.delivery("ada@example.org", row.digest_date)
    assert got is not None and got.state == "sent" and got.ambiguous_count == 1
    assert len(fault.received_by("ada@example.org")) == 2  # the one duplicate SMTP allows
    assert fault.stored[0].data == fault.stored[1].data  # same bytes, same Message-ID


def test_A4_with_the_hold_policy_an_ambiguous_digest_waits_for_the_operator(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path
) -> None:
    cfg = make_cfg(fault, tmp_path, ambiguous="hold")
    plan(store, ["ada@example.org"], clock)
    fault.plan("ada@example.org", "drop-after-data")
    deliver(store, cfg, clock)
    clock.advance(hours=5)
    deliver(store, cfg, clock)
    assert states(store) == {"ada@example.org": "ambiguous"}
    assert store.requeue(["ambiguous"], None, clock()) == 1
    deliver(store, cfg, clock)
    assert states(store) == {"ada@example.org": "sent"}


def test_A5_a_drop_during_data_is_retried_and_arrives_once(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path
) -> None:
    cfg = make_cfg(fault, tmp_path)
    plan(store, ["ada@example.org", "bob@example.org"], clock)
    fault.plan("ada@example.org", "drop-during-data")
    deliver(store, cfg, clock)
    clock.advance(seconds=cfg.delivery.retry_base + 1)
    deliver(store, cfg, clock)
    assert set(states(store).values()) == {"sent"}
    assert len(fault.received_by("ada@example.org")) == 1
    assert len(fault.received_by("bob@example.org")) == 1


def test_A7_a_run_five_minutes_late_still_sends_todays_digest(
    store: Store, workspace: Config, smtp_server: Any
) -> None:
    # Ada's send_at is 07:00 Europe/London; the service comes back at 07:05.
    late = datetime(2026, 11, 23, 7, 5, tzinfo=UTC)
    report = run(workspace, store, now=late)
    assert {r.email: r.status for r in report.results}["ada@example.org"] == "sent"


def test_A8_three_days_down_gives_one_catch_up_digest_not_three(
    store: Store, workspace: Config, smtp_server: Any
) -> None:
    # Nothing ran for three days (listings piled up); the first run back sends one digest each,
    # dated today, and makes no rows for the days that were missed.
    run(workspace, store, now=NOW)
    assert sorted(m.rcpt_tos[0] for m in smtp_server.received) == [
        "ada@example.org",
        "bob@example.org",
    ]
    assert {d.digest_date for d in store.deliveries()} == {NOW.date()}
    run(workspace, store, now=NOW + timedelta(hours=2))
    assert len(smtp_server.received) == 2


def test_A9_a_manual_rerun_for_a_day_already_sent_opens_no_smtp_transaction(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path
) -> None:
    cfg = make_cfg(fault, tmp_path)
    plan(store, emails(5), clock)
    deliver(store, cfg, clock)
    connections, transactions = fault.connections, fault.transactions
    plan(store, emails(5), clock)  # the same day planned again: the existing rows stand
    report = deliver(store, cfg, clock)
    assert report.connections == 0
    assert (fault.connections, fault.transactions) == (connections, transactions)


def test_A10_pausing_mid_run_and_resuming_sends_only_the_rest(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path
) -> None:
    cfg = make_cfg(fault, tmp_path, connections=1)
    plan(store, emails(20), clock)
    fault.on_store.append(
        lambda: store.set_control(PAUSE_KEY, "operator") if len(fault.stored) == 6 else None
    )
    engine = Engine(store, cfg, clock)
    # The engine notices the pause between messages.
    engine.pause_check_interval = 0.0
    report = asyncio.run(engine.run())
    assert report.paused == "operator"
    sent_first = len(fault.stored)
    assert 6 <= sent_first < 20
    assert deliver(store, cfg, clock).counts["sent"] == 0  # still paused
    store.set_control(PAUSE_KEY, None)
    deliver(store, cfg, clock)
    assert sorted(s.rcpt for s in fault.stored) == emails(20)  # each exactly once


def test_A11_a_locked_database_delays_the_next_send_until_sent_is_durable(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path
) -> None:
    cfg = make_cfg(fault, tmp_path, connections=1)
    plan(store, emails(3), clock)
    db = store.url[len("sqlite:///") :]
    released: list[float] = []
    arrivals: list[float] = []

    def lock_briefly() -> None:
        arrivals.append(time.monotonic())
        if len(arrivals) == 1:
            holder = sqlite3.connect(db, timeout=10, check_same_thread=False)
            holder.execute("BEGIN IMMEDIATE")

            def release() -> None:
                time.sleep(1.0)
                released.append(time.monotonic())
                holder.rollback()
                holder.close()

            threading.Thread(target=release, daemon=True).start()

    fault.on_store.append(lock_briefly)
    report = deliver(store, cfg, clock)
    assert report.counts["sent"] == 3 and set(states(store).values()) == {"sent"}
    assert released and arrivals[1] >= released[0]


# -- B: SMTP replies --------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["450 4.2.0 busy", "451 4.3.0 later", "452 4.3.1 full"])
def test_B1_temporary_replies_back_off_with_jitter_then_expire_before_the_next_digest(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path, code: str
) -> None:
    cfg = make_cfg(fault, tmp_path, retry_base=60, retry_max=3600, max_attempts=3)
    (row,) = plan(store, ["ada@example.org"], clock, window_hours=20)
    fault.default = f"data:{code}"
    delays = []
    for _ in range(60):
        deliver(store, cfg, clock)
        got = store.delivery("ada@example.org", row.digest_date)
        assert got is not None
        if got.state != "retry":
            break
        assert got.next_attempt_at is not None
        delay = (got.next_attempt_at.replace(tzinfo=UTC) - clock()).total_seconds()
        step = min(3600, 60 * 2 ** (len(delays)))
        assert step / 2 - 1 <= delay <= step + 1
        delays.append(delay)
        clock.advance(seconds=delay + 1)
    assert got.state == "expired"
    assert clock() <= NOW + timedelta(hours=21)
    assert len(set(round(d) for d in delays)) > len(delays) // 2  # jittered, not a fixed step
    state = store.subscriber_state("ada@example.org")
    assert state is not None and state.bounce_count == 1  # one soft bounce


def test_B2_550_5_1_1_bounces_without_retry_and_disables_after_the_threshold(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path
) -> None:
    cfg = make_cfg(fault, tmp_path, bounce_threshold=2)
    fault.plan("ghost@example.org", "rcpt:550 5.1.1 no such user", "rcpt:550 5.1.1 no such user")
    plan(store, ["ghost@example.org"], clock)
    deliver(store, cfg, clock)
    assert states(store) == {"ghost@example.org": "bounced"}
    assert fault.transactions == 1
    assert not store.is_unsubscribed("ghost@example.org")
    clock.advance(days=1)
    plan(store, ["ghost@example.org"], clock)
    deliver(store, cfg, clock)
    assert store.is_unsubscribed("ghost@example.org")  # disabled
    clock.advance(days=1)
    plan(store, ["ghost@example.org"], clock)
    deliver(store, cfg, clock)
    assert [d.state for d in store.deliveries()] == ["bounced", "bounced", "cancelled"]
    assert store.enable("ghost@example.org") and not store.is_unsubscribed("ghost@example.org")


def test_B3_552_on_rcpt_is_temporary(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path
) -> None:
    cfg = make_cfg(fault, tmp_path)
    fault.plan("ada@example.org", "rcpt:552 4.2.2 mailbox full")
    plan(store, ["ada@example.org"], clock)
    deliver(store, cfg, clock)
    assert states(store) == {"ada@example.org": "retry"}
    clock.advance(hours=2)
    deliver(store, cfg, clock)
    assert states(store) == {"ada@example.org": "sent"}


@pytest.mark.parametrize("where", ["greeting", "rcpt", "data"])
def test_B4_421_backs_off_the_relay_and_records_no_bounce(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path, where: str
) -> None:
    cfg = make_cfg(fault, tmp_path, relay_backoff=300, connections=1)
    plan(store, emails(4), clock)
    if where == "greeting":
        fault.greeting = "421 4.3.2 too busy, come back later"
    else:
        fault.plan(emails(4)[0], f"{where}:421 4.3.2 shutting down")
    report = deliver(store, cfg, clock)
    assert report.counts["relay"] == 1 and report.counts["sent"] == 0
    assert all(store.subscriber_state(e) is None for e in emails(4))  # no bounce anywhere
    assert all(d.attempts == 0 for d in store.deliveries())
    clock.advance(seconds=100)
    # The backoff outlives the run: the next run (any process) leaves the relay alone too.
    transactions = fault.transactions
    assert deliver(store, cfg, clock).counts["sent"] == 0
    assert fault.transactions == transactions
    fault.greeting = None
    clock.advance(seconds=301)
    deliver(store, cfg, clock)
    assert set(states(store).values()) == {"sent"}


@pytest.mark.parametrize(
    ("setup", "expect"),
    [
        ("auth", "535"),
        ("mail", "550 5.7.1"),
        ("dmarc", "5.7.26"),
        ("message-id", "Message-ID"),
    ],
)
def test_B5_systemic_rejections_pause_the_run_and_bounce_nobody(
    store: Store,
    fault: FaultServer,
    clock: Clock,
    tmp_path: Path,
    setup: str,
    expect: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = make_cfg(fault, tmp_path, connections=1)
    if setup == "auth":
        fault.auth = "535 5.7.8 Authentication credentials invalid"
        monkeypatch.setenv("TEST_SMTP_SECRET", "s3cr3t-pa55")
        cfg = cfg.model_copy(
            update={
                "smtp": cfg.smtp.model_copy(
                    update={"username": "digest", "password_env": "TEST_SMTP_SECRET"}
                )
            }
        )
    elif setup == "mail":
        fault.default = "mail:550 5.7.1 sender address rejected"
    elif setup == "dmarc":
        fault.default = "data:550 5.7.26 unauthenticated email from papers.example.org"
    else:
        fault.default = "data:550 5.5.0 message rejected: missing Message-ID header"
    plan(store, emails(10), clock)
    caplog.set_level(logging.DEBUG)
    report = deliver(store, cfg, clock)
    assert report.paused is not None and expect in report.paused
    assert store.get_control(PAUSE_KEY) == report.paused
    assert report.counts["bounced"] == 0 and report.counts["systemic"] == 1
    assert set(states(store).values()) <= {"pending", "retry"}
    assert all(store.subscriber_state(e) is None for e in emails(10))
    assert "s3cr3t-pa55" not in caplog.text
    assert all("s3cr3t-pa55" not in (d.last_error or "") for d in store.deliveries())
    # Resumed after the fix, everything goes, from where it stopped.
    fault.auth, fault.default = None, "ok"
    cfg = cfg.model_copy(update={"smtp": cfg.smtp.model_copy(update={"username": None})})
    store.set_control(PAUSE_KEY, None)
    deliver(store, cfg, clock)
    assert sorted(s.rcpt for s in fault.stored) == emails(10)


def test_B6_an_error_rate_above_the_threshold_pauses_delivery(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path
) -> None:
    cfg = make_cfg(fault, tmp_path, error_pause_min=10, error_pause_ratio=0.5, connections=1)
    plan(store, emails(40), clock)
    fault.default = "data:451 4.7.0 temporarily deferred"
    report = deliver(store, cfg, clock)
    assert report.paused is not None and "error rate" in report.paused
    assert fault.transactions < 40  # it stopped instead of trying everyone
    assert store.get_control(PAUSE_KEY) == report.paused


def test_B7_a_garbage_reply_is_temporary_and_the_next_message_gets_a_new_connection(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path
) -> None:
    cfg = make_cfg(fault, tmp_path, connections=1)
    plan(store, ["ada@example.org", "bob@example.org"], clock)
    fault.plan("ada@example.org", "garbage-mail")
    deliver(store, cfg, clock)
    assert states(store) == {"ada@example.org": "retry", "bob@example.org": "sent"}
    bob = fault.received_by("bob@example.org")[0]
    assert bob.connection == 2  # reconnected after the error, not reused


def test_decisions_follow_the_reply_code_not_the_exception() -> None:
    assert decide("rcpt", 550, "5.1.1 no such user") == Decision(
        "bounced", "550 5.1.1 no such user"
    )
    assert decide("rcpt", 552, "4.2.2 full").state == "retry"
    assert decide("data", 552, "5.3.4 too big").state == "bounced"
    assert decide("mail", 421, "busy").state == "relay"
    assert decide("mail", 553, "sender rejected").state == "systemic"
    assert decide("connect", 535, "5.7.8 bad credentials").state == "systemic"
    assert decide("data", None, "lost").state == "ambiguous"
    assert decide("rcpt", None, "lost").state == "retry"
    assert decide("connect", None, "refused").state == "relay"
    assert decide("mail", -1, "garbage").state == "retry"
    assert decide("data", 250, "ok").state == "sent"


# -- C: connection and TLS --------------------------------------------------------------------


def test_C_starttls_is_required_when_configured_and_nothing_goes_in_plaintext(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path
) -> None:
    cfg = make_cfg(fault, tmp_path)
    cfg = cfg.model_copy(update={"smtp": cfg.smtp.model_copy(update={"security": "starttls"})})
    plan(store, emails(3), clock)
    report = deliver(store, cfg, clock)
    assert report.paused is not None and "STARTTLS" in report.paused
    assert fault.transactions == 0 and fault.stored == []


def test_C_a_stalled_command_times_out_and_is_retried(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path
) -> None:
    cfg = make_cfg(fault, tmp_path)
    cfg = cfg.model_copy(update={"smtp": cfg.smtp.model_copy(update={"timeout": 0.3})})
    plan(store, ["ada@example.org"], clock)
    fault.plan("ada@example.org", "stall-rcpt:1.5")
    deliver(store, cfg, clock)
    assert states(store) == {"ada@example.org": "retry"}


def test_C_a_slow_reply_to_the_final_dot_is_waited_for_not_duplicated(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path
) -> None:
    cfg = make_cfg(fault, tmp_path, data_timeout=10)
    cfg = cfg.model_copy(update={"smtp": cfg.smtp.model_copy(update={"timeout": 0.3})})
    plan(store, ["ada@example.org"], clock)
    fault.plan("ada@example.org", "stall-final:1.2")
    deliver(store, cfg, clock)
    assert states(store) == {"ada@example.org": "sent"}
    assert len(fault.stored) == 1


def test_C_connections_are_reused_up_to_the_configured_count(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path
) -> None:
    cfg = make_cfg(fault, tmp_path, connections=1, messages_per_connection=3)
    plan(store, emails(7), clock)
    report = deliver(store, cfg, clock)
    assert report.counts["sent"] == 7
    assert fault.connections == report.connections == 3
    assert {s.connection for s in fault.stored} == {1, 2, 3}


def test_C_the_pool_never_opens_more_connections_than_configured(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path
) -> None:
    cfg = make_cfg(fault, tmp_path, connections=3, messages_per_connection=1000)
    plan(store, emails(30), clock)
    report = deliver(store, cfg, clock)
    assert report.counts["sent"] == 30 and fault.connections <= 3


# -- Load: the fault mix (the full-size run is bench/delivery_faults.py) ----------------------


def test_load_fault_mix_final_counts_match_the_injected_faults() -> None:
    from tests.conftest import run_bench

    out = run_bench("delivery_faults.py", "--messages", "800", "--size", "2000", "--seed", "3")
    assert "OK: final counts match the injected faults" in out


def test_C_the_rate_limit_spaces_messages_over_all_connections(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path
) -> None:
    cfg = make_cfg(fault, tmp_path, connections=3, rate_limit=20)
    plan(store, emails(10), clock)
    t0 = time.monotonic()
    report = deliver(store, cfg, clock)
    # Ten messages at 20 per second: at least nine gaps of 50 ms, whatever the connections.
    assert report.counts["sent"] == 10 and time.monotonic() - t0 >= 0.45


def test_a_delivery_without_a_stored_message_is_dead_not_stuck(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path
) -> None:
    store.plan_delivery("ada@example.org", clock().date(), "<m@x>", [], {})  # no message
    report = deliver(store, make_cfg(fault, tmp_path), clock)
    assert report.counts["dead"] == 1 and fault.transactions == 0
    (row,) = store.deliveries()
    assert (row.state, row.last_error) == ("dead", "no message stored")


def test_todays_counts_take_each_subscribers_own_date(store: Store) -> None:
    # Just after midnight UTC: Tokyo's subscriber is on the 24th, Los Angeles' still on the 23rd.
    store.plan_delivery("tokyo@example.org", date(2026, 11, 24), "<t1@x>", [], {})
    store.plan_delivery("la@example.org", date(2026, 11, 23), "<l1@x>", [], {})
    store.plan_delivery("la@example.org", date(2026, 11, 22), "<l0@x>", [], {})
    today = {"tokyo@example.org": date(2026, 11, 24), "la@example.org": date(2026, 11, 23)}
    assert store.counts_for_days(today) == {"pending": 2}
    assert store.counts_for_days({"la@example.org": date(2026, 11, 24)}) == {}
    # Deliveries are stored under the lower-cased address; a profile may spell it otherwise.
    assert store.counts_for_days({"Tokyo@Example.org": date(2026, 11, 24)}) == {"pending": 1}


def test_A4_a_relay_that_stores_every_copy_and_never_answers_gets_one_resend_then_a_hold(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path
) -> None:
    cfg = make_cfg(fault, tmp_path, data_timeout=0.3)
    plan(store, ["ada@example.org", "bob@example.org"], clock)
    for who in ("ada@example.org", "bob@example.org"):
        fault.plan(who, *["stall-final:2"] * 10)
    duplicates = 0
    for _ in range(12):  # a day of retry runs
        duplicates += deliver(store, cfg, clock).possible_duplicates
        clock.advance(minutes=30)
    for who in ("ada@example.org", "bob@example.org"):
        assert len(fault.received_by(who)) == 2  # the first copy and one resend, not ten
    assert set(states(store).values()) == {"ambiguous"}
    held = [d for d in store.deliveries() if d.state == "ambiguous"]
    assert all(d.next_attempt_at is None and d.ambiguous_count == 2 for d in held)
    assert duplicates == 4  # each loss is reported as a possible duplicate


def test_A2_a_digest_resent_after_its_sender_died_is_reported_as_a_possible_duplicate(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path
) -> None:
    cfg = make_cfg(fault, tmp_path, lease_seconds=120, data_timeout=30)
    (row,) = plan(store, ["ada@example.org"], clock)
    assert row.id is not None
    # A runner claimed it, handed it over, and died before recording `sent` (disk full, kill).
    store._settle(row.id, state="sending", attempts=1, lease_until=clock() + timedelta(seconds=120))
    clock.advance(seconds=121)
    report = deliver(store, cfg, clock)
    assert report.counts["sent"] == 1 and report.possible_duplicates == 1
    got = store.delivery("ada@example.org", row.digest_date)
    assert got is not None and got.ambiguous_count == 1
    # If it dies mid-send again, the digest is held instead of being sent a third time.
    store._settle(row.id, state="sending", lease_until=clock() + timedelta(seconds=120))
    clock.advance(seconds=121)
    report = deliver(store, cfg, clock)
    assert report.counts["sent"] == 0 and states(store) == {"ada@example.org": "ambiguous"}


def test_C_lines_starting_with_a_dot_and_bare_line_ends_arrive_as_written(
    store: Store, smtp_server: Any, clock: Clock, tmp_path: Path
) -> None:
    """Dot-stuffing and CRLF on the wire, checked by what a real server takes in: a lone "."
    line must not end the message early, and a leading dot must not be lost."""
    day = clock().date()
    bodies = {
        "crlf@example.org": b"Subject: a\r\n\r\n.first\r\nmid\r\n.\r\n..two\r\nend",
        "bare@example.org": b"Subject: b\r\n\r\nlf only\n.dot after lf\rcr only\r\nlast\r\n",
        "lead@example.org": b".Subject: c\r\n\r\nbody\r\n",
        "cr@example.org": b"Subject: d\r\n\r\nbare\rcr\r\n",
    }
    for email, body in bodies.items():
        store.plan_delivery(
            email, day, f"<{email}>", [], {}, message=body, expire_at=clock() + timedelta(hours=5)
        )
    cfg = make_cfg(cast(Any, smtp_server), tmp_path)
    assert deliver(store, cfg, clock).counts["sent"] == 4
    got = {r.rcpt_tos[0]: r.data for r in smtp_server.received}
    assert got["crlf@example.org"] == b"Subject: a\r\n\r\n.first\r\nmid\r\n.\r\n..two\r\nend\r\n"
    assert got["bare@example.org"] == (
        b"Subject: b\r\n\r\nlf only\r\n.dot after lf\r\ncr only\r\nlast\r\n"
    )
    assert got["lead@example.org"] == b".Subject: c\r\n\r\nbody\r\n"
    assert got["cr@example.org"] == b"Subject: d\r\n\r\nbare\r\ncr\r\n"


def test_A2_a_slow_worker_starts_nothing_once_its_lease_is_over_so_no_row_goes_out_twice(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path
) -> None:
    """A worker still alive but slow (a rate limit, a slow relay) outlives its claim's lease.
    Another runner then takes its rows for a dead runner's; the slow worker must not send
    them too. Here each message takes 25 s of the clock, the lease is 60 s, and a second
    runner claims as soon as the third message is in."""
    cfg = make_cfg(fault, tmp_path, lease_seconds=60, data_timeout=30, connections=1)
    rows = plan(store, emails(5), clock)
    ids = [r.id for r in rows]
    taken: list[int] = []

    def slow_relay() -> None:
        clock.advance(seconds=25)
        if len(fault.stored) == 3:  # the lease ran out at 60 s: another runner claims
            claimed = store.claim_batch(clock(), timedelta(seconds=60), 5, "other-0")
            taken.extend(c.id for c in claimed)

    fault.on_store.append(slow_relay)
    deliver(store, cfg, clock)
    # The other runner took the third as possibly sent (it was on the wire: its 250 had not
    # come back) and the last two as never tried. The slow worker sent three and then, its
    # lease nearly over, none of the rest: they are the other runner's, to send once.
    assert taken == ids[2:]
    assert sorted(s.rcpt for s in fault.stored) == sorted(emails(5)[:3])
    final = {d.id: d for d in store.deliveries()}
    assert final[ids[2]].ambiguous_count == 1
    assert all(final[i].state == "sending" and final[i].claim_token == "other-0" for i in ids[3:])
    assert all(final[i].ambiguous_count == 0 for i in ids[3:])  # never tried: not held


def test_A2_a_late_failure_does_not_undo_what_the_runner_that_took_the_row_over_recorded(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path
) -> None:
    """An attempt outlives its lease: while the relay sits on the final dot, another runner
    takes the row over and sends it. The first attempt then times out; its "possibly sent"
    must not turn the other runner's `sent` back into a digest to send a third time."""
    cfg = make_cfg(fault, tmp_path, lease_seconds=60, data_timeout=0.5, connections=1)
    (row,) = plan(store, emails(1), clock)
    fault.plan(emails(1)[0], "stall-final:1.5")  # longer than data_timeout: no reply in time

    def taken_over_and_sent() -> None:
        clock.advance(seconds=61)
        claimed = store.claim_batch(clock(), timedelta(seconds=60), 1, "other-0")
        assert [c.id for c in claimed] == [row.id]
        store.mark_sent([row.id], clock())

    fault.on_store.append(taken_over_and_sent)
    report = deliver(store, cfg, clock)
    assert report.counts["ambiguous"] == 1  # the first attempt's own view
    (final,) = store.deliveries()
    assert final.state == "sent" and final.next_attempt_at is None


def test_A2_a_row_given_back_after_several_take_overs_is_claimed_again(
    store: Store, clock: Clock
) -> None:
    """Taken over by three runners in turn, then given back untried by the last (its lease
    ran short): it goes back as `retry`, due now, not as a retry with no time that no claim
    would ever find."""
    (row,) = plan(store, emails(1), clock)
    lease = timedelta(seconds=60)
    for k in range(3):
        assert [c.id for c in store.claim_batch(clock(), lease, 1, f"run{k}-0")] == [row.id]
        if k < 2:
            clock.advance(seconds=61)
    store.release([row.id], "run2-0", clock())
    assert [c.id for c in store.claim_batch(clock(), lease, 1, "again-0")] == [row.id]


def _claimed_by_a_worker_that_died_after_the_first(
    store: Store, clock: Clock, n: int, token: str
) -> list[int]:
    """n digests planned; a worker claims them all (lease 60 s), sends the first, and dies
    during the second; the clock is then past its lease. Returns their ids, in order."""
    ids = [r.id for r in plan(store, emails(n), clock)]
    assert [c.id for c in store.claim_batch(clock(), timedelta(seconds=60), n, token)] == ids
    store.mark_sent([ids[0]], clock())
    clock.advance(seconds=61)
    return ids


def test_A2_a_runner_that_dies_during_another_runs_pass_has_only_its_row_in_flight_held(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path
) -> None:
    """The same when a runner dies while another is already sending (its claims expire
    mid-pass, after that pass's sweep): the survivor takes over only the row that may have
    been on the wire as possibly sent; the dead runner's other rows go out once, each with
    one attempt counted."""
    cfg = make_cfg(fault, tmp_path, lease_seconds=60, data_timeout=30)
    lease = timedelta(seconds=60)
    ids = _claimed_by_a_worker_that_died_after_the_first(store, clock, 5, "dead-0")
    # The survivor, mid-pass (no sweep first): its next claim finds the expired claim.
    taken = {c.id: c for c in store.claim_batch(clock(), lease, 5, "alive-0")}
    assert sorted(taken) == ids[1:]
    assert taken[ids[1]].ambiguous_count == 1 and taken[ids[1]].attempts == 2
    assert all(taken[i].ambiguous_count == 0 and taken[i].attempts == 1 for i in ids[2:])
    store.release(ids[1:])  # the survivor gives them back untried; a pass sends them now
    report = deliver(store, cfg, clock)
    final = {d.id: d for d in store.deliveries()}
    assert [final[i].state for i in ids[2:]] == ["sent"] * 3
    assert all(final[i].attempts == 1 and final[i].ambiguous_count == 0 for i in ids[2:])
    assert report.possible_duplicates <= 1
    assert sorted(s.rcpt for s in fault.stored).count(emails(5)[2]) == 1


def test_A2_digests_a_dead_runner_claimed_but_never_tried_are_sent_not_held(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path
) -> None:
    """Two runs die in turn while holding claims. Only the digest that may have been on the
    wire (the lowest id still `sending` under a dead worker's claim: a worker tries its rows in
    order and commits each outcome first) counts as possibly sent; the rest were never tried
    and go out once, without being held for the operator."""
    cfg = make_cfg(fault, tmp_path, lease_seconds=60, data_timeout=30)
    lease = timedelta(seconds=60)
    # Run 1: a worker claims all six, sends the first (committed), dies during the second.
    ids = _claimed_by_a_worker_that_died_after_the_first(store, clock, 6, "run1-0")
    # Run 2 sweeps, then a worker claims what is due and dies before trying any of it.
    store.sweep(clock(), cfg.delivery.max_attempts, cfg.delivery.resends)
    claimed = store.claim_batch(clock(), lease, 6, "run2-0")
    assert sorted(c.id for c in claimed) == ids[1:]
    clock.advance(seconds=61)
    report = deliver(store, cfg, clock)
    final = {d.id: d for d in store.deliveries()}
    # The second digest may have arrived in run 1: taken over once (then it was run 2's first
    # row, so possibly on the wire again), and held now. The other four go out once each.
    assert final[ids[1]].state == "ambiguous" and final[ids[1]].ambiguous_count >= 1
    assert [final[i].state for i in ids[2:]] == ["sent"] * 4
    assert all(final[i].ambiguous_count == 0 and final[i].attempts == 1 for i in ids[2:])
    assert report.counts["sent"] == 4 and report.possible_duplicates == 0
    assert sorted(s.rcpt for s in fault.stored) == sorted(emails(6)[2:])


def test_connections_whose_250s_arrive_together_share_one_commit_of_sent(
    store: Store, smtp_server: Any, clock: Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test server answers in milliseconds, not smtp-sink's tenths of one: a longer wait.
    monkeypatch.setattr(engine_module, "GROUP_WAIT", 0.05)
    day = clock().date()
    for i in range(200):  # a claim of 50 for each of four connections
        store.plan_delivery(
            f"r{i}@example.org", day, f"<g{i}@x.org>", [], {}, message=b"Subject: g\r\n\r\nb\r\n"
        )
    commits: list[int] = []
    mark_sent = store.mark_sent

    def counted(ids: list[int], when: Any) -> None:
        commits.append(len(ids))
        mark_sent(ids, when)

    store.mark_sent = counted  # type: ignore[method-assign]
    cfg = make_cfg(cast(Any, smtp_server), tmp_path, connections=4)
    assert deliver(store, cfg, clock).counts["sent"] == 200
    assert sum(commits) == 200 and len(smtp_server.received) == 200
    assert len(commits) < 150 and max(commits) > 1
    assert set(states(store).values()) == {"sent"}


def test_a_digest_not_sent_is_logged_as_a_warning_by_its_id_and_a_sent_one_as_info(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A monitor watching WARNING and above sees a relay that refuses; the line names the
    delivery, never the reader's address."""
    cfg = make_cfg(fault, tmp_path, connections=1)
    plan(store, emails(2), clock)
    fault.plan(emails(2)[0], f"rcpt:450 4.2.1 <{emails(2)[0]}>: mailbox busy")
    with caplog.at_level(logging.INFO, logger="digest.send"):
        deliver(store, cfg, clock)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "digest.send"]
    assert any(lvl == logging.WARNING and "state=retry" in msg for lvl, msg in lines), lines
    assert any(lvl == logging.INFO and "state=sent" in msg for lvl, msg in lines), lines
    assert all("@" not in msg for _, msg in lines)


def test_a_reader_disabled_after_bounces_is_logged_by_delivery_not_by_address(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_cfg(fault, tmp_path, connections=1, bounce_threshold=1)
    plan(store, emails(1), clock)
    fault.plan(emails(1)[0], f"rcpt:550 5.1.1 <{emails(1)[0]}>: no such user")
    with caplog.at_level(logging.INFO, logger="digest.send"):
        deliver(store, cfg, clock)
    assert store.subscriber_state(emails(1)[0]) is not None  # disabled
    text = caplog.text
    assert "its reader disabled after repeated bounces" in text and "state=bounced" in text
    assert "@" not in text, text


def test_a_relay_refusing_the_service_pauses_with_no_address_in_the_log(
    store: Store, fault: FaultServer, clock: Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Postfix's "554 5.7.1 <addr>: Relay access denied" is a refusal of the service: the
    pause's log line masks the address the reply quotes."""
    cfg = make_cfg(fault, tmp_path, connections=1)
    plan(store, emails(1), clock)
    fault.plan(emails(1)[0], f"rcpt:554 5.7.1 <{emails(1)[0]}>: Relay access denied")
    with caplog.at_level(logging.INFO, logger="digest.send"):
        report = deliver(store, cfg, clock)
    assert report.paused and "Relay access denied" in caplog.text
    assert "@" not in caplog.text, caplog.text
