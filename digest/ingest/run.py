"""Ingest: fetch each configured source, normalise its entries, store them de-duplicated.

One module per source kind; this module only dispatches and records the outcome. A source that
fails is reported in its IngestReport and in the database; the others still ingest.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta

from sqlalchemy.exc import SQLAlchemyError

from digest.config import Config, SourceConfig
from digest.errors import DigestError, FeedError
from digest.ingest import arxiv_api, arxiv_rss, hf_daily, rss
from digest.ingest.fetch import fetch
from digest.ingest.parsed import Parsed
from digest.store.papers import Store
from digest.store.schema import FeedState, utcnow

log = logging.getLogger(__name__)

Parser = Callable[[bytes, SourceConfig, date], Parsed]
PARSERS: dict[str, Parser] = {
    "arxiv-rss": arxiv_rss.parse,
    "arxiv-api": arxiv_api.parse,
    "hf-daily": hf_daily.parse,
    "rss": rss.parse,
}


# The status of a source that is not fetched as a feed (`SourceConfig.lookups_only`).
LOOKUPS_ONLY = "look-ups only"


@dataclass
class IngestReport:
    source: str
    status: str = "ok"  # ok | not-modified | look-ups only | error
    entries: int = 0
    added: int = 0
    updated: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    error: str | None = None


def ingest_bytes(store: Store, src: SourceConfig, content: bytes, today: date) -> IngestReport:
    """Parse and store one response body (also used for files handed over by hand)."""
    try:
        parsed = PARSERS[src.kind](content, src, today)
    except FeedError:
        raise
    except Exception as exc:  # a parser's own fault on odd input: this source fails, not the run
        raise FeedError(f"{src.name}: cannot parse: {type(exc).__name__}: {exc}") from exc
    # A date past tomorrow (any time zone's today) is a feed's mistake; stored as it is, it
    # would become the newest listing day and every subscriber's candidates.
    latest_ok = today + timedelta(days=1)
    for rec in parsed.records:
        parsed.problems += [f"{src.name}: {rec.id[:80]}: {note}" for note in rec.dropped]
        if rec.announced > latest_ok:
            parsed.problems.append(
                f"{src.name}: {rec.id} is dated {rec.announced}, in the future; stored as {today}"
            )
            rec.announced = today
    added, updated = store_parsed(store, parsed)
    # LaTeX read as text once, here, rather than in every run that shows these papers.
    store.plain_texts_of(parsed.records)
    return IngestReport(
        source=src.name,
        entries=len(parsed.records),
        added=added,
        updated=updated,
        skipped=parsed.skipped,
        problems=parsed.problems,
    )


def store_parsed(store: Store, parsed: Parsed) -> tuple[int, int]:
    """Store the records; if the batch is refused, one at a time, so a record the database
    will not take (a value one backend refuses) costs that record, not the source."""
    try:
        return store.upsert_papers(parsed.records)
    except (SQLAlchemyError, ValueError) as exc:
        log.warning("storing a batch failed (%s); storing one paper at a time", exc)
    added = updated = 0
    kept = []
    for rec in parsed.records:
        try:
            a, u = store.upsert_papers([rec])
        except (SQLAlchemyError, ValueError) as exc:
            parsed.problems.append(f"{rec.source}: {rec.id[:80]}: cannot be stored: {exc}"[:300])
            continue
        added, updated = added + a, updated + u
        kept.append(rec)
    parsed.records = kept
    return added, updated


def ingest_source(store: Store, src: SourceConfig, today: date | None = None) -> IngestReport:
    """Fetch (conditionally) and ingest one source; never raises for a broken feed."""
    today = today or date.today()
    if src.lookups_only:
        # Asked with no `search_query`, it cost a request, and 3 s of arXiv's spacing, on
        # every ingest, for nothing.
        return IngestReport(source=src.name, status=LOOKUPS_ONLY)
    state = store.feed_state(src.name) or FeedState(source=src.name, url=src.url)
    if state.url != src.url:
        # A new URL means the old validators describe another document.
        state.etag = state.last_modified = None
        state.url = src.url
    state.last_attempt = utcnow()
    try:
        params = arxiv_api.request_params(src) if src.kind == "arxiv-api" else None
        got = fetch(
            src.url,
            timeout=src.timeout,
            deadline=src.deadline,
            max_bytes=src.max_bytes,
            etag=state.etag,
            last_modified=state.last_modified,
            params=None if src.url.startswith("file://") else params,
        )
        if got.content is None:
            report = IngestReport(source=src.name, status="not-modified")
        else:
            report = ingest_bytes(store, src, got.content, today)
            state.etag, state.last_modified = got.etag, got.last_modified
        state.last_success = utcnow()
        state.last_status = report.status
        state.last_error = "; ".join(report.problems[:3]) or None
        state.last_count = report.entries
    except Exception as exc:  # whatever one source does, the other sources still ingest
        if not isinstance(exc, DigestError):
            log.debug("ingest %s: unexpected failure", src.name, exc_info=True)
            exc = FeedError(f"{src.name}: {type(exc).__name__}: {exc}")
        log.warning("ingest %s failed: %s", src.name, exc)
        report = IngestReport(source=src.name, status="error", error=str(exc))
        state.last_status = "error"
        state.last_error = str(exc)
        state.last_count = 0
    store.save_feed_state(state)
    for p in report.problems:
        log.warning("%s", p)
    return report


def ingest_all(
    store: Store, cfg: Config, only: str | None = None, today: date | None = None
) -> list[IngestReport]:
    sources = [cfg.source(only)] if only else cfg.sources
    return [ingest_source(store, s, today) for s in sources]


@dataclass(frozen=True)
class Lookup:
    """What a look-up of example papers left: ids still unknown, and why if it could not run."""

    found: int = 0
    missing: tuple[str, ...] = ()
    # Set when the look-up did not run or failed: `missing` then says nothing about arXiv.
    error: str | None = None
    source: str = ""  # the arxiv-api source asked


def lookup_papers(store: Store, cfg: Config, ids: list[str], today: date | None = None) -> Lookup:
    """Fetch example papers the store lacks through the first arXiv API source.

    Best effort: a subscriber whose examples cannot be fetched still gets keyword-based picks.
    """
    wanted = list(dict.fromkeys(ids))
    stored = store.titles(wanted)  # once: asked per id, 2,500 examples took ten minutes
    missing = [i for i in wanted if i not in stored]
    api = next((s for s in cfg.sources if s.kind == "arxiv-api"), None)
    if not missing:
        return Lookup()
    if api is None:
        return Lookup(0, tuple(missing), "no arxiv-api source is configured to look them up")
    try:
        parsed = arxiv_api.lookup(api, missing, today or date.today())
    except FeedError as exc:
        log.warning("looking up example papers failed: %s", exc)
        return Lookup(0, tuple(missing), f"the look-up failed: {exc}")
    store.upsert_papers(parsed.records)
    store.plain_texts_of(parsed.records)
    got = {r.id for r in parsed.records}
    return Lookup(len(got), tuple(i for i in missing if i not in got), source=api.name)


__all__ = ["IngestReport", "Lookup", "ingest_all", "ingest_bytes", "ingest_source", "lookup_papers"]
