"""Any RSS or Atom feed (a journal's table of contents, a lab blog, bioRxiv, ...).

The id is the arXiv id when the entry links to arXiv, else its DOI, else its link or guid, so a
paper that also arrives from arXiv is one record. Content is HTML by nature here: it is reduced
to text, and the templates escape whatever remains.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from digest.config import SourceConfig
from digest.ingest.parsed import Parsed, bozo_problem, entry_date, entry_problem, parse_feed
from digest.record import PaperRecord, arxiv_id, arxiv_links, html_to_text, split_authors


def parse(content: bytes, src: SourceConfig, today: date) -> Parsed:
    d = parse_feed(content, src.name)
    out = Parsed()
    if problem := bozo_problem(d, src.name):
        out.problems.append(problem)
    for i, e in enumerate(d.entries):
        try:
            out.records.append(_entry(e, src, today))
        except Exception as exc:  # one entry's fault is that entry's (see entry_problem)
            out.problems.append(entry_problem(src.name, i + 1, exc))
    return out


def _text(e: Any, key: str) -> str:
    detail = e.get(f"{key}_detail") or {}
    value = e.get(key) or ""
    if detail.get("type", "text/plain") == "text/plain":
        return html_to_text(value) if "&" in value else " ".join(value.split())
    return html_to_text(value)


def _entry(e: Any, src: SourceConfig, today: date) -> PaperRecord:
    link = e.get("link") or ""
    title = _text(e, "title")
    if not title:
        raise ValueError("no title")
    doi = e.get("prism_doi") or e.get("dc_identifier") or None
    if doi and doi.lower().startswith("doi:"):
        doi = doi[4:]
    ident = arxiv_id(link) if "arxiv.org" in link else None
    version: int | None = None
    abs_url = link if link.startswith(("https://", "http://")) else None
    pdf_url = None
    if ident:
        pid, version = ident
        abs_url, pdf_url = arxiv_links(pid, version)
    elif doi:
        pid = f"doi:{doi.lower()}"
    elif link or e.get("id"):
        pid = link or e.get("id")
    else:
        raise ValueError(f"{title[:60]!r}: no link, id or DOI")
    authors = [a.get("name", "") for a in e.get("authors", []) if a.get("name")]
    if len(authors) == 1 and "," in authors[0]:
        authors = split_authors(authors[0])
    content = (e.get("content") or [{}])[0].get("value") if e.get("content") else None
    abstract = html_to_text(content) if content else _text(e, "summary")
    return PaperRecord(
        id=pid,
        version=version,
        title=title,
        abstract=abstract,
        authors=[html_to_text(a) for a in authors],
        categories=[t["term"] for t in e.get("tags", []) if t.get("term")],
        announced=entry_date(e.get("published") or e.get("updated"), today),
        announce_type="rss",
        abs_url=abs_url,
        pdf_url=pdf_url,
        doi=doi,
        source=src.name,
        kind=src.kind,
    )
