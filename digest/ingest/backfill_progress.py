"""Where each backfill search got to: one record per (listing source, category) in the store's
control table, saved after every page and read back to resume (see digest.ingest.backfill)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlmodel import col, select

from digest.store.papers import Store
from digest.store.schema import Control

PREFIX = "backfill:"
# Days before an old pass began that a top-up of it reads (`Pass.listed_by`).
LISTING_LAG_DAYS = 7


def key_of(source: str, category: str) -> str:
    # The control table's keys are 64 characters; source names alone may be.
    digest = hashlib.sha256(f"{source}\0{category}".encode()).hexdigest()
    return f"{PREFIX}{digest[:32]}"


@dataclass
class Pass:
    """How far one search has got: saved after every page, read back to resume."""

    source: str
    category: str
    query: str
    began: str  # ISO day the pass started: its newest papers are of that day
    until: str  # ISO day: papers submitted before it are not wanted
    start: int = 0  # the next result to ask for (of the search cut at `upto`, if it is)
    # ISO day: the search is cut to papers submitted up to this day, its offsets counted from
    # there (digest.ingest.backfill.MAX_DEPTH); None while it is not.
    upto: str | None = None
    # The offset just past the last page the sweep read of its search as it is now cut (None:
    # not known, a record of an earlier release): a range skipped after it is read again by
    # the next cut, which starts at the oldest day read.
    read_to: int | None = None
    reached: str | None = None  # ISO day of the oldest submission seen so far
    pages: int = 0
    added: int = 0
    finished: bool = False  # the sweep is over: past `until`, or at the end of the results
    exhausted: bool = False  # at the end of the results: no older paper to fetch
    # The last totalResults arXiv gave: how far a skipped range has moved down since (new
    # submissions are added at the top of a newest-first search).
    total: int | None = None
    # Results skipped because their page could not be read, as [first, last, total then, the
    # day the search was cut at as 20261130 or 0]: fetched first by the next run. Without them
    # the category would keep a hole for good.
    gaps: list[list[int]] = field(default_factory=list)
    # An earlier pass too old to go on at its offsets (digest.ingest.backfill.RESUME_DAYS),
    # saved whole: this one reads the papers listed since, then goes on from where that one
    # got to (`joined`) instead of reading all it holds again. Kept until then, which may be a
    # later, longer run's (a shorter one can finish before it gets there).
    resume: dict[str, Any] | None = None

    def older(self) -> Pass | None:
        """The pass this one tops up (`resume`), if any and if it can be gone on from: one
        that does not read as a pass, or with a range of its uncut search left out (those
        offsets have moved by every paper since), is not, and everything is read again."""
        try:
            older = _from_dict(self.resume) if self.resume else None
        except (TypeError, ValueError, AttributeError):
            return None
        if older is None or not older.sound() or any(not g[3] for g in older.gaps):
            return None
        return older

    def sound(self) -> bool:
        """Whether every field holds what it should: a record is read from the database,
        and a value of the wrong type must cost a re-read, not the run."""
        try:
            date.fromisoformat(self.began), date.fromisoformat(self.until)
            for day in (self.reached, self.upto):
                if day is not None:
                    date.fromisoformat(day)
            numbers = (self.start, self.pages, self.added)
            maybe = (self.read_to, self.total)
            flags = (self.finished, self.exhausted)
            if not all(type(n) is int and n >= 0 for n in numbers):
                return False
            if not all(n is None or (type(n) is int and n >= 0) for n in maybe):
                return False
            if not all(type(f) is bool for f in flags):
                return False
            for gap in self.gaps:
                if len(gap) != 4 or not all(type(x) is int and x >= 0 for x in gap):
                    return False
                if gap[3]:
                    date(gap[3] // 10000, gap[3] // 100 % 100, gap[3] % 100)
            return True
        except (TypeError, ValueError):
            return False

    def listed_by(self) -> date:
        """The day below which every paper this pass could see had been listed when it ran.
        arXiv's API lists a paper once it is announced: a day after it is submitted, four
        over a weekend, more over the holidays. So papers listed since it ran are dated up to
        a week before the day it began, and a top-up of it reads that deep before `joined`."""
        return date.fromisoformat(self.began) - timedelta(days=LISTING_LAG_DAYS)

    def joined(self, older: Pass, wanted: str) -> str:
        """Go on from where ``older`` got to, this pass having read every paper listed since
        (and below the day it began, by arXiv's lag in listing them). ``wanted``: this run's
        cutoff (ISO). Never back up: where this pass already reads older papers than ``older``
        did, it goes on as it is. Says, in words, where it goes on from."""
        self.resume = None
        self.gaps += older.gaps  # of cut searches only (`older`): their offsets hold
        self.added += older.added
        if older.finished and (older.exhausted or older.until <= wanted):
            self.finished, self.exhausted = True, older.exhausted
            self.reached = min(older.reached or wanted, self.reached or wanted)
            self.until = min(older.until, wanted)  # the deeper: a longer run goes on from it
            return "the rest was fetched then"
        self.until = wanted
        if older.finished:
            day = older.below_cutoff()
            if self.reached is None or day < self.reached:
                self.cut_at(day)
                self.reached = older.until
                return f"going on from {day}, the day before that one's cutoff"
        elif older.reached and (self.reached is None or older.reached < self.reached):
            self.reached = older.reached
            # Deeper than this run wants, it is not finished for fewer days: a longer run
            # goes on from its place, not from this run's cutoff.
            self.until = min(older.until, wanted)
            if older.upto is None:  # its offsets moved with every paper since: cut instead
                self.cut_at(older.reached)
            else:  # a cut search's offsets hold: papers are listed within days, not weeks
                self.upto, self.start, self.read_to = older.upto, older.start, older.read_to
                self.total = older.total
            return f"going on from {older.reached}, where that one got to"
        return "this run already reads older papers than that one did"

    def below_cutoff(self) -> str:
        """Where a pass swept for fewer days goes on for more: the day before its cutoff (ISO).
        What its last page held past the cutoff was left out, and its offset is past them."""
        return (date.fromisoformat(self.until) - timedelta(days=1)).isoformat()

    def cut_at(self, day: str) -> None:
        """Go on with the search cut to papers submitted up to ``day`` (ISO), from offset 0:
        nothing of it read yet, and its count unknown."""
        self.upto, self.start, self.total, self.read_to = day, 0, None, 0

    def swept(self, cutoff: date) -> bool:
        """Whether the sweep from the newest papers already reached back past ``cutoff`` (or
        to the end of the results), gaps aside, finished or not."""
        if self.finished and self.exhausted:
            return True
        # Unfinished too: a longer backfill stopped on its way already holds every paper
        # since the day it reached. A sweep for fewer days ends at its own cutoff, whatever
        # its last page reached.
        deep = self.until <= cutoff.isoformat()
        return deep and self.reached is not None and self.reached < cutoff.isoformat()

    def covers(self, cutoff: date) -> bool:
        """Whether nothing is left to fetch for ``cutoff``: swept, and no range left out."""
        return self.swept(cutoff) and not self.gaps

    def back_to(self, cutoff: date) -> date | None:
        """The oldest day this pass holds every paper since (None: nothing yet). A pass at the
        end of the results holds all there is, so it counts as back to the cutoff."""
        if self.finished and self.exhausted:
            return cutoff
        if not self.reached:
            return None
        reached = date.fromisoformat(self.reached)
        # Past its own cutoff a finished sweep kept nothing, though its last page went further.
        return max(reached, date.fromisoformat(self.until)) if self.finished else reached

    def depth(self) -> str:
        """How far back it went, in words (for "already backfilled …")."""
        if self.exhausted:
            back = f"back to {self.reached}, " if self.reached else ""
            return f"{back}the end of arXiv's results"
        return f"back to {self.reached}"


def load(store: Store, key: str) -> Pass | None:
    raw = store.get_control(key)
    if raw is None:
        return None
    try:
        state = _from_dict(json.loads(raw))
    except (TypeError, ValueError, AttributeError):  # another release's: start it afresh
        return None
    return state if state.sound() else None


def _from_dict(saved: dict[str, Any]) -> Pass:
    state = Pass(**saved)
    # A gap saved before searches were cut has three numbers: it was of the uncut one.
    state.gaps = [[*gap[:4], *[0] * (4 - len(gap))] for gap in state.gaps]
    return state


def save(store: Store, key: str, state: Pass) -> None:
    store.set_control(key, json.dumps(asdict(state), sort_keys=True))


def forget_source(store: Store, source: str) -> int:
    """Delete the progress of every search stored under ``source`` (`digest papers purge`):
    with its papers gone, a record saying "done" would keep a backfill from fetching them
    again. The keys are hashes, so the records are read to find the source's. Returns how many
    were deleted."""
    gone = 0
    with store.session() as s:
        rows = s.exec(select(Control).where(col(Control.key).startswith(PREFIX)))
        for row in rows:
            try:
                mine = json.loads(row.value).get("source") == source
            except (ValueError, AttributeError):  # not a record of ours: left alone
                continue
            if mine:
                s.delete(row)
                gone += 1
        s.commit()
    return gone
