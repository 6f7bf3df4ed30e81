"""arXiv listing feeds: the RSS 2.0 served by rss.arxiv.org since 2024, and the older RSS 1.0 (RDF).

The new format says what each item is in `arxiv:announce_type` (new, cross, replace,
replace-cross) and carries "Abstract:" inside the description. The old one encodes it in the title:
"Title. (arXiv:2106.00550v2 [math.GR] CROSS LISTED)".
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from digest.config import SourceConfig
from digest.errors import FeedError
from digest.ingest.parsed import Parsed, bozo_problem, entry_date, entry_problem, parse_feed
from digest.record import (
    PaperRecord,
    arxiv_id,
    arxiv_links,
    html_to_text,
    normalise_ws,
    split_authors,
)

_OLD_TITLE = re.compile(
    r"^(?P<title>.*?)\.?\s*\(arXiv:(?P<id>\S+?)\s*\[(?P<cat>[^\]]+)\]\s*(?P<flag>[A-Z ]*)\)\s*$",
    re.DOTALL,
)
_ABSTRACT = re.compile(r"\bAbstract:\s*", re.IGNORECASE)


def wanted(announce_type: str, src: SourceConfig) -> bool:
    if announce_type == "new":
        return True
    if announce_type == "cross":
        return src.include_cross_lists
    if announce_type == "replace":
        return src.include_replacements
    if announce_type == "replace-cross":
        return src.include_replacements and src.include_cross_lists
    return True


def in_categories(categories: list[str], src: SourceConfig) -> bool:
    """Whether the paper matches the source's category filter; "astro-ph" matches astro-ph.GA."""
    if not src.categories:
        return True
    for want in src.categories:
        for cat in categories:
            if cat == want or cat.split(".", 1)[0] == want:
                return True
    return False


def parse(content: bytes, src: SourceConfig, today: date) -> Parsed:
    d = parse_feed(content, src.name)
    title = d.feed.get("title", "")
    if title.startswith("Feed error for query"):
        # arXiv answers a bad archive name with an empty feed that explains itself.
        raise FeedError(f"{src.name}: arXiv says: {normalise_ws(d.feed.get('description', ''))}")
    out = Parsed()
    if problem := bozo_problem(d, src.name):
        out.problems.append(problem)
    listing_day = entry_date(d.feed.get("published") or d.feed.get("updated"), today)
    for i, e in enumerate(d.entries):
        try:
            rec = _entry(e, src, listing_day)
        except Exception as exc:  # one entry's fault is that entry's (see entry_problem)
            out.problems.append(entry_problem(src.name, i + 1, exc))
            continue
        if rec is None:
            continue
        if not wanted(rec.announce_type or "new", src):
            out.skipped[rec.announce_type or "?"] += 1
        elif not in_categories(rec.categories, src):
            out.skipped["other category"] += 1
        else:
            out.records.append(rec)
    return out


def _entry(e: Any, src: SourceConfig, listing_day: date) -> PaperRecord | None:
    raw_title = e.get("title", "")
    announce_type = e.get("arxiv_announce_type")
    categories = [t.get("term") for t in e.get("tags", []) if t.get("term")]
    ident = arxiv_id(e.get("id")) or arxiv_id(e.get("link"))
    description = e.get("summary", "")
    if announce_type is None and (m := _OLD_TITLE.match(raw_title)):
        # RSS 1.0: the kind of item, the id and the primary category live in the title.
        raw_title = m.group("title")
        flag = m.group("flag").strip().upper()
        announce_type = {"CROSS LISTED": "cross", "UPDATED": "replace"}.get(flag, "new")
        ident = arxiv_id(m.group("id")) or ident
        categories = categories or [m.group("cat").strip()]
        abstract = html_to_text(description)
        authors = split_authors(html_to_text(e.get("author", "")))
    else:
        # RSS 2.0: "arXiv:2411.17700v1 Announce Type: new \nAbstract: ..."; the text is verbatim.
        parts = _ABSTRACT.split(description, maxsplit=1)
        abstract = normalise_ws(parts[1] if len(parts) == 2 else description)
        authors = split_authors(e.get("author", ""))
    if ident is None:
        raise ValueError(f"no arXiv id in {e.get('id') or e.get('link')!r}")
    title = normalise_ws(raw_title)
    if not title:
        raise ValueError(f"{ident[0]}: no title")
    pid, version = ident
    abs_url, pdf_url = arxiv_links(pid, version)
    return PaperRecord(
        id=pid,
        version=version,
        title=title,
        abstract=abstract,
        authors=authors,
        categories=categories,
        announced=entry_date(e.get("published"), listing_day),
        announce_type=announce_type or "new",
        abs_url=abs_url,
        pdf_url=pdf_url,
        doi=e.get("arxiv_doi"),
        journal_ref=normalise_ws(e.get("arxiv_journal_reference")) or None,
        source=src.name,
        kind=src.kind,
    )
