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
network error on page 7) continues at that page when started again: arXiv's results only grow at
the top, so resuming at an offset can re-read a few papers but never skips one. Begun again more
than RESUME_DAYS later, the offsets have moved too far: a new pass reads the papers listed
since the old one ran (from a week before it began: arXiv lists papers days after their
submission), then goes on from the old one's place (`Pass.joined`). arXiv serves no
more than 30,000 results of one query (90 days of cs.LG is about 45,000), and deep offsets are
slow to serve: a sweep that gets MAX_DEPTH results deep goes on with the same search cut to the
papers submitted up to the oldest day it has reached (`submittedDate:[… TO that day]`), from
offset 0. That day is read again, which costs a page and skips nothing. A page that cannot be
read is skipped and remembered (digest.ingest.backfill_progress): the next run fetches it first.
A search counts as done only once a page reaches past the cutoff, or the results end after some
papers; an empty answer is one of the API's hiccups (or a mistyped category), not the end. One
backfill runs at a time per site (digest.ingest.backfill_lock).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from time import monotonic, sleep

from digest.arxiv_taxonomy import unknown_category
from digest.config import Config, SourceConfig
from digest.errors import ConfigError, FeedError
from digest.ingest import arxiv_api
from digest.ingest.arxiv_rss import in_categories
from digest.ingest.backfill_progress import Pass, load, save
from digest.ingest.backfill_query import cut_query, day_of, ended, html_in, number_of, of
from digest.ingest.backfill_searches import (
    BackfillReport,
    Listener,
    Page,
    Quiet,
    Search,
    api_source,
    searches,
)
from digest.ingest.fetch import fetch
from digest.ingest.parsed import Parsed
from digest.ingest.run import store_parsed
from digest.record import BACKFILL, PaperRecord
from digest.store.papers import Store

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
# Results deep into one query at which a sweep cuts its search at the day it has reached and
# starts again from offset 0 (see the module's docstring): well inside arXiv's 30,000.
MAX_DEPTH = 10_000
# A pass older than this is not resumed at its offsets, which moved with every paper submitted
# since (and the days since it began are missing from it): it is topped up (`_Run.current`).
RESUME_DAYS = 3


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
    The caller holds the site's backfill lock (digest.ingest.backfill_lock).
    """
    if days < 1:
        raise ConfigError(f"--backfill {days}: give a number of days, 1 or more")
    today = today or date.today()
    listener = listener or Quiet()
    found, notes = searches(cfg, only)
    for line in notes:
        listener.say(line)
    if not found:
        raise ConfigError(
            "nothing to backfill: no arxiv-rss source with categories",
            'give an arxiv-rss source in digest.toml a list such as categories = ["cs.LG"]',
        )
    api = api_source(cfg)  # after: what is not backfilled is said first, whatever the API's url
    report = BackfillReport(days=days)
    size = page_size or PAGE_SIZE
    run = _Run(store, api, today, days, listener, pacer or Pacer(), size, report)
    try:
        for search in found:
            run.search(search)
    except KeyboardInterrupt:
        report.interrupted = True
    # From what is stored, for every search: one that Ctrl-C kept this run from reaching
    # still counts with what earlier runs fetched (or with nothing).
    for search in found:
        state = run.current(search)
        report.reached[search.label] = state.back_to(run.cutoff) if state else None
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
        state = self.current(search) or self._new(search)
        label = search.label
        if state.covers(self.cutoff):
            self.listener.say(f"{label}: already backfilled {state.depth()}; nothing to do")
            return
        self.bad_in_a_row = 0
        reached = state.back_to(self.cutoff)
        self.listener.begin(search, self.days, (self.today - reached).days if reached else 0)
        topping_up = (older := state.older()) is not None
        if older is not None and not state.pages:
            self.listener.say(
                f"{label}: the backfill begun {older.began} is too old to go on at its place "
                "(arXiv's results have moved since): fetching the papers listed since, then "
                "going on from where it got to"
            )
        if state.gaps and not self._fill_gaps(search, state):
            return
        if not state.swept(self.cutoff):
            self._sweep(search, state)
        joined = topping_up and state.resume is None and label not in self.report.unfinished
        if joined and state.gaps and not self._fill_gaps(search, state):
            return  # the ranges the older pass left out: now, not in the next run
        if state.gaps and label not in self.report.unfinished:
            self.report.unfinished.append(label)
            left = ", ".join(f"{a} to {b}{of(day_of(cut))}" for a, b, _, cut in state.gaps)
            self.listener.say(f"{label}: results {left} still missing; the next run fetches them")

    def current(self, search: Search) -> Pass | None:
        """The saved pass of this search to go on with; None if there is none or it is of
        another query. One too old to go on at its offsets is topped up: a new pass reads
        from the newest papers down to a week before it began (`Pass.listed_by`), then goes on
        from where it got to."""
        saved = load(self.store, search.key)
        if saved is None or saved.query != search.query:
            return None
        if saved.began >= (self.today - timedelta(days=RESUME_DAYS)).isoformat():
            return saved
        # A top-up itself too old that read nothing: the pass it tops up is the older one.
        older = saved if saved.reached else saved.older()
        if older is None or not older.reached:
            return None
        older.resume = None
        fresh = self._new(search)
        fresh.resume = asdict(older)
        # Checked as a resume is: one with a range of its uncut search left out is read again.
        return fresh if fresh.older() is not None else None

    def _new(self, search: Search) -> Pass:
        return Pass(
            source=search.source.name,
            category=search.category,
            query=search.query,
            began=self.today.isoformat(),
            until=self.cutoff.isoformat(),
        )

    def _sweep(self, search: Search, state: Pass) -> None:
        """Page back from where the pass is until past the cutoff or the end of the results."""
        wanted = self.cutoff.isoformat()
        if state.finished and not state.exhausted and state.until > wanted:
            # Swept for fewer days (its last page's older papers were left out, `_keep`).
            state.cut_at(state.below_cutoff())
            state.reached = state.until
        state.finished = state.exhausted = False
        state.until = wanted
        self._cut_if_deep(search, state)
        if state.start:
            self.listener.say(
                f"{search.label}: continuing at result {state.start}{of(state.upto)} "
                f"(page {state.pages + 1})"
            )
        bound = self.days * PAGES_PER_DAY + 1  # per run: a resumed pass has its own
        for _ in range(bound):
            self._cut_if_deep(search, state)
            if not self._page(search, state):
                return
        self._stop(search, f"stopped after {bound} pages, the bound for {self.days} days")

    def _cut_if_deep(self, search: Search, state: Pass) -> None:
        """Before a page that would reach past `MAX_DEPTH`: the search from here on is cut at
        the oldest day reached, from offset 0. Not when that is the day it is already cut at
        (a single day of more than MAX_DEPTH results): it goes on deeper, as arXiv allows."""
        if state.start + self.page_size <= MAX_DEPTH or not state.reached:
            return
        if state.upto is None or state.reached < state.upto:
            # Ranges skipped after the last page read hold papers no newer than the day cut
            # at: the cut search reads them, so they are not left for the next run.
            cut, last = number_of(state.upto), state.read_to
            label, day = search.label, state.reached
            if last is not None:
                read = [g for g in state.gaps if g[3] == cut and g[0] >= last]
                state.gaps = [g for g in state.gaps if g not in read]
                for first, end, *_ in read:
                    self.listener.say(
                        f"{label}: results {first} to {end}{of(state.upto)}, left out, are "
                        f"read by the search cut at {day} instead"
                    )
            self.listener.say(
                f"{label}: {state.start} results deep; going on with the papers submitted up "
                f"to {day}, from result 0"
            )
            # The count was of the search before the cut: a range skipped from here on is
            # measured by the cut search's own (`cut_at` forgets it).
            state.cut_at(day)

    def _page(self, search: Search, state: Pass) -> bool:
        """Fetch, store and record one page of the sweep; False when it is over for this run."""
        start = state.start
        parsed = self._ask(search, start, self.page_size, state.upto)
        if parsed is None:
            return self._unreadable(search, state)
        if not parsed.seen:
            if ended(parsed.total, start):  # the real end, after papers: nothing older
                state.finished = state.exhausted = True
                save(self.store, search.key, state)
            else:
                self._empty_twice(search, start, parsed.total, state.upto)
            return False
        self.bad_in_a_row = 0
        oldest, added = self._store(search, state, parsed, start, state.upto)
        # Ahead by the entries this page held, not by the page size: a page cut short (a
        # truncated answer that parsed in part) is asked for again from its first lost entry.
        state.start += parsed.seen
        state.read_to = state.start
        state.pages += 1
        past = oldest is not None and oldest < self.cutoff
        at_end = ended(parsed.total, state.start)
        state.finished = past or at_end
        state.exhausted = at_end and not past
        older = None if state.finished else state.older()
        joined = older is not None and oldest is not None and oldest < older.listed_by()
        if joined and older is not None:  # (the second test for the type checker)
            how = state.joined(older, self.cutoff.isoformat())
            self.listener.say(
                f"{search.label}: the papers listed since the backfill begun {older.began} "
                f"are read; {how}"
            )
        save(self.store, search.key, state)
        self._tell(search, state, start, parsed.seen, added)
        # Joined to a pass that went deeper than this run wants: nothing more to read.
        return not (state.finished or (joined and state.swept(self.cutoff)))

    def _fill_gaps(self, search: Search, state: Pass) -> bool:
        """Fetch the ranges an earlier run skipped, before anything else. A range still
        unreadable stays for the next run; False if the search stops (the network is down)."""
        for gap in list(state.gaps):
            first, last, then, cut = gap
            upto = day_of(cut)
            label = search.label
            self.listener.say(
                f"{label}: fetching results {first} to {last}{of(upto)}, left out before"
            )
            start, end = first, last
            while start <= end:
                parsed = self._ask(search, start, min(end - start + 1, self.page_size), upto)
                if parsed is None or not parsed.seen:
                    if parsed is not None and ended(parsed.total, start):
                        start = end + 1  # the results no longer reach this far: nothing left
                        break
                    if parsed is not None:
                        self.report.failed_pages += 1
                        self.listener.say(f"{label}: an empty page at result {start} twice")
                    gap[:] = [start, end, then, cut]
                    save(self.store, search.key, state)
                    if self.bad_in_a_row >= BAD_PAGES:  # the network, or two bad in a row
                        self._stop(search, f"stopped at result {start}")
                        return False
                    self.listener.say(f"{label}: results {start} to {end} kept for the next run")
                    break
                self.bad_in_a_row = 0
                if parsed.total is not None and then > 0 and parsed.total > then:
                    # Papers submitted since the range was skipped moved it down by as many.
                    end += parsed.total - then
                    then = parsed.total
                # Down to the cutoff the range was skipped for, if this run's is later: a
                # shorter backfill must not drop them (nothing would fetch them again).
                since = min(self.cutoff, date.fromisoformat(state.until))
                _, added = self._store(search, state, parsed, start, upto, since)
                self._tell(search, state, start, parsed.seen, added)
                start += parsed.seen
                gap[:] = [start, end, then, cut]
                save(self.store, search.key, state)
            if start > end:
                state.gaps.remove(gap)
                save(self.store, search.key, state)
        return True

    def _store(
        self,
        search: Search,
        state: Pass,
        parsed: Parsed,
        start: int,
        upto: str | None,
        since: date | None = None,
    ) -> tuple[date | None, int]:
        """Store a page's papers and count them: the oldest submission day on it, and how
        many papers were new. ``start``: the page's first result; ``upto``: the day the page's
        search is cut at, if it is."""
        stored = Parsed(records=self._keep(search, parsed.records, since or self.cutoff))
        added, updated = store_parsed(self.store, stored)
        # Bad entries, a page cut short: a line each, named by category and result (the
        # parser knows only the source), the rest kept.
        own = f"{search.source.name}: "
        for line in parsed.problems + stored.problems:
            line = line.removeprefix(own)
            self.listener.say(f"{search.label}: the page at result {start}{of(upto)}: {line}")
        oldest = min((r.announced for r in parsed.records), default=None)
        if oldest is not None:
            state.reached = min(state.reached or oldest.isoformat(), oldest.isoformat())
        if parsed.total is not None:
            state.total = parsed.total
        state.added += added
        self.report.pages += 1
        self.report.added += added
        self.report.updated += updated
        # A range skipped before the first page that said how many results there were:
        # measured from this page's count (a page or two later), close enough to find it.
        for gap in state.gaps:
            if gap[2] <= 0 and parsed.total and gap[3] == number_of(upto):
                gap[2] = parsed.total
        return oldest, added

    def _tell(self, search: Search, state: Pass, start: int, seen: int, added: int) -> None:
        reached = date.fromisoformat(state.reached) if state.reached else None
        self.listener.page(Page(search, state.pages, start, seen, added, reached))

    def _ask(self, search: Search, start: int, count: int, upto: str | None) -> Parsed | None:
        """One page, asked for again once (after the pause) if it came back empty when it
        should not have; None if it failed (said in one line)."""
        parsed = None
        for attempt in range(EMPTY_RETRIES + 1):
            parsed = self._fetch(search, start, count, upto)
            if parsed is None or parsed.seen or ended(parsed.total, start):
                return parsed
            if attempt < EMPTY_RETRIES:
                self.listener.say(f"{search.label}: an empty page at result {start}; asking again")
        return parsed

    def _fetch(self, search: Search, start: int, count: int, upto: str | None) -> Parsed | None:
        """One request (after the pause) and its parse; None, said in one line, if either
        fails. A request that fails stops the search: the next run starts at this page."""
        params = {
            "search_query": cut_query(search.query, upto),
            "sortBy": "submittedDate",
            "sortOrder": "descending",
            "start": str(start),
            "max_results": str(count),
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
            self.listener.say(f"{search.label}: the page at result {start} failed: {exc}")
            return None
        finally:
            self.pacer.done()
        # Parsed as this source's: the records carry its name, so the corpus counts them for it.
        as_source = search.source.model_copy(update={"kind": "arxiv-api"})
        try:
            if (html := html_in(got)) is not None:
                raise FeedError(f"arXiv sent {html}, not Atom")
            parsed = arxiv_api.parse(got.content or b"", as_source, self.today)
            if not parsed.seen and parsed.total is None:
                # arXiv's answers always count their results: without entries or a count this
                # is some other XML (a proxy's, a portal's), not an empty page to ask again.
                raise FeedError("arXiv sent a page that is not its Atom")
            return parsed
        except FeedError as exc:
            self.report.failed_pages += 1
            self.bad_in_a_row += 1
            # Named by its place: a parser's own message says neither category nor result.
            self.listener.say(f"{search.label}: the page at result {start} is unreadable: {exc}")
            return None

    def _unreadable(self, search: Search, state: Pass) -> bool:
        """After a page that failed: one that could not be read is skipped and remembered (the
        rest of the search goes on, the next run fetches it first); a second in a row, or one
        that could not be fetched, stops the search where it is, and the next run starts there."""
        if self.bad_in_a_row >= BAD_PAGES:
            self._stop(search, f"stopped at result {state.start}")
            return False
        first, last = state.start, state.start + self.page_size - 1
        self.listener.say(
            f"{search.label}: results {first} to {last}{of(state.upto)} left out for now (the "
            "next run fetches "
            "them first); going on with the next page"
        )
        # The total 0: not known yet.
        state.gaps.append([first, last, state.total or 0, number_of(state.upto)])
        state.start += self.page_size
        save(self.store, search.key, state)
        return True

    def _empty_twice(self, search: Search, start: int, total: int | None, upto: str | None) -> None:
        self.report.failed_pages += 1
        if start == 0 and upto is None:
            # Nothing at all, twice: a category arXiv does not know answers just so.
            typo = unknown_category(search.category)
            why = f"arXiv returned no papers for {search.category} (asked twice): check its name"
            self._stop(search, f"{why} ({typo})" if typo else why, then="asks again")
            return
        count = f" of {total}" if total else ""  # 0: the count of a spurious answer
        self._stop(search, f"arXiv sent an empty page at result {start}{count}{of(upto)} twice")

    def _stop(self, search: Search, why: str, then: str = "goes on from there") -> None:
        if search.label not in self.report.unfinished:
            self.report.unfinished.append(search.label)
        self.listener.say(f"{search.label}: {why}; the next run {then}")

    def _keep(self, search: Search, records: list[PaperRecord], since: date) -> list[PaperRecord]:
        """The page's papers that belong in the corpus: submitted since ``since``, and (for a
        source without cross-lists) of the category itself. Dated no later than tomorrow, as
        at any ingest (a later date would become the source's newest day)."""
        one = search.source.model_copy(update={"categories": [search.category]})
        latest = self.today + timedelta(days=1)
        kept = []
        for rec in records:
            if rec.announced < since:
                continue
            if not search.source.include_cross_lists and not in_categories(rec.categories[:1], one):
                continue
            rec.announce_type = BACKFILL
            rec.announced = min(rec.announced, latest)
            kept.append(rec)
        return kept
