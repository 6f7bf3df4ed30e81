"""What a parser hands back: the records, what it skipped on purpose, and per-entry problems."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import feedparser

from digest.errors import FeedError
from digest.record import PaperRecord


@dataclass
class Parsed:
    records: list[PaperRecord] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    # Of a page of arXiv API results: its entries (good and bad), and the search's whole count
    # (opensearch:totalResults), which tell the end of the results from an empty page mid-way.
    seen: int = 0
    total: int | None = None


def entry_problem(label: str, n: int, exc: Exception) -> str:
    """One line for an entry that could not be used. Parsers catch every Exception per entry:
    a feed is untrusted, and one odd value (a number where text belongs, a missing attribute)
    must cost that entry, never the source or the day's run."""
    kind = "" if isinstance(exc, ValueError) else f"{type(exc).__name__}: "
    line = f"{label}: entry {n}: {kind}{exc}"
    return line if len(line) <= 300 else line[:299] + "…"


def parse_feed(content: bytes, label: str) -> Any:
    """feedparser with the HTML sanitiser and URI rewriting off.

    Both run an HTML parser over text fields, and arXiv maths such as `$1<p<2$` looks like a tag:
    the sanitiser deletes it. Nothing parsed here is ever rendered as HTML (the templates escape
    it), so turning them off loses no safety and keeps every character.
    """
    d = feedparser.parse(content, sanitize_html=False, resolve_relative_uris=False)
    if d.bozo and not d.entries:
        reason = getattr(d, "bozo_exception", None) or "not a feed"
        raise FeedError(f"{label}: cannot parse feed: {reason}")
    return d


def bozo_problem(d: Any, label: str, kept: bool = True) -> str | None:
    """A feed that parsed only in part: name the fault, keep the entries it did give
    (``kept``: whether any are left to keep)."""
    if d.bozo:
        then = "; kept what parsed" if kept else ""
        return f"{label}: feed is malformed ({d.get('bozo_exception')}){then}"
    return None


def entry_date(value: str | None, fallback: date) -> date:
    """The calendar day of an RFC 822 or ISO 8601 date, in the date's own offset."""
    if not value or not isinstance(value, str):  # feeds are untrusted: a number, a list...
        return fallback
    try:
        return parsedate_to_datetime(value).date()
    except (TypeError, ValueError):
        pass
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).date()
    except ValueError:
        return fallback
