"""Corpus backfill through the arXiv API: the recent papers of each listing source's categories.

A new instance has only the listings it fetched, so its ranker would learn its vocabulary from a
few hundred papers. `digest ingest --backfill DAYS` fetches the last DAYS days of each configured
`arxiv-rss` source's `categories` from arXiv's search API and stores them as corpus: announce
type "backfill" (never in a listing, so never in a digest) and tagged with the listing source's
name, so the corpus window (digest.service.context.corpus_of) counts them for that source.

One search per configured category (`cat:cs.LG`; an archive such as `astro-ph` as its classes
joined by OR), newest submissions first, a page at a time and at least PAUSE seconds apart (the
API's terms ask for 3 s), until the submission date passes the cutoff. Where each search got to
is saved in the control table after every page, so a backfill that was interrupted (Ctrl-C, a
network error on page 7) continues at that page when started again: arXiv's results only grow
at the top, so resuming at an offset can re-read a few papers but never skips one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from time import monotonic, sleep
from typing import Protocol

from digest.arxiv_taxonomy import classes_of
from digest.config import Config, SourceConfig
from digest.errors import ConfigError, ExitStatus, FeedError
from digest.ingest import arxiv_api
from digest.ingest.arxiv_rss import in_categories
from digest.ingest.fetch import fetch
from digest.ingest.parsed import Parsed
from digest.ingest.run import store_parsed
from digest.record import BACKFILL, PaperRecord
from digest.store.papers import Store

log = logging.getLogger(__name__)

DEFAULT_URL = "https://export.arxiv.org/api/query"
# Results per request: arXiv allows up to 2,000, but large pages are slow to make and a failed
# one costs more; 500 is 90 days of cs.LG in about 100 requests.
PAGE_SIZE = 500
# Seconds between the end of one request and the start of the next (arXiv's terms: "no more
# than one request every three seconds").
PAUSE = 3.0
# A bound on one search's requests in one run: DAYS x this + 1. cs.LG, one of the busiest
# categories, brings about 500 submissions a day (cross-lists included), a page a day at most.
PAGES_PER_DAY = 4
# An empty page while the search says there is more is one of the API's known hiccups: asked
# again this often (after the pause), then the search stops and the next run starts there.
EMPTY_RETRIES = 1
# Pages in a row that cannot be read before a search is given up for this run (one is skipped).
BAD_PAGES = 2
# A pass older than this is started again from the newest papers, not resumed: its offsets
# moved with every paper submitted since, and the days since it began are missing from it.
RESUME_DAYS = 3


@dataclass(frozen=True)
class Search:
    """One category of one listing source, as one search."""

    source: SourceConfig
    category: str

    @property
    def query(self) -> str:
        return " OR ".join(f"cat:{c}" for c in classes_of(self.category))

    @property
    def label(self) -> str:
        return f"{self.source.name} {self.category}"

    @property
    def key(self) -> str:
        # The control table's keys are 64 characters; source names alone may be.
        digest = hashlib.sha256(f"{self.source.name}\0{self.category}".encode()).hexdigest()
        return f"backfill:{digest[:32]}"


@dataclass
class Pass:
    """How far one search has got: saved after every page, read back to resume."""

    source: str
    category: str
    query: str
    began: str  # ISO day the pass started: its newest papers are of that day
    until: str  # ISO day: papers submitted before it are not wanted
    start: int = 0  # the next result to ask for
    reached: str | None = None  # ISO day of the oldest submission seen so far
    pages: int = 0
    added: int = 0
    finished: bool = False  # past `until`, or at the end of the results
    exhausted: bool = False  # at the end of the results: no older paper to fetch

    def covers(self, cutoff: date) -> bool:
        """Whether this pass already reached back past ``cutoff`` (or to the end)."""
        if not self.finished:
            return False
        return self.exhausted or (self.reached is not None and self.reached < cutoff.isoformat())


@dataclass(frozen=True)
class Page:
    """One page's outcome, as a listener is told it."""

    search: Search
    number: int  # in this search's pass, from 1
    start: int
    entries: int
    added: int
    reached: date | None


