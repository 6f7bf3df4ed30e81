"""`digest serve`: the long-running service, on APScheduler 3 with asyncio.

Jobs (all run in a small thread pool, so a slow SMTP relay never blocks the scheduler):

- ingest each source on its own cron (`[[sources]] schedule`);
- one job per send slot, i.e. per distinct (time zone, send_at) among the profiles, with
  coalescing and a long misfire grace, so a slot missed while the process was busy runs once;
- a catch-up that sends every subscriber whose send time has passed today and who has no
  digest for today yet: after a restart, a missed slot, a daylight-saving gap, or a new profile.
  A service that was down for days sends one digest per subscriber, for today, not a burst;
- a profile watcher: files added, changed or removed are picked up without a restart;
- retries of digests that are due again.

SIGTERM or SIGINT: no new job starts, each engine finishes the message in flight and records it,
gives back what it had claimed, and the process exits with nothing left `sending`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.exc import SQLAlchemyError

from digest.config import Config
from digest.errors import DigestError
from digest.ingest.run import ingest_source
from digest.mail.engine import deliver
from digest.packed import Profiles
from digest.service.context import load_site_profiles, refresh_after_ingest
from digest.service.pipeline import run
from digest.service.schedule import digest_day, due_on, due_today, is_send_day
from digest.store.failures import explain
from digest.store.papers import Store
from digest.store.schema import utcnow
from digest.text import mask_addresses

log = logging.getLogger("digest.serve")  # log names are what operators filter on: kept
# A slot that could not start on time (busy pool, suspended machine) still runs within this.
MISFIRE_GRACE = int(timedelta(hours=12).total_seconds())


P = ParamSpec("P")
R = TypeVar("R")


def one_line(job: Callable[P, R]) -> Callable[P, R | None]:
    """A job failing on our own database or disk (locked, full, damaged) logs one line, not
    the scheduler's traceback; the job's next run tries again. `-v` adds the traceback."""

    @functools.wraps(job)
    def run(*args: P.args, **kwargs: P.kwargs) -> R | None:
        try:
            return job(*args, **kwargs)
        except (DigestError, SQLAlchemyError, OSError) as exc:
            store = getattr(args[0], "store", None) if args else None
            where = str(getattr(store, "safe_url", "in use"))
            err = exc if isinstance(exc, DigestError) else explain(exc, where)
            log.error("event=job-failed job=%s error=%r hint=%r", job.__name__, str(err), err.hint)
            log.debug("job %s failed", job.__name__, exc_info=True)
            return None

    return run


# How long a send slot waits for the start's fetches (a source's whole fetch is bounded by
# its deadline, 180 s by default, and a few sources are fetched in turn).
START_FETCH_WAIT = 900.0


class Service:
    def __init__(self, cfg: Config, store: Store) -> None:
        self.cfg = cfg
        self.store = store
        self.halt = threading.Event()
        self.profiles = Profiles.of([])
        self._signature: tuple[tuple[str, float, int], ...] | None = None
        self._lock = threading.Lock()
        # Cleared by `start` until `start_up` has fetched what the service missed.
        self._fetched = threading.Event()
        self._fetched.set()
        # `refit`: papers stored since the last fit, and the one fit running.
        self._stale = threading.Event()
        self._fitting = threading.Lock()
        self.scheduler = AsyncIOScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(4)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": MISFIRE_GRACE,
            },
        )
        # Jobs handed to the threads and not yet finished, for `stop` to wait on.
        self._jobs = threading.Condition()
        self._running = 0

    # -- setup ----------------------------------------------------------------------------

    def start(self) -> None:
        for src in self.cfg.sources:
            if src.lookups_only:  # nothing to fetch on a schedule (`SourceConfig.lookups_only`)
                continue
            self.scheduler.add_job(
                self._counted(self.ingest),
                src.trigger(),
                args=[src.name],
                id=f"ingest:{src.name}",
                name=f"ingest {src.name}",
            )
        serve = self.cfg.serve
        self.scheduler.add_job(
            self._counted(self.reload),
            IntervalTrigger(seconds=serve.reload_seconds),
            id="reload",
            name="reload profiles",
        )
        self.scheduler.add_job(
            self._counted(self.catch_up),
            IntervalTrigger(seconds=serve.catch_up_seconds),
            id="catch-up",
            name="catch up",
        )
        self.scheduler.add_job(
            self._counted(self.retry),
            IntervalTrigger(seconds=serve.retry_seconds),
            id="retry",
            name="retry due digests",
        )
        self.reload()
        self._fetched.clear()
        self.scheduler.start()
        # Right away, not after the first interval: a restart fetches and sends what it missed.
        self.scheduler.add_job(
            self._counted(self.start_up), id="start-up", name="fetch and catch up at start"
        )
        log.info(
            "event=started sources=%d subscribers=%d",
            sum(not s.lookups_only for s in self.cfg.sources),  # those it fetches
            len(self.profiles),
        )

    def stop(self) -> None:
        """Finish what is in flight, start nothing new, leave nothing `sending`.

        APScheduler's asyncio scheduler only posts its shutdown to the event loop and returns,
        so "stopped" was logged while a send could still wait for its reply (up to
        `data_timeout`): the jobs still running are counted (see `_counted`) and waited for."""
        with self._jobs:
            running = self._running
        log.info("event=stopping jobs_running=%d", running)
        self.halt.set()
        self.scheduler.shutdown(wait=False)
        # Bounded all the same: a reply is waited for `data_timeout` at most (and this ends
        # before systemd's TimeoutStopSec or Compose's grace, data_timeout + 60 s, kills).
        bound = self.cfg.delivery.data_timeout + 30
        with self._jobs:
            self._jobs.wait_for(lambda: self._running == 0, timeout=bound)
            left = self._running
        log.info("event=stopped" + (f" jobs_left={left}" if left else ""))

    def _counted(self, job: Callable[..., Any]) -> Callable[..., Any]:
        """``job`` counted while it runs, in its own thread (the scheduler's events come from
        two threads in no fixed order, and a count made from them reached 0 mid-send)."""

        @functools.wraps(job)
        def run(*args: Any, **kwargs: Any) -> Any:
            with self._jobs:
                self._running += 1
            try:
                return job(*args, **kwargs)
            finally:
                with self._jobs:
                    self._running -= 1
                    self._jobs.notify_all()

        return run

    # -- jobs -----------------------------------------------------------------------------

    @one_line
    def reload(self) -> bool:
        """Re-read the profiles if any file changed; rebuild the send slots. True if changed."""
        signature = _signature(self.cfg.subscribers_dir)
        if signature == self._signature:
            return False
        self._signature = signature
        loaded = load_site_profiles(self.cfg)
        for err in loaded.errors:
            # A lab list's error may quote its addresses: none in the service's log.
            log.error("event=profile-invalid error=%r", mask_addresses(str(err)))
        self.profiles = loaded.profiles
        slots: dict[tuple[str, str, str], list[str]] = defaultdict(list)
        for p in loaded.profiles.schedules:
            slots[(p.timezone, p.send_at, p.send_days)].append(p.email.lower())
        for job in self.scheduler.get_jobs():
            if job.id.startswith("slot:"):
                job.remove()
        for (tz, send_at, days), emails in slots.items():
            hh, mm = send_at.split(":")
            # apscheduler's weekday numbers are ours: 0 Monday … 6 Sunday.
            weekdays = ",".join(days) if days else "*"
            self.scheduler.add_job(
                self._counted(self.send_slot),
                CronTrigger(hour=int(hh), minute=int(mm), day_of_week=weekdays, timezone=tz),
                args=[emails],
                id=f"slot:{tz}:{send_at}" + (f":{days}" if days else ""),
                name=f"send {send_at} {tz}" + (f" days {days}" if days else ""),
            )
        log.info(
            "event=profiles-loaded valid=%d invalid=%d slots=%d",
            len(loaded.profiles),
            len(loaded.errors),
            len(slots),
        )
        return True

    @one_line
    def send_slot(
        self, emails: list[str], now: datetime | None = None, real_clock_delivery: bool = False
    ) -> None:
        if self.halt.is_set():
            return
        # Not before the start's fetches: a slot due at start would rank yesterday's papers.
        self._fetched.wait(START_FETCH_WAIT)
        with self._lock:
            # A slot of more than one batch is planned in forked processes on every core, as
            # `digest run` plans it (one batch stays in this process): in the service's own
            # thread, a slot of 20,000 readers had its last digest out 167 s after its time;
            # forked, 96 s (bench/serve_slot.py). A planner starts over nothing it shares with
            # the service's other threads (its own connections, its own signal handling);
            # should a fork still inherit a lock held by one of them (SQLite's or the HTTP
            # client's), the planner goes silent, is stopped after `silent_after`, and its
            # batches are planned here.
            report = run(
                self.cfg,
                self.store,
                now=now,
                ingest=False,
                only=set(emails),
                halt=self.halt,
                real_clock_delivery=real_clock_delivery,
            )
        # Counts, not a line per reader: readers' addresses stay out of the service's log
        # (`digest status` and `digest deliveries` show who got what).
        counts = Counter(r.status for r in report.results)
        log.info(
            "event=slot subscribers=%d %s",
            len(emails),
            " ".join(f"{k}={v}" for k, v in sorted(counts.items())),
        )
        if report.delivery is not None and report.delivery.paused:
            log.error("event=paused reason=%r", mask_addresses(report.delivery.paused))

    @one_line
    def catch_up(self, now: datetime | None = None) -> list[str]:
        """Send everyone whose send time today has passed and who has no digest for today."""
        moved = now is not None  # a clock moved by a test or a bench: the engine's clock too
        now = now or utcnow()
        self.reload()
        schedules = self.profiles.schedules
        late = {p.email.lower(): digest_day(p, now) for p in schedules if due_today(p, now)}
        # A reader with send days whose last send day passed with no digest (the service was
        # down on a weekly reader's Monday) gets it now, as a daily reader gets a missed day.
        waiting = {
            p.email.lower(): p
            for p in schedules
            if p.send_days and not is_send_day(p, digest_day(p, now))
        }
        if waiting:
            last = self.store.last_digest_days(list(waiting))
            for email, d in last.items():
                if not due_on(waiting[email], now, d):
                    continue
                late[email] = digest_day(waiting[email], now)
        # One query per chunk of readers, not one per reader (100,000 of them every few minutes).
        have = {d.subscriber for d in self.store.outcomes_on(late)}
        due = [email for email in late if email not in have]
        if self.halt.is_set():
            return due
        if due:
            log.info("event=catch-up subscribers=%d", len(due))
            # The same clock as the check above: a digest is planned for the date it was due on.
            self.send_slot(due, now, real_clock_delivery=not moved)  # and whatever else is due
        else:
            # Digests planned before a restart (or a SIGTERM) go out now, not at the next retry.
            self.retry()
        return due

    @one_line
    def start_up(self, now: datetime | None = None) -> None:
        """Fetch each source whose last scheduled fetch passed while the service was down (or
        that was never fetched), then send what is due: a service started after arXiv's
        fetch time would otherwise send "nothing new" all day. In turn, so the catch-up
        ranks the papers just fetched."""
        try:
            missed = self.missed_fetches(now or datetime.now(UTC))
            for name in missed:
                log.info("event=ingest-missed source=%s", name)
                self.ingest(name, fit=False)
            if missed:
                self.refit(now)  # once for all of them
        finally:
            self._fetched.set()  # slots and catch-ups wait for it (see `send_slot`)
        self.catch_up(now=now)

    def missed_fetches(self, now: datetime) -> list[str]:
        """Sources not fetched since their schedule's last time before ``now``."""
        states = {f.source: f for f in self.store.feed_states()}
        out = []
        for src in self.cfg.sources:
            if src.lookups_only:
                continue
            due = previous_fire_time(src.trigger(), now)
            state = states.get(src.name)
            tried = state.last_attempt if state is not None else None
            if tried is not None and tried.tzinfo is None:
                tried = tried.replace(tzinfo=UTC)  # stored as UTC without a zone
            # A fetch that failed counts as not done: its same-day retry was a job of the
            # process that stopped, and is gone.
            failed = state is not None and state.last_status == "error"
            if tried is None or failed or (due is not None and tried < due):
                out.append(src.name)
        return out

    @one_line
    def ingest(
        self, name: str, attempt: int = 0, now: datetime | None = None, fit: bool = True
    ) -> None:
        """Fetch one source; a failure is tried again later the same day, with a growing pause.
        New papers refit the vocabulary (`refit`), unless ``fit`` is False (the caller will)."""
        if self.halt.is_set():
            return
        r = ingest_source(self.store, self.cfg.source(name))
        log.info(
            "event=ingest source=%s status=%s added=%d updated=%d error=%r",
            r.source,
            r.status,
            r.added,
            r.updated,
            r.error,
        )
        if r.added and fit:
            self.refit(now)
        serve = self.cfg.serve
        if r.status != "error" or attempt >= serve.ingest_retries:
            return
        wait = timedelta(minutes=serve.ingest_retry_minutes * 2**attempt)
        at = (now or datetime.now(UTC)) + wait
        with contextlib.suppress(JobLookupError):  # one pending retry per source
            self.scheduler.remove_job(f"ingest-retry:{name}")
        self.scheduler.add_job(
            self._counted(self.ingest),
            DateTrigger(run_date=at),
            args=[name, attempt + 1],
            id=f"ingest-retry:{name}",
            name=f"ingest {name} again",
            replace_existing=True,
        )
        log.info("event=ingest-retry source=%s at=%s", name, at.isoformat(timespec="seconds"))

    def refit(self, now: datetime | None = None) -> None:
        """Fit the vocabulary for the papers just stored (digest.service.context's
        `refresh_vocabulary`), once for any number of fetches that ask meanwhile: feeds
        fetched together, or hourly, would each fit in turn and keep the slot lock (and the
        executor's threads) busy. Not beside a slot, which would hold a fit's memory at the
        same time; a slot due now waits the few seconds and finds it fitted."""
        self._stale.set()
        while self._stale.is_set():
            if not self._fitting.acquire(blocking=False):
                return  # the fit under way looks at the flag again once it lets go
            try:
                while self._stale.is_set() and not self.halt.is_set():
                    self._stale.clear()
                    with self._lock:
                        today = (now or datetime.now(UTC)).date()
                        problem = refresh_after_ingest(self.cfg, self.store, today)
                    if problem:
                        log.warning("event=vocabulary error=%r", problem)
            finally:
                self._fitting.release()
            if self.halt.is_set():
                return

    @one_line
    def retry(self) -> None:
        if self.halt.is_set():
            return
        with self._lock:  # not while a slot runs: the slot's engine sends what is due too
            report = deliver(self.store, self.cfg, halt=self.halt)
        if report.attempts:
            log.info("event=retry %s", " ".join(f"{k}={v}" for k, v in report.counts.items()))


