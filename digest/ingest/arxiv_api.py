"""arXiv API (export.arxiv.org/api/query) Atom responses: id look-ups and search backfill.

Handles both the current backend (unwrapped summaries) and the older one (hard-wrapped text,
namespaced primary_category). An unknown id is silently absent from the answer; a malformed one
comes back as an entry titled "Error", which is reported, not stored.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from xml.sax import SAXParseException

from digest.config import SourceConfig
from digest.errors import FeedError
from digest.ingest.fetch import fetch
from digest.ingest.parsed import Parsed, bozo_problem, entry_date, entry_problem, parse_feed
from digest.record import LOOKED_UP, PaperRecord, arxiv_id, arxiv_links, normalise_ws

# The API asks for no more than this many ids per request.
ID_BATCH = 100


def parse(content: bytes, src: SourceConfig, today: date) -> Parsed:
    d = parse_feed(content, src.name)
    entries = d.entries
    if entries and isinstance(d.get("bozo_exception"), SAXParseException):
        # An answer cut short (a connection dropped mid-way) ends in an entry cut too: a title
        # without its abstract, or no title. Left out and not counted, so a backfill asks for
        # the rest of the page from that entry on, rather than storing it broken or skipping it.
        entries = entries[:-1]
    out = Parsed(seen=len(entries), total=_count(d.feed.get("opensearch_totalresults")))
    if problem := bozo_problem(d, src.name):
        out.problems.append(problem)
    for i, e in enumerate(entries):
        try:
            if "api/errors" in str(e.get("id", "")):
                error = normalise_ws(str(e.get("summary", "")))
                out.problems.append(f"{src.name}: arXiv API error: {error}")
                continue
            out.records.append(_entry(e, src, today))
        except Exception as exc:  # one entry's fault is that entry's (see entry_problem)
            out.problems.append(entry_problem(src.name, i + 1, exc))
    if not out.records and out.problems and d.entries:
        # Nothing is kept: the malformed feed's line must not say it was.
        first = bozo_problem(d, src.name, kept=False)
        raise FeedError("; ".join([first, *out.problems[1:]] if first else out.problems))
    return out


def _count(value: object) -> int | None:
    """opensearch:totalResults as a number, or None where it is missing or not one."""
    try:
        return int(str(value).strip()) if value is not None else None
    except ValueError:
        return None


def _entry(e: Any, src: SourceConfig, today: date) -> PaperRecord:
    ident = arxiv_id(e.get("id"))
    if ident is None:
        raise ValueError(f"no arXiv id in {e.get('id')!r}")
    pid, version = ident
    categories = [t["term"] for t in e.get("tags", []) if t.get("term")]
    primary = (e.get("arxiv_primary_category") or {}).get("term")
    if primary:
        categories = [primary, *(c for c in categories if c != primary)]
    pdf = next((lk.get("href") for lk in e.get("links", []) if lk.get("title") == "pdf"), None)
    abs_url, pdf_url = arxiv_links(pid, version)
    title = normalise_ws(e.get("title"))
    if not title:
        raise ValueError(f"{pid}: no title")
    return PaperRecord(
        id=pid,
        version=version,
        title=title,
        abstract=normalise_ws(e.get("summary")),
        authors=[normalise_ws(a.get("name")) for a in e.get("authors", []) if a.get("name")],
        categories=categories,
        announced=entry_date(e.get("published"), today),
        announce_type=LOOKED_UP,
        abs_url=abs_url,
        pdf_url=pdf or pdf_url,
        doi=e.get("arxiv_doi"),
        journal_ref=normalise_ws(e.get("arxiv_journal_ref")) or None,
        source=src.name,
        kind=src.kind,
    )


def request_params(src: SourceConfig, ids: list[str] | None = None) -> dict[str, str]:
    """Query parameters: an id look-up, or the source's backfill search."""
    if ids:
        return {"id_list": ",".join(ids), "max_results": str(len(ids))}
    params = {"max_results": str(src.max_results), "sortBy": "submittedDate"}
    if src.query:
        params["search_query"] = src.query
    return params


def lookup(src: SourceConfig, ids: list[str], today: date) -> Parsed:
    """Fetch the given arXiv ids through this API source (in batches the API accepts)."""
    out = Parsed()
    for i in range(0, len(ids), ID_BATCH):
        batch = ids[i : i + ID_BATCH]
        got = fetch(
            src.url,
            timeout=src.timeout,
            deadline=src.deadline,
            max_bytes=src.max_bytes,
            params=None if src.url.startswith("file://") else request_params(src, batch),
        )
        if got.content is None:
            continue
        part = parse(got.content, src, today)
        wanted = set(batch)
        out.records.extend(r for r in part.records if r.id in wanted)
        out.problems.extend(part.problems)
    return out
