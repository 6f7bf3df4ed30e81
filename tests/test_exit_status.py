"""What a cron job or a monitor sees: the exit status of the real `digest` command.

0 every due digest went out; 1 the command could not work; 2 it ran, but something was not sent
or a source or profile failed; 3 delivery is paused.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from digest.errors import ExitStatus
from digest.mail.engine import EngineReport
from digest.service.pipeline import RunReport, SubscriberResult
from digest.states import FAILED, SETTLED_OK
from digest.states import Delivery as DeliveryState
from tests.conftest import SmtpHandler, SmtpServer, digest, relay_elsewhere


def test_a_run_in_a_folder_without_digest_toml_fails_and_creates_nothing(tmp_path: Path) -> None:
    for command in (["run"], ["status"], ["ingest"], ["subscribers", "list"]):
        ran = digest(*command, cwd=tmp_path)
        assert ran.returncode == 1, command
        lines = [ln for ln in ran.stderr.splitlines() if ln.strip()]
        assert "no digest.toml" in lines[0] and str(tmp_path / "digest.toml") in ran.stderr
        assert "digest init" in ran.stderr and "Traceback" not in ran.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_sends_every_due_digest_exits_0(site: Path, smtp_server: SmtpServer) -> None:
    ran = digest("run", cwd=site)
    assert ran.returncode == 0, ran.stderr
    assert len(smtp_server.received) == 2
    again = digest("run", cwd=site)  # nothing due any more is still success
    assert again.returncode == 0, again.stderr


def test_a_run_with_the_relay_down_exits_2_and_retry_brings_the_digests_forward(
    site: Path,
) -> None:
    port = relay_elsewhere(site)
    ran = digest("run", cwd=site)
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert "retry" in ran.stdout
    # A second cron run during the relay's backoff sends nothing, and says so.
    waiting = digest("run", "--no-ingest", cwd=site)
    assert waiting.returncode == 2, waiting.stdout + waiting.stderr
    assert "The relay is down or asked for a break" in waiting.stderr
    # The relay comes back; the digests wait for their backoff unless brought forward.
    handler = SmtpHandler()
    relay = Controller(handler, hostname="127.0.0.1", port=port)
    relay.start()
    try:
        forward = digest("retry", "--state", "retry", cwd=site)
        assert forward.returncode == 0, forward.stderr
        assert re.search(r"[12] waiting deliver(y|ies) due now", forward.stdout), forward.stdout
        again = digest("run", "--no-ingest", cwd=site)
        assert again.returncode == 0, again.stdout + again.stderr
        assert len(handler.received) == 2
    finally:
        relay.stop()


def test_a_run_whose_relay_refuses_by_policy_pauses_and_exits_3(
    site: Path, smtp_server: SmtpServer
) -> None:
    smtp_server.handler.fail = {"RCPT": "550 5.7.1 sending refused by policy"}
    ran = digest("run", cwd=site)
    assert ran.returncode == 3, ran.stdout + ran.stderr
    assert "Delivery paused" in ran.stderr
    # Still paused for the next cron run, until the operator resumes.
    smtp_server.handler.fail = {}
    assert digest("run", cwd=site).returncode == 3
    assert digest("resume", cwd=site).returncode == 0
    assert digest("run", cwd=site).returncode == 0
    assert len(smtp_server.received) == 2


def test_a_run_with_one_broken_source_sends_the_rest_and_exits_2(
    site: Path, smtp_server: SmtpServer
) -> None:
    with (site / "digest.toml").open("a") as f:
        f.write('[[sources]]\nname = "gone"\nkind = "rss"\nurl = "file:///nonexistent/feed.xml"\n')
    ran = digest("run", cwd=site)
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert "source gone" in ran.stderr
    assert len(smtp_server.received) == 2
    ingested = digest("ingest", cwd=site)
    assert ingested.returncode == 2
    assert "1 of 4 sources failed: gone" in ingested.stderr


def test_a_run_with_an_invalid_profile_serves_the_others_and_exits_2(
    site: Path, smtp_server: SmtpServer
) -> None:
    (site / "subscribers" / "zed.toml").write_text('email = "zed@example.org"\nfavourite = 1\n')
    ran = digest("run", cwd=site)
    assert ran.returncode == 2
    assert "zed.toml: favourite: unknown key" in ran.stderr
    assert len(smtp_server.received) == 2


def test_a_subscribers_directory_that_is_not_there_exits_2_naming_it(
    site: Path, smtp_server: SmtpServer
) -> None:
    # A misspelt subscribers_dir mailed nobody and exited 0: a good day, as cron read it.
    (site / "subscribers").rename(site / "readers")
    ran = digest("run", cwd=site)
    assert ran.returncode == 2
    (line,) = [ln for ln in ran.stderr.splitlines() if "subscribers" in ln]
    assert "subscribers: no such directory (subscribers_dir in digest.toml)" in line
    assert smtp_server.received == []
    checked = digest("subscribers", "check", cwd=site)
    assert checked.returncode == 1 and "no such directory" in checked.stderr


def test_every_source_failing_exits_2_from_ingest(site: Path) -> None:
    text = (site / "digest.toml").read_text()
    (site / "digest.toml").write_text(text.replace("file://", "file:///nonexistent"))
    ingested = digest("ingest", cwd=site)
    assert ingested.returncode == 2
    assert "every source failed" in ingested.stderr


def test_digests_left_pending_by_a_relay_backoff_count_as_unsent() -> None:
    # Every row pending (none attempted this run): only the engine knows why.
    day = datetime(2026, 11, 30, tzinfo=UTC)
    results = [SubscriberResult("a@example.org", "pending"), SubscriberResult("b@x.org", "sent")]
    waiting = RunReport(day.date(), results=results, delivery=EngineReport(relay_until=day))
    assert waiting.exit_status() == ExitStatus.PARTIAL
    other_node = RunReport(day.date(), results=results, delivery=EngineReport())
    assert other_node.exit_status() == ExitStatus.OK


def test_under_cron_messages_stay_one_line_and_tables_keep_whole_addresses(
    tmp_path: Path, site: Path
) -> None:
    """Cron gives no terminal and no COLUMNS: nothing may be broken at 80 columns."""
    cron = {"COLUMNS": None, "LINES": None, "TERM": None}
    deep = tmp_path / ("a-rather-long-folder-name-" * 3) / "jobs"
    deep.mkdir(parents=True)
    ran = digest("run", cwd=deep, env=cron)
    first = ran.stderr.splitlines()[0]
    assert "no digest.toml" in first and str(deep / "digest.toml") in first
    long = "a.very.long.local.part.for.a.reader@mail.department.university.example.org"
    (site / "subscribers" / "long.toml").write_text(
        f'email = "{long}"\n[interests]\nkeywords = ["x"]\n'
    )
    shown = digest("run", "--dry-run", cwd=site, env=cron)
    assert any(long in line for line in shown.stdout.splitlines()), shown.stdout


def test_a_usage_mistake_exits_1_not_the_2_that_means_some_digests_are_unsent(site: Path) -> None:
    for command in (["run", "--bogus"], ["subscribers", "list", "--state", "gone"], ["nope"]):
        ran = digest(*command, cwd=site)
        assert ran.returncode == 1, (command, ran.returncode)
        assert "Error:" in ran.stderr and "Traceback" not in ran.stderr
    assert digest("--version", cwd=site).returncode == 0
    assert digest("run", "--help", cwd=site).returncode == 0


@pytest.mark.parametrize("state", list(DeliveryState))
def test_the_exit_status_follows_the_named_sets_for_every_delivery_state(
    state: DeliveryState,
) -> None:
    report = RunReport(day=datetime(2026, 11, 23, tzinfo=UTC).date())
    report.results = [SubscriberResult("ada@example.org", state)]
    report.delivery = EngineReport()
    expected = ExitStatus.OK if state in SETTLED_OK else ExitStatus.PARTIAL
    assert report.exit_status() == expected
    if state in FAILED or state in (DeliveryState.RETRY, DeliveryState.AMBIGUOUS):
        assert report.exit_status() == ExitStatus.PARTIAL  # bounced, expired, dead: never 0
    report.delivery.paused = "535 authentication failed"
    assert report.exit_status() == ExitStatus.PAUSED