class Listener(Protocol):
    """Where a backfill says what it does (the CLI draws a progress bar or prints lines)."""

    def begin(self, search: Search, days: int, done_days: int) -> None: ...
    def page(self, page: Page) -> None: ...
    def say(self, line: str) -> None: ...


class Quiet:
    """A listener that logs: the library used without a terminal."""

    def begin(self, search: Search, days: int, done_days: int) -> None:
        pass

    def page(self, page: Page) -> None:
        log.info("backfill %s: page %d, %d new", page.search.label, page.number, page.added)

    def say(self, line: str) -> None:
        log.warning("%s", line)


class Pacer:
    """At least ``gap`` seconds between one request's end and the next one's start, on a
    monotonic clock (a wall clock set back would otherwise shorten the pause). ``clock`` and
    ``pause`` are this module's `monotonic` and `sleep` unless given: tests pass fake ones."""

    def __init__(
        self,
        gap: float = PAUSE,
        clock: Callable[[], float] | None = None,
        pause: Callable[[float], None] | None = None,
    ) -> None:
        self.gap = gap
        self.clock = clock or monotonic
        self.pause = pause or sleep
        self.last: float | None = None

    def wait(self) -> None:
        if self.last is not None:
            left = self.last + self.gap - self.clock()
            if left > 0:
                self.pause(left)

    def done(self) -> None:
        self.last = self.clock()


@dataclass
class BackfillReport:
    days: int
    added: int = 0
    updated: int = 0
    pages: int = 0
    failed_pages: int = 0
    # Searches that stopped before the cutoff (a failure, the page bound): a run again goes on.
    unfinished: list[str] = field(default_factory=list)
    # Per search, the oldest submission day reached (None: nothing fetched).
    reached: dict[str, date | None] = field(default_factory=dict)
    interrupted: bool = False

    @property
    def status(self) -> ExitStatus:
        failed = self.failed_pages or self.unfinished or self.interrupted
        return ExitStatus.PARTIAL if failed else ExitStatus.OK

    def days_covered(self, today: date) -> int:
        """Days back from today that every search covers."""
        if not self.reached:
            return 0
        cutoff = today - timedelta(days=self.days)
        newest = max((max(d, cutoff) if d else today) for d in self.reached.values())
        return (today - newest).days


def api_source(cfg: Config) -> SourceConfig:
    """Where the API is asked: the first `arxiv-api` source (its url, timeouts and size cap),
    else arXiv's own endpoint with the default limits."""
    api = next((s for s in cfg.sources if s.kind == "arxiv-api"), None)
    if api is None:
        return SourceConfig(name="arxiv-api", kind="arxiv-api", url=DEFAULT_URL)
    if api.url.startswith("file://"):
        raise ConfigError(
            f"source {api.name!r}: a backfill pages through the API; {api.url} is a file",
            f"point {api.name}'s url at https://export.arxiv.org/api/query",
        )
    return api


def searches(cfg: Config, only: str | None = None) -> tuple[list[Search], list[str]]:
    """The searches of the configured listing sources, and one line per source left out."""
    sources = [cfg.source(only)] if only else cfg.sources
    found: list[Search] = []
    notes: list[str] = []
    for src in sources:
        if src.kind != "arxiv-rss":
            if only:  # asked for by name: say why nothing happens
                notes.append(f"{src.name}: a {src.kind} source; only arxiv-rss sources backfill")
            continue
        if not src.categories:
            notes.append(
                f"{src.name}: no categories configured; skipped "
                '(add e.g. categories = ["cs.LG"] to backfill it)'
            )
            continue
        found += [Search(src, c) for c in dict.fromkeys(src.categories)]
    return found, notes


