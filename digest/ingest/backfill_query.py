"""The backfill's searches as arXiv's API is asked them, and how its answers are read: a search
cut by submission date, the cut day as a saved range stores it, the end of the results, an
HTML page where Atom was wanted. Used by digest.ingest.backfill."""

from __future__ import annotations

from datetime import date

from digest.ingest.fetch import Fetched

# The first day of arXiv: the lower end of a cut search's dates (it wants everything older).
FIRST_DAY = "19910801"


def cut_query(query: str, upto: str | None) -> str:
    """The search ``query``, cut to papers submitted up to the ISO day ``upto`` (None: not
    cut). arXiv reads the dates as GMT, as the entries' submission dates are."""
    if not upto:
        return query
    day = date.fromisoformat(upto).strftime("%Y%m%d")
    return f"({query}) AND submittedDate:[{FIRST_DAY}0000 TO {day}2359]"


def of(upto: str | None) -> str:
    """How a message names a search cut at ``upto`` (nothing for one not cut)."""
    return f" (papers up to {upto})" if upto else ""


def number_of(upto: str | None) -> int:
    """A cut day as a gap stores it: 20261130, or 0 for a search not cut."""
    return int(upto.replace("-", "")) if upto else 0


def day_of(number: int) -> str | None:
    if not number:
        return None
    text = f"{number:08d}"
    return f"{text[:4]}-{text[4:6]}-{text[6:]}"


def ended(total: int | None, start: int) -> bool:
    """Whether asking from ``start`` is past the real end of the results: only after some
    results (arXiv's spurious empty answers say totalResults 0)."""
    return total is not None and 0 < total <= start


def html_in(got: Fetched) -> str | None:
    """ "an HTML page" if that is what came (a proxy's or a maintenance page, often HTTP 200)."""
    kind = (got.content_type or "").split(";")[0].strip().lower()
    head = (got.content or b"")[:256].lstrip().lower()
    html = head.startswith((b"<!doctype html", b"<html"))
    if html or kind in ("text/html", "application/xhtml+xml"):
        return "an HTML page"
    return None
