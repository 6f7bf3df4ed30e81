"""`digest serve`: the service's jobs with injected time, and the real process with SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.triggers.cron import CronTrigger

from digest.config import Config
from digest.service.serve import Service
from digest.store import Store
from tests.conftest import ADA, NOW, FeedServer, Route, SmtpServer, write_profile
from tests.sites import write_site
from tests.smtp_fault import FaultServer


def test_profiles_become_send_slots_grouped_by_zone_and_time(
    store: Store, workspace: Config
) -> None:
    write_profile(workspace.subscribers_dir, "cy", ADA.replace("ada@", "cy@"))
    service = Service(workspace, store)
    assert service.reload()
    jobs = {j.id: j for j in service.scheduler.get_jobs() if j.id.startswith("slot:")}
    assert set(jobs) == {"slot:Europe/London:07:00", "slot:America/New_York:06:30"}
    assert sorted(jobs["slot:Europe/London:07:00"].args[0]) == ["ada@example.org", "cy@example.org"]
    trigger = jobs["slot:America/New_York:06:30"].trigger
    assert isinstance(trigger, CronTrigger)
    nxt = trigger.get_next_fire_time(None, NOW)
    assert nxt == datetime(2026, 11, 23, 11, 30, tzinfo=UTC)
    assert not service.reload()  # nothing changed on disk


def test_a_new_profile_is_picked_up_without_a_restart(store: Store, workspace: Config) -> None:
    service = Service(workspace, store)
    service.reload()
    time.sleep(0.01)
    write_profile(
        workspace.subscribers_dir,
        "dee",
        'email = "dee@example.org"\nsend_at = "11:00"\n'
        'timezone = "UTC"\n[interests]\nkeywords = ["state space models"]\n',
    )
    assert service.reload()
    assert "slot:UTC:11:00" in {j.id for j in service.scheduler.get_jobs()}
    # Added at 10:00 with send_at 11:00: today's digest goes at 11:00, via its slot or catch-up.
    ten = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert "dee@example.org" not in service.catch_up(now=ten)


def test_catch_up_sends_what_a_restart_missed_once(
    store: Store, workspace: Config, smtp_server: SmtpServer
) -> None:
    from digest.ingest import ingest_all

    ingest_all(store, workspace)
    service = Service(workspace, store)
    # 08:00 UTC: Ada (07:00 London) is overdue, Bob (06:30 New York = 11:30 UTC) is not.
    assert service.catch_up(now=NOW) == ["ada@example.org"]
    assert [m.rcpt_tos for m in smtp_server.received] == [["ada@example.org"]]
    assert service.catch_up(now=NOW + timedelta(minutes=5)) == []
    later = NOW + timedelta(hours=4)
    assert service.catch_up(now=later) == ["bob@example.org"]
    assert len(smtp_server.received) == 2


def test_a_slot_larger_than_a_batch_is_planned_on_every_core_and_logged_without_addresses(
    store: Store,
    workspace: Config,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import digest.service.pipeline as pipeline
    from digest.config import PlanningConfig
    from digest.ingest import ingest_all

    for i in range(9):
        write_profile(workspace.subscribers_dir, f"r{i}", ADA.replace("ada@", f"r{i}@"))
    cfg = workspace.model_copy(update={"planning": PlanningConfig(workers=2, batch_size=3)})
    ingest_all(store, cfg)
    forked: list[int] = []
    real = pipeline.plan_in_processes

    def counted(
        plan: object, batches: list[object], workers: int, *a: object, **k: object
    ) -> object:
        forked.append(workers)
        return real(plan, batches, workers, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "plan_in_processes", counted)
    service = Service(cfg, store)
    caplog.set_level("INFO")  # every logger: the engine's lines too
    assert len(service.catch_up(now=NOW)) == 10  # ada and r0-r8 (07:00 London) are overdue
    assert forked == [2]
    got = sorted(m.rcpt_tos[0] for m in smtp_server.received)
    assert got == sorted(["ada@example.org"] + [f"r{i}@example.org" for i in range(9)])
    assert "event=slot subscribers=10 sent=10" in caplog.text
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("digest"))
    assert "delivery=" in ours and "@example.org" not in ours  # (the test SMTP server's own
    # log names them, as a relay's would)
    # A slot of one batch stays in the service's own process.
    write_profile(workspace.subscribers_dir, "cy", ADA.replace("ada@", "cy@"))
    assert service.catch_up(now=NOW + timedelta(minutes=5)) == ["cy@example.org"]
    assert forked == [2] and len(smtp_server.received) == 11


def _serve(site: Path) -> subprocess.Popen[str]:
    env = {**os.environ}
    env.pop("DIGEST_CONFIG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "digest", "--config", str(site / "digest.toml"), "serve"],
        cwd=site,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _site(tmp_path: Path, port: int, n: int) -> Path:
    write_site(
        tmp_path,
        port,
        n,
        extra="[delivery]\nconnections = 1\n[serve]\ncatch_up_seconds = 5",
        name="r{i}",
    )
    return tmp_path


def test_serve_sends_on_start_and_sigterm_leaves_nothing_sending(tmp_path: Path) -> None:
    fault = FaultServer().start()
    try:
        # Every reply to the final dot takes 0.4 s, so SIGTERM lands in the middle of a slot.
        fault.default = "stall-final:0.4"
        site = _site(tmp_path, fault.port, 12)
        subprocess.run(
            [sys.executable, "-m", "digest", "--config", str(site / "digest.toml"), "ingest"],
            check=True,
            capture_output=True,
        )
        proc = _serve(site)
        deadline = time.monotonic() + 60
        while len(fault.stored) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(fault.stored) >= 2, proc.stderr.read() if proc.poll() is not None else ""
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        # "stopped" only once the message in flight has its reply and is recorded.
        lines = err.splitlines()
        stopped = next(i for i, ln in enumerate(lines) if "event=stopped" in ln)
        last_send = max(i for i, ln in enumerate(lines) if "delivery=" in ln)
        assert "event=stopping jobs_running=" in err and last_send < stopped, err
        store = Store(f"sqlite:///{site / 'data' / 'digest.db'}")
        rows = store.deliveries()
        assert "sending" not in {d.state for d in rows}
        sent = {d.subscriber for d in rows if d.state == "sent"}
        # Every message the server stored is recorded as sent: nothing lost, nothing to resend.
        assert sent == {s.rcpt for s in fault.stored}
        assert len(sent) < 12
        store.dispose()
        # Restarted, it finishes the slot: each subscriber has exactly one digest.
        fault.default = "ok"
        proc = _serve(site)
        deadline = time.monotonic() + 60
        while len(fault.stored) < 12 and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        assert sorted(s.rcpt for s in fault.stored) == sorted(
            f"r{i}@example.org" for i in range(12)
        )
    finally:
        fault.stop()


def test_serve_also_serves_the_links_when_web_is_enabled(tmp_path: Path) -> None:
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fault = FaultServer().start()
    try:
        write_site(tmp_path, fault.port, 1, web=f"serve = true\nport = {port}")
        proc = _serve(tmp_path)
        deadline = time.monotonic() + 30
        answer = None
        while answer is None and time.monotonic() < deadline:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            except httpx.TransportError:
                time.sleep(0.1)
        assert answer is not None and answer.text == "ok"
        bad = httpx.get(f"http://127.0.0.1:{port}/u/forged", timeout=2)
        assert bad.status_code == 400
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        fault.stop()


def test_a_failed_ingest_is_tried_again_the_same_day_with_a_growing_pause(
    store: Store, workspace: Config, feed_server: FeedServer
) -> None:
    from digest.config import SourceConfig

    feed_server.routes["/down"] = Route(b"", status=500)
    down = SourceConfig(name="down", kind="rss", url=feed_server.url("/down"))
    cfg = workspace.model_copy(update={"sources": [down]})
    service = Service(cfg, store)
    service.ingest("down", now=NOW)
    (job,) = [j for j in service.scheduler.get_jobs() if j.id == "ingest-retry:down"]
    assert job.trigger.run_date == NOW + timedelta(minutes=15) and list(job.args) == ["down", 1]
    service.ingest("down", 1, now=NOW)
    (job,) = [j for j in service.scheduler.get_jobs() if j.id == "ingest-retry:down"]
    assert job.trigger.run_date == NOW + timedelta(minutes=30)
    service.scheduler.remove_job("ingest-retry:down")
    service.ingest("down", cfg.serve.ingest_retries, now=NOW)  # the last try: no more
    assert not [j for j in service.scheduler.get_jobs() if j.id == "ingest-retry:down"]
    assert len(feed_server.requests) == 3


def test_a_job_failing_on_a_damaged_database_logs_one_line_and_serve_goes_on(
    workspace: Config, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    db = tmp_path / "broken.db"
    store = Store(f"sqlite:///{db}")
    store.upgrade()
    service = Service(workspace, store)
    store.dispose()
    db.write_bytes(b"not a database any more " * 200)  # damaged while the service runs
    with caplog.at_level(logging.ERROR, logger="digest.serve"):
        service.retry()  # no exception reaches the scheduler
        service.catch_up(now=NOW)
    lines = [r.getMessage() for r in caplog.records if r.name == "digest.serve"]
    assert len(lines) == 2 and all("event=job-failed" in ln for ln in lines), lines
    assert f"{db} is damaged" in lines[0] and "Traceback" not in caplog.text


def test_a_service_started_after_the_fetch_time_fetches_before_it_catches_up(
    store: Store, workspace: Config, smtp_server: SmtpServer
) -> None:
    """Nothing fetched yet (a first start, or a service down over its sources' fetch time):
    each such source is fetched first, then the catch-up sends from what it brought, instead
    of "nothing new" until the next scheduled fetch, often the next day."""
    service = Service(workspace, store)
    assert service.missed_fetches(NOW) == [s.name for s in workspace.sources]
    service.start_up(now=NOW)
    assert {f.source for f in store.feed_states()} == {s.name for s in workspace.sources}
    assert [m.rcpt_tos for m in smtp_server.received] == [["ada@example.org"]]
    assert service.missed_fetches(NOW) == []  # fetched since each schedule's last time


def test_a_source_schedule_reads_weekday_numbers_as_cron_does() -> None:
    """Cron's 1-5 is Monday to Friday; APScheduler 3 on its own reads it as Tuesday to
    Saturday, and a Saturday fetch found no new listing while Monday's was missed."""
    from digest.config import SourceConfig

    src = SourceConfig(
        name="arxiv", kind="arxiv-rss", url="https://rss.arxiv.org/rss/cs", schedule="30 0 * * 1-5"
    )
    friday_morning = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    nxt = src.trigger().get_next_fire_time(None, friday_morning)
    assert nxt == datetime(2026, 11, 30, 5, 30, tzinfo=UTC)  # Monday 00:30 in New York
    sunday = SourceConfig(
        name="a",
        kind="rss",
        url="https://example.org/feed",
        schedule="0 9 * * 0",
        schedule_timezone="UTC",
    )
    assert sunday.trigger().get_next_fire_time(None, friday_morning) == datetime(
        2026, 11, 29, 9, 0, tzinfo=UTC
    )


def test_a_source_whose_last_fetch_failed_is_fetched_again_at_start(
    store: Store, workspace: Config
) -> None:
    """Its same-day retry was a job of the process that stopped: the start fetches it."""
    from digest.store.schema import FeedState

    service = Service(workspace, store)
    first = workspace.sources[0].name
    for src in workspace.sources:
        failed = src.name == first
        store.save_feed_state(
            FeedState(
                source=src.name,
                url=src.url,
                last_attempt=datetime.now(UTC),
                last_status="error" if failed else "ok",
            )
        )
    assert service.missed_fetches(datetime.now(UTC)) == [first]


def test_the_last_fetch_time_is_found_across_the_autumn_clock_change() -> None:
    """At the fall-back a local time plus a second lost the repeated hour's fold, and the
    same fire time came back until the search gave up: the real last time is found."""
    from digest.service.serve import previous_fire_time

    daily = CronTrigger.from_crontab("30 1 * * *", timezone="America/New_York")
    now = datetime(2025, 11, 5, 7, 0, tzinfo=UTC)
    assert previous_fire_time(daily, now) == datetime(2025, 11, 5, 6, 30, tzinfo=UTC)
    hourly = CronTrigger.from_crontab("0 * * * *", timezone="America/New_York")
    assert previous_fire_time(hourly, datetime(2025, 11, 9, 12, 0, tzinfo=UTC)) == datetime(
        2025, 11, 9, 12, 0, tzinfo=UTC
    )


def test_an_arxiv_api_source_without_a_query_is_neither_scheduled_nor_missed(
    store: Store, workspace: Config
) -> None:
    """It is asked for example papers and backfills only: fetched as a feed it had nothing
    to ask, and with no fetch ever recorded every start called it missed."""
    from digest.config import SourceConfig

    lookups = SourceConfig(
        name="lookups", kind="arxiv-api", url="https://export.arxiv.org/api/query"
    )
    cfg = workspace.model_copy(update={"sources": [*workspace.sources, lookups]})
    service = Service(cfg, store)
    assert service.missed_fetches(NOW) == [s.name for s in workspace.sources]

    async def scheduled() -> set[str]:
        try:
            service.start()  # nothing awaited before the shutdown: no job runs
            return {job.id for job in service.scheduler.get_jobs()}
        finally:
            service.scheduler.shutdown(wait=False)

    jobs = asyncio.run(scheduled())
    assert "ingest:lookups" not in jobs
    assert {f"ingest:{s.name}" for s in workspace.sources} <= jobs
