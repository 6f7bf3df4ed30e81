"""`digest ingest --backfill DAYS` and `digest init --backfill DAYS`: the wiring of
digest.ingest.backfill to the terminal (a progress bar) or to a log (a line per page)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime

from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from digest.cli.app import console, err_console
from digest.config import Config
from digest.errors import ExitStatus
from digest.ingest.backfill import backfill
from digest.ingest.backfill_lock import Busy, backfill_lock
from digest.ingest.backfill_searches import BackfillReport, Page, Search
from digest.store.papers import Store


class _Plain:
    """A line per page, for cron and pipes, where a progress bar would be noise."""

    def begin(self, search: Search, days: int, done_days: int) -> None:
        console.print(
            f"{search.label}: fetching {_days(days)} through the arXiv API", highlight=False
        )

    def page(self, page: Page) -> None:
        back = f", back to {page.reached}" if page.reached else ""
        console.print(
            f"{page.search.label}: page {page.number}: {page.entries} papers, "
            f"{page.added} new{back}",
            highlight=False,
        )

    def say(self, line: str) -> None:
        err_console.print(line, highlight=False)


class _Bar:
    """One bar per search on a terminal, measured in days reached back; lines above it."""

    def __init__(self, progress: Progress, today: date) -> None:
        self.progress = progress
        self.today = today
        self.tasks: dict[str, TaskID] = {}

    def begin(self, search: Search, days: int, done_days: int) -> None:
        self.tasks[search.label] = self.progress.add_task(
            search.label, total=days, completed=min(done_days, days), papers=0
        )

    def page(self, page: Page) -> None:
        task = self.tasks[page.search.label]
        back = (self.today - page.reached).days if page.reached else 0
        # The page that passes the cutoff reaches older than asked: the bar stops at its end.
        back = min(back, int(self.progress.tasks[task].total or back))
        papers = self.progress.tasks[task].fields.get("papers", 0) + page.added
        self.progress.update(task, completed=back, papers=papers)

    def say(self, line: str) -> None:
        self.progress.console.print(line, highlight=False)


def run_backfill(cfg: Config, store: Store, days: int, only: str | None, again: str) -> ExitStatus:
    """Backfill, print its summary, fit the vocabulary; the exit status. ``again`` is the
    command that continues it (said when it stopped early)."""
    with _stopped_as_by_ctrl_c():
        return _run_backfill(cfg, store, days, only, again)


def _run_backfill(cfg: Config, store: Store, days: int, only: str | None, again: str) -> ExitStatus:
    from digest.service.context import refresh_apart

    today = datetime.now(UTC).date()
    if days > cfg.digest.corpus_days:
        why = (
            f"--backfill {days} is more than [digest] corpus_days ({cfg.digest.corpus_days}): "
            f"papers older than {cfg.digest.corpus_days} days are stored but not used (raise "
            "corpus_days to use them)"
        )
        err_console.print(f"[yellow]{escape(why)}[/]", highlight=False, markup=True)
    try:
        with backfill_lock(cfg.data_dir):
            report = _backfill(cfg, store, days, only, today)
    except Busy as busy:
        # Two backfills would each pause 3 s between their own requests: arXiv would be asked
        # twice as often as it allows. The second one stops before its first request.
        pid = f"pid {busy.pid}" if busy.pid else "another process"
        err_console.print(
            f"[bold red]Error:[/] a backfill is already running ({pid}) on this site; "
            "run this again once it has ended (it goes on from where that one got to)",
            highlight=False,
            markup=True,
        )
        return ExitStatus.ERROR
    console.print(_summary(report, today), highlight=False)
    if report.interrupted:
        err_console.print(
            f"[yellow]interrupted;[/] `{escape(again)}` continues where it stopped",
            highlight=False,
            markup=True,
        )
    elif report.unfinished:
        err_console.print(
            # "Not finished", not "not back N days": a search can be back N days with a range
            # of results still missing (the summary counts days, the line before names it).
            f"[yellow]not finished:[/] {escape(', '.join(report.unfinished))}; "
            f"`{escape(again)}` goes on from where each stopped",
            highlight=False,
            markup=True,
        )
    if report.interrupted:
        return report.status
    # After every backfill, not only one that added papers: a fit stopped before (Ctrl-C)
    # leaves none, and the run again has nothing new. A current vocabulary is only read.
    if console.is_terminal:
        console.print("[dim]fitting the vocabulary...[/]", highlight=False, markup=True)
    try:
        problem = refresh_apart(cfg, store, today)
    except KeyboardInterrupt:
        problem = (
            "interrupted while fitting the vocabulary; the papers are stored, and the next run "
            "fits it"
        )
        err_console.print(f"[yellow]{escape(problem)}[/]", highlight=False, markup=True)
        return ExitStatus.PARTIAL
    if problem:
        err_console.print(f"[yellow]{escape(problem)}[/]", highlight=False, markup=True)
    return report.status


@contextlib.contextmanager
def _stopped_as_by_ctrl_c() -> Iterator[None]:
    """SIGTERM (`kill`, a service manager's stop, a CI job's timeout) ends a backfill as Ctrl-C
    does: progress is saved page by page, and the closing lines say how to go on. Left to
    Python's default, it exited 143 without a word. Once: a second signal (Ctrl-C pressed
    twice, a stop repeated) while the first is being handled would cut the closing lines
    short, or the run with a traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set a handler (a caller running us in a thread)
        return

    stopped: list[int] = []

    def interrupt(signum: int, frame: object) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        stopped.append(signum)
        raise KeyboardInterrupt

    before = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        # Stopped, the command ends here: a second signal in its last milliseconds is still
        # one to ignore, not Python's default again.
        if not stopped:
            for sig, handler in before.items():
                signal.signal(sig, handler)


def _backfill(
    cfg: Config, store: Store, days: int, only: str | None, today: date
) -> BackfillReport:
    """The backfill itself, drawn as a progress bar on a terminal, as lines otherwise."""
    if console.is_terminal:
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f} days, {task.fields[papers]} new"),
            console=console,
        )
        with progress:
            return backfill(
                store, cfg, days, today=today, only=only, listener=_Bar(progress, today)
            )
    else:
        return backfill(store, cfg, days, today=today, only=only, listener=_Plain())


def _days(n: int) -> str:
    return f"{n} day{'' if n == 1 else 's'}"


def _summary(report: BackfillReport, today: date) -> str:
    covered = report.days_covered(today)
    updated = f" ({report.updated} already stored)" if report.updated else ""
    failed = f", {report.failed_pages} failed" if report.failed_pages else ""
    if failed and not (report.unfinished or report.interrupted):
        failed += " (their papers read later in this run: nothing missing)"
    return (
        f"backfill: {report.added} papers added{updated}, {report.pages} "
        f"page{'' if report.pages == 1 else 's'}{failed}, "
        f"{covered} of {_days(report.days)} covered"
    )
