from __future__ import annotations

import email
import email.policy
from datetime import timedelta
from pathlib import Path

import pytest

from digest.config import Config, SourceConfig
from digest.errors import ConfigError
from digest.service.demo import free_port
from digest.service.pipeline import run
from digest.store import Store
from digest.store.schema import Delivery
from tests.conftest import DATA, DEMO_DATA, NOW, FeedServer, Route, SmtpServer, write_profile


def test_a_run_sends_each_subscriber_one_digest(
    store: Store, workspace: Config, smtp_server: SmtpServer
) -> None:
    report = run(workspace, store, now=NOW)
    assert sorted(r.status for r in report.results) == ["sent", "sent"]
    assert sorted(m.rcpt_tos[0] for m in smtp_server.received) == [
        "ada@example.org",
        "bob@example.org",
    ]
    for m in smtp_server.received:
        # The envelope is explicit, never read from the headers.
        assert m.mail_from == "digest@papers.example.org"
        msg = email.message_from_bytes(m.data, policy=email.policy.default)
        assert msg["To"].addresses[0].addr_spec == m.rcpt_tos[0]
    states = {d.subscriber: d.state for d in store.deliveries()}
    assert states == {"ada@example.org": "sent", "bob@example.org": "sent"}


def test_running_twice_on_the_same_day_sends_once(
    store: Store, workspace: Config, smtp_server: SmtpServer
) -> None:
    run(workspace, store, now=NOW)
    again = run(workspace, store, now=NOW + timedelta(hours=3))
    assert len(smtp_server.received) == 2
    assert {r.status for r in again.results} == {"already-sent"}


def test_the_next_day_offers_only_papers_that_arrived_since(
    store: Store, workspace: Config, smtp_server: SmtpServer
) -> None:
    first = run(workspace, store, now=NOW)
    sent_before = {d.subscriber: set(d.paper_ids) for d in store.deliveries()}
    nxt = run(workspace, store, now=NOW + timedelta(days=1))
    for d in store.deliveries():
        if d.digest_date == (NOW + timedelta(days=1)).date():
            assert not set(d.paper_ids) & sent_before[d.subscriber]
    # With no new listing, nobody gets an empty digest, and the reason is given.
    assert [r.status for r in nxt.results] == ["nothing-new", "nothing-new"]
    assert all("no new papers" in r.detail for r in nxt.results)
    assert len(first.results) == 2


def test_a_broken_profile_is_reported_and_the_others_are_sent(
    store: Store, workspace: Config, smtp_server: SmtpServer
) -> None:
    write_profile(
        workspace.subscribers_dir, "zed", 'email = "zed@example.org"\ntimezone = "Not/AZone"\n'
    )
    report = run(workspace, store, now=NOW)
    assert [str(e) for e in report.profile_errors] == [
        f"{workspace.subscribers_dir / 'zed.toml'}: timezone: unknown time zone; use an IANA name "
        "such as Europe/Berlin or America/New_York (got 'Not/AZone')"
    ]
    assert len(smtp_server.received) == 2


def test_a_permanent_rejection_fails_one_and_the_rest_go(
    store: Store, workspace: Config, smtp_server: SmtpServer
) -> None:
    smtp_server.handler.fail = {"RCPT": "550 5.1.1 No such user"}
    smtp_server.handler.fail_for = {"ada@example.org"}
    report = run(workspace, store, now=NOW)
    by = {r.email: r for r in report.results}
    assert by["ada@example.org"].status == "bounced" and "550" in by["ada@example.org"].detail
    assert by["bob@example.org"].status == "sent"
    assert [m.rcpt_tos for m in smtp_server.received] == [["bob@example.org"]]


def test_a_temporary_failure_is_retried_by_the_next_run(
    store: Store, workspace: Config, smtp_server: SmtpServer
) -> None:
    smtp_server.handler.fail = {"DATA": "451 4.3.0 Try again later"}
    first = run(workspace, store, now=NOW)
    assert {r.status for r in first.results} == {"retry"}
    planned = {d.subscriber: d.paper_ids for d in store.deliveries()}
    smtp_server.handler.fail = {}
    second = run(workspace, store, now=NOW + timedelta(minutes=30))
    assert {r.status for r in second.results} == {"sent"}
    # The retry sends the digest that was planned, with the same Message-ID.
    assert {d.subscriber: d.paper_ids for d in store.deliveries()} == planned
    ids = {email.message_from_bytes(m.data)["Message-ID"] for m in smtp_server.received}
    assert ids == {d.message_id for d in store.deliveries()}


def test_an_unreachable_server_leaves_every_digest_for_retry(
    store: Store, workspace: Config
) -> None:
    cfg = workspace.model_copy(
        update={"smtp": workspace.smtp.model_copy(update={"port": free_port()})}
    )
    report = run(cfg, store, now=NOW)
    # The relay is left alone after the first refusal: what was not tried stays pending.
    assert {r.status for r in report.results} <= {"retry", "pending"}
    assert all("cannot connect" in r.detail for r in report.results if r.status == "retry")
    assert {d.state for d in store.deliveries()} <= {"retry", "pending"}
    assert all(d.attempts == 0 for d in store.deliveries())


def test_an_unsubscribed_reader_gets_nothing(
    store: Store, workspace: Config, smtp_server: SmtpServer
) -> None:
    store.set_unsubscribed("bob@example.org")
    report = run(workspace, store, now=NOW)
    by = {r.email: r.status for r in report.results}
    assert by == {"ada@example.org": "sent", "bob@example.org": "unsubscribed"}


