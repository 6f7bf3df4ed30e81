"""What a backfill is asked to do and what it tells: the searches of the configured sources,
what a listener hears of each page, the run's report (digest.ingest.backfill does the work)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Protocol

from digest.arxiv_taxonomy import classes_of
from digest.config import Config, SourceConfig
from digest.errors import ConfigError, ExitStatus
from digest.ingest.backfill_progress import key_of

# The name it had before these types moved here: a log filter on it keeps working.
log = logging.getLogger("digest.ingest.backfill")

DEFAULT_URL = "https://export.arxiv.org/api/query"


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
        return key_of(self.source.name, self.category)


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


@dataclass
class BackfillReport:
    days: int
    added: int = 0
    updated: int = 0
    pages: int = 0
    failed_pages: int = 0
    # Searches that stopped before the cutoff (a failure, the page bound) or that still miss a
    # range of results: a run again goes on.
    unfinished: list[str] = field(default_factory=list)
    # Per search, the oldest day it holds every paper since, by its stored progress (None:
    # nothing yet), whether or not this run reached it (Ctrl-C may stop a run before).
    reached: dict[str, date | None] = field(default_factory=dict)
    interrupted: bool = False

    @property
    def status(self) -> ExitStatus:
        # Not the failed pages themselves: each leaves its search unfinished (a range still
        # missing, or stopped there) unless the same run read its papers after all (a later
        # cut search, a range filled), and then nothing is missing.
        return ExitStatus.PARTIAL if self.unfinished or self.interrupted else ExitStatus.OK

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
    """The searches of the configured listing sources, and one line per source (or category)
    left out. A category two sources name is one search, stored under the first source: the
    same pages fetched twice would double the requests for no new paper."""
    sources = [cfg.source(only)] if only else cfg.sources
    found: list[Search] = []
    notes: list[str] = []
    owner: dict[str, str] = {}
    for src in sources:
        if src.kind != "arxiv-rss":
            if only:  # asked for by name: say why nothing happens
                notes.append(
                    f"{src.name}: {_a(src.kind)} {src.kind} source, not an arxiv-rss source with "
                    "categories; "
                    "only those backfill"
                )
            continue
        if not src.categories:
            notes.append(
                f"{src.name}: no categories configured; skipped "
                '(add e.g. categories = ["cs.LG"] to backfill it)'
            )
            continue
        for category in dict.fromkeys(src.categories):
            if category in owner:
                first = owner[category]
                notes.append(
                    f"{src.name} {category}: {first} names it too; fetched once, its papers "
                    f"stored under {first}"
                )
                continue
            owner[category] = src.name
            found.append(Search(src, category))
    return found, notes


def _a(word: str) -> str:
    """The article for ``word`` as it is read aloud ("an arxiv-api", "a feed")."""
    return "an" if word[:1].lower() in "aeiou" else "a"