def previous_fire_time(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The trigger's last time at or before ``now`` within the past eight days (APScheduler
    3 only looks forward), or None for a schedule with no time in them."""
    previous, at = None, trigger.get_next_fire_time(None, now - timedelta(days=8))
    for _ in range(20_000):  # every minute of eight days is 11,520
        if at is None or at > now:
            break
        # Stepped in UTC: a local time plus a second loses the fold of a repeated hour, and
        # at the fall-back the same time came back again and again.
        after = at.astimezone(UTC) + timedelta(seconds=1)
        previous, at = at, trigger.get_next_fire_time(at, after)
    return previous


def _signature(directory: Path) -> tuple[tuple[str, float, int], ...]:
    if not directory.is_dir():
        return ()
    out = []
    for p in sorted(directory.glob("*.toml")):
        try:
            st = p.stat()
        except OSError:
            continue
        out.append((p.name, st.st_mtime, st.st_size))
    return tuple(out)


def _web_server(cfg: Config, store: Store) -> Any:
    """digest.service.web on uvicorn, sharing this event loop; SIGTERM stays ours to handle."""
    import contextlib

    import uvicorn

    from digest.service.web_server import uvicorn_config

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # The service already stops on SIGTERM/SIGINT and then stops this server.
            yield

    config = uvicorn_config(cfg, store, host=cfg.web.host, port=cfg.web.port)
    log.info("serving the email's links on http://%s:%s", cfg.web.host, cfg.web.port)
    return _Server(config)


def serve_forever(cfg: Config, store: Store) -> None:
    """Run the service until SIGTERM or SIGINT."""
    logging.getLogger("apscheduler").setLevel(logging.WARNING)

    async def main() -> None:
        service = Service(cfg, store)
        service.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        web = _web_server(cfg, store) if cfg.web.serve else None
        web_task = asyncio.create_task(web.serve()) if web is not None else None
        await stop.wait()
        if web is not None and web_task is not None:
            web.should_exit = True
            await web_task
        # Shutting down waits for running jobs; keep the loop free while it does.
        await loop.run_in_executor(None, service.stop)

    asyncio.run(main())