def backfill(
    store: Store,
    cfg: Config,
    days: int,
    *,
    today: date | None = None,
    only: str | None = None,
    listener: Listener | None = None,
    pacer: Pacer | None = None,
    page_size: int | None = None,
) -> BackfillReport:
    """Fetch and store the last ``days`` days of every configured listing source's categories.

    Returns what was done; a page or a search that fails is reported (through ``listener``)
    and the rest go on. Ctrl-C ends it with ``interrupted`` set and every stored page kept.
    """
    if days < 1:
        raise ConfigError(f"--backfill {days}: give a number of days, 1 or more")
    today = today or date.today()
    listener = listener or Quiet()
    api = api_source(cfg)
    found, notes = searches(cfg, only)
    for line in notes:
        listener.say(line)
    if not found:
        raise ConfigError(
            "nothing to backfill: no arxiv-rss source with categories",
            'give an arxiv-rss source in digest.toml a list such as categories = ["cs.LG"]',
        )
    report = BackfillReport(days=days)
    size = page_size or PAGE_SIZE
    run = _Run(store, api, today, days, listener, pacer or Pacer(), size, report)
    try:
        for search in found:
            run.search(search)
    except KeyboardInterrupt:
        report.interrupted = True
    return report


@dataclass
class _Run:
    store: Store
    api: SourceConfig
    today: date
    days: int
    listener: Listener
    pacer: Pacer
    page_size: int
    report: BackfillReport
    bad_in_a_row: int = 0

    @property
    def cutoff(self) -> date:
        return self.today - timedelta(days=self.days)

    def search(self, search: Search) -> None:
        state = self._pass(search)
        label = search.label
        reached = date.fromisoformat(state.reached) if state.reached else None
        self.report.reached[label] = reached
        if state.covers(self.cutoff):
            self.listener.say(f"{label}: already backfilled back to {state.reached}; nothing to do")
            return
        state.finished = state.exhausted = False
        state.until = self.cutoff.isoformat()
        self.bad_in_a_row = 0
        self.listener.begin(search, self.days, (self.today - reached).days if reached else 0)
        if state.start:
            self.listener.say(
                f"{label}: continuing at result {state.start} (page {state.pages + 1})"
            )
        bound = self.days * PAGES_PER_DAY + 1  # per run: a resumed pass has its own
        for _ in range(bound):
            if not self._page(search, state):
                return
        self._stop(search, f"stopped after {bound} pages, the bound for {self.days} days")

    def _pass(self, search: Search) -> Pass:
        """The saved pass of this search to go on with, or a new one from the newest papers."""
        saved = _load(self.store, search.key)
        stale = (self.today - timedelta(days=RESUME_DAYS)).isoformat()
        if saved is None or saved.query != search.query or saved.began < stale:
            return Pass(
                source=search.source.name,
                category=search.category,
                query=search.query,
                began=self.today.isoformat(),
                until=self.cutoff.isoformat(),
            )
        return saved

    def _page(self, search: Search, state: Pass) -> bool:
        """Fetch, store and record one page; False when this search is over for this run."""
        label, start = search.label, state.start
        for attempt in range(EMPTY_RETRIES + 1):
            parsed = self._fetch(search, state)
            if parsed is None:
                return self._unreadable(search, state)
            if parsed.seen:
                break
            if parsed.total is not None and start >= parsed.total:
                state.finished = state.exhausted = True  # the end of the results
                _save(self.store, search.key, state)
                return False
            if attempt < EMPTY_RETRIES:
                self.listener.say(f"{label}: an empty page at result {start}; asking again")
        else:
            self.report.failed_pages += 1
            total = parsed.total if parsed is not None else None
            of = f" of {total}" if total is not None else ""
            self._stop(search, f"arXiv sent an empty page at result {start}{of} twice")
            return False
        self.bad_in_a_row = 0
        stored = Parsed(records=self._keep(search, parsed.records))
        added, updated = store_parsed(self.store, stored)
        for line in parsed.problems + stored.problems:  # bad entries: a line each, the rest kept
            self.listener.say(line)
        oldest = min((r.announced for r in parsed.records), default=None)
        if oldest is not None:
            state.reached = min(state.reached or oldest.isoformat(), oldest.isoformat())
        # Ahead by the entries this page held, not by the page size: a page cut short (a
        # truncated answer that parsed in part) is asked for again from its first lost entry.
        state.start += parsed.seen
        state.pages += 1
        state.added += added
        self.report.pages += 1
        self.report.added += added
        self.report.updated += updated
        reached = date.fromisoformat(state.reached) if state.reached else None
        self.report.reached[label] = reached
        past = oldest is not None and oldest < self.cutoff
        at_end = parsed.total is not None and state.start >= parsed.total
        state.finished = past or at_end
        state.exhausted = at_end and not past
        _save(self.store, search.key, state)
        self.listener.page(Page(search, state.pages, start, parsed.seen, added, reached))
        return not state.finished

    def _fetch(self, search: Search, state: Pass) -> Parsed | None:
        """One request (after the pause) and its parse; None, said in one line, if either
        fails. A request that fails stops the search: the next run starts at this page."""
        params = {
            "search_query": search.query,
            "sortBy": "submittedDate",
            "sortOrder": "descending",
            "start": str(state.start),
            "max_results": str(self.page_size),
        }
        self.pacer.wait()
        try:
            got = fetch(
                self.api.url,
                timeout=self.api.timeout,
                deadline=self.api.deadline,
                max_bytes=self.api.max_bytes,
                params=params,
            )
        except FeedError as exc:
            self.report.failed_pages += 1
            self.bad_in_a_row = BAD_PAGES  # nothing to skip to: the network or the API is down
            self.listener.say(f"{search.label}: the page at result {state.start} failed: {exc}")
            return None
        finally:
            self.pacer.done()
        # Parsed as this source's: the records carry its name, so the corpus counts them for it.
        as_source = search.source.model_copy(update={"kind": "arxiv-api"})
        try:
            return arxiv_api.parse(got.content or b"", as_source, self.today)
        except FeedError as exc:
            self.report.failed_pages += 1
            self.bad_in_a_row += 1
            self.listener.say(
                f"{search.label}: the page at result {state.start} is unreadable: {exc}"
            )
            return None

    def _unreadable(self, search: Search, state: Pass) -> bool:
        """After a page that failed: one that could not be read is skipped (the rest of the
        search goes on); a second in a row, or one that could not be fetched, stops the search
        where it is, and the next run starts there."""
        if self.bad_in_a_row >= BAD_PAGES:
            self._stop(search, f"stopped at result {state.start}")
            return False
        self.listener.say(
            f"{search.label}: results {state.start} to {state.start + self.page_size - 1} "
            "left out; going on with the next page"
        )
        state.start += self.page_size
        _save(self.store, search.key, state)
        return True

    def _stop(self, search: Search, why: str) -> None:
        self.report.unfinished.append(search.label)
        self.listener.say(f"{search.label}: {why}; the next run goes on from there")

    def _keep(self, search: Search, records: list[PaperRecord]) -> list[PaperRecord]:
        """The page's papers that belong in the corpus: submitted since the cutoff, and (for a
        source without cross-lists) of the category itself. Dated no later than tomorrow, as
        at any ingest (a later date would become the source's newest day)."""
        one = search.source.model_copy(update={"categories": [search.category]})
        latest = self.today + timedelta(days=1)
        kept = []
        for rec in records:
            if rec.announced < self.cutoff:
                continue
            if not search.source.include_cross_lists and not in_categories(rec.categories[:1], one):
                continue
            rec.announce_type = BACKFILL
            rec.announced = min(rec.announced, latest)
            kept.append(rec)
        return kept


def _load(store: Store, key: str) -> Pass | None:
    raw = store.get_control(key)
    if raw is None:
        return None
    try:
        return Pass(**json.loads(raw))
    except (TypeError, ValueError):  # written by another release: start that search afresh
        return None


def _save(store: Store, key: str, state: Pass) -> None:
    store.set_control(key, json.dumps(asdict(state), sort_keys=True))
