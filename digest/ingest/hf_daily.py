"""Hugging Face daily papers (`/api/daily_papers?date=...`).

The schema has grown over time (submittedBy, organization, githubRepo, ...), so only the few
fields we use are read, each with a fallback. Some archived days hold each entry as a Python-repr
string, sometimes inside a {status, date, count, data} wrapper; both are decoded.
"""

from __future__ import annotations

import ast
import json
from datetime import date
from typing import Any

from digest.config import SourceConfig
from digest.errors import FeedError
from digest.ingest.parsed import Parsed, entry_date, entry_problem
from digest.record import PaperRecord, arxiv_id, arxiv_links, normalise_ws

# A repr string longer than this is not a paper entry; refuse it rather than evaluate it.
_MAX_REPR = 2_000_000


def parse(content: bytes, src: SourceConfig, today: date) -> Parsed:
    try:
        doc = json.loads(content)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FeedError(f"{src.name}: not JSON: {exc}") from exc
    entries = _entries(doc)
    if entries is None:
        raise FeedError(f"{src.name}: expected a list of daily papers, got {type(doc).__name__}")
    out = Parsed()
    for i, raw in enumerate(entries):
        try:
            entry = _decode(raw)
            out.records.append(_entry(entry, src, today))
        except Exception as exc:  # one entry's fault is that entry's (see entry_problem)
            out.problems.append(entry_problem(src.name, i + 1, exc))
    return out


def _entries(doc: Any) -> list[Any] | None:
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        for key in ("data", "papers", "items"):
            if isinstance(doc.get(key), list):
                return list(doc[key])
    return None


def _decode(raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):
        if len(raw) > _MAX_REPR:
            raise ValueError("entry string too long")
        # literal_eval only builds literals (no calls, no names): safe on untrusted text.
        raw = ast.literal_eval(raw)
    if not isinstance(raw, dict):
        raise ValueError(f"expected an object, got {type(raw).__name__}")
    return raw


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _entry(entry: dict[str, Any], src: SourceConfig, today: date) -> PaperRecord:
    nested = entry.get("paper")
    paper: dict[str, Any] = nested if isinstance(nested, dict) else entry
    raw_id = paper.get("id")
    ident = arxiv_id(raw_id) if isinstance(raw_id, str) else None
    if ident is None:
        raise ValueError(f"no arXiv id ({paper.get('id')!r})")
    pid, version = ident
    title = normalise_ws(paper.get("title") or entry.get("title"))
    if not title:
        raise ValueError(f"{pid}: no title")
    authors = [
        normalise_ws(a.get("name"))
        for a in _list(paper.get("authors"))
        if isinstance(a, dict) and isinstance(a.get("name"), str) and not a.get("hidden")
    ]
    upvotes = paper.get("upvotes", entry.get("upvotes"))
    # The day it was on the daily page, like an arXiv listing's announcement day (publishedAt
    # is when the paper reached arXiv, often a week earlier); older entries lack it.
    when = paper.get("submittedOnDailyAt") or entry.get("publishedAt") or paper.get("publishedAt")
    abs_url, pdf_url = arxiv_links(pid, version)
    return PaperRecord(
        id=pid,
        version=version,
        title=title,
        abstract=normalise_ws(paper.get("summary") or entry.get("summary")),
        authors=authors,
        announced=entry_date(when, today),
        announce_type="hf",
        abs_url=abs_url,
        pdf_url=pdf_url,
        hf_url=f"https://huggingface.co/papers/{pid}",
        upvotes=upvotes,  # PaperRecord keeps whole counts only (not Infinity, 1e25 or "12")
        source=src.name,
        kind=src.kind,
    )