def test_a_dry_run_sends_and_records_nothing(
    store: Store, workspace: Config, smtp_server: SmtpServer
) -> None:
    report = run(workspace, store, now=NOW, dry_run=True)
    assert {r.status for r in report.results} == {"dry-run"}
    assert smtp_server.received == [] and store.deliveries() == []


def test_the_digest_date_is_the_subscribers_local_day(
    store: Store, workspace: Config, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    # 03:00 UTC on the 23rd is still the 22nd in New York (bob) but the 23rd in London (ada).
    run(workspace, store, now=NOW.replace(hour=3))
    days = {d.subscriber: d.digest_date.isoformat() for d in store.deliveries()}
    assert days == {"ada@example.org": "2026-11-23", "bob@example.org": "2026-11-22"}


def test_papers_that_arrive_the_next_day_are_sent_the_next_day(
    store: Store, workspace: Config, smtp_server: SmtpServer
) -> None:
    run(workspace, store, now=NOW)
    later = workspace.model_copy(
        update={
            "sources": [
                *workspace.sources,
                SourceConfig(
                    name="arxiv-next", kind="arxiv-rss", url=(DATA / "next_day.xml").as_uri()
                ),
            ]
        }
    )
    nxt = run(later, store, now=NOW + timedelta(days=1))
    by = {r.email: r for r in nxt.results}
    assert by["ada@example.org"].status == "sent" and by["ada@example.org"].papers == 1
    ada_days = [d for d in store.deliveries() if d.subscriber == "ada@example.org"]
    assert ada_days[-1].paper_ids == ["2611.20001"]
    assert by["bob@example.org"].status == "nothing-new"


def test_example_papers_are_looked_up_through_the_arxiv_api(
    store: Store, workspace: Config, smtp_server: SmtpServer, feed_server: FeedServer
) -> None:
    feed_server.routes["/api/query"] = Route((DEMO_DATA / "examples.xml").read_bytes())
    sources = [s for s in workspace.sources if s.kind != "arxiv-api"]
    cfg = workspace.model_copy(
        update={
            "sources": [
                *sources,
                SourceConfig(name="arxiv-api", kind="arxiv-api", url=feed_server.url("/api/query")),
            ]
        }
    )
    run(cfg, store, now=NOW, ingest=False)  # nothing ingested: only the look-up can fetch them
    lookups = [r["path"] for r in feed_server.requests]
    assert len(lookups) == 1 and "id_list=2609.04411%2C2610.02290" in lookups[0]
    assert set(store.papers(["2609.04411", "2610.02290"])) == {"2609.04411", "2610.02290"}


def test_starttls_never_falls_back_to_plaintext(
    store: Store, workspace: Config, smtp_server: SmtpServer
) -> None:
    # The test server offers no STARTTLS: a config asking for it must send nothing.
    smtp = workspace.smtp.model_copy(update={"security": "starttls"})
    report = run(workspace.model_copy(update={"smtp": smtp}), store, now=NOW)
    # Missing TLS is a configuration problem, not a reader's: delivery pauses, loudly.
    assert {r.status for r in report.results} <= {"retry", "pending"}
    assert report.delivery is not None and "STARTTLS" in (report.delivery.paused or "")
    assert smtp_server.received == []


def test_a_missing_secret_key_stops_the_run_before_planning(
    store: Store, workspace: Config
) -> None:
    web = workspace.web.model_copy(update={"secret_key_file": workspace.data_dir / "nope"})
    with pytest.raises(ConfigError, match="secret_key_file"):
        run(workspace.model_copy(update={"web": web}), store, now=NOW)
    assert store.deliveries() == []


def test_a_digest_left_sending_by_a_dead_run_goes_out_after_its_lease(
    store: Store, workspace: Config, smtp_server: SmtpServer
) -> None:
    run(workspace, store, now=NOW, dry_run=False)
    ada = next(d for d in store.deliveries() if d.subscriber == "ada@example.org")
    assert ada.id is not None
    # Pretend a run died right after claiming Ada's digest on the next day.
    with store.session() as s:
        row = s.get(Delivery, ada.id)
        assert row is not None
        row.state, row.lease_until = "sending", NOW + timedelta(minutes=1)
        s.add(row)
        s.commit()
    smtp_server.handler.received.clear()
    soon = run(workspace, store, now=NOW + timedelta(seconds=30))
    assert {r.email: r.status for r in soon.results}["ada@example.org"] == "sending"
    assert smtp_server.received == []
    lease = timedelta(seconds=workspace.delivery.lease_seconds)
    later = run(workspace, store, now=NOW + lease + timedelta(hours=1))
    assert {r.email: r.status for r in later.results}["ada@example.org"] == "sent"
    assert [m.rcpt_tos for m in smtp_server.received] == [["ada@example.org"]]


def test_a_plain_http_base_url_is_warned_about(
    workspace: Config, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    web = workspace.web.model_copy(update={"base_url": "http://papers.example.org"})
    with caplog.at_level("WARNING", logger="digest.service.pipeline"):
        run(workspace.model_copy(update={"web": web}), store, now=NOW, dry_run=False)
    assert any("is not https" in r.getMessage() for r in caplog.records)


def test_a_catch_up_plans_for_the_day_given_but_sends_by_the_real_clock(
    store: Store, workspace: Config, smtp_server: SmtpServer
) -> None:
    """`digest serve`'s catch-up fixes the day it plans for, not the engine's clock: claims'
    leases must follow real time, which other nodes read. Planned for a day long past, the
    digests are past their retry window by the real clock, and are not sent late."""
    report = run(workspace, store, now=NOW, real_clock_delivery=True)
    assert smtp_server.received == []
    assert {d.state for d in store.deliveries()} == {"expired"}
    assert report.count("sent") == 0
