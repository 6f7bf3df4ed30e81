"""The one paper record every source kind is normalised to, and the text helpers they share."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from datetime import date
from html.parser import HTMLParser
from typing import TypeVar

from digest.text import plain_name

# arXiv ids as they appear in links, guids and API ids: new style and old style, optional version.
_ARXIV_IN_TEXT = re.compile(
    r"(?:arxiv\.org/(?:abs|pdf|html)/|oai:arXiv\.org:|arXiv:|^)"
    r"(?P<id>\d{4}\.\d{4,5}|[a-z-]+(?:\.[A-Z]{2})?/\d{7})(?:v(?P<v>\d+))?",
    re.IGNORECASE,
)
_WS = re.compile(r"\s+")
_T = TypeVar("_T")

# Papers stored as context for the ranker, never part of a day's listing, by announce_type:
# example papers looked up by id ("api", dated by publication, of any age) and the corpus that
# `digest ingest --backfill` fetches ("backfill", the recent papers of a listing source's
# categories, counted for that source). Two names, because the corpus window treats them apart:
# a source's backfill is its corpus before its first listing (digest.service.context.corpus_of).
LOOKED_UP = "api"
BACKFILL = "backfill"
NOT_LISTED = (LOOKED_UP, BACKFILL)


@dataclass
class PaperRecord:
    id: str
    title: str
    source: str
    kind: str
    announced: date
    abstract: str = ""
    version: int | None = None
    authors: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    announce_type: str | None = None
    abs_url: str | None = None
    pdf_url: str | None = None
    hf_url: str | None = None
    doi: str | None = None
    journal_ref: str | None = None
    upvotes: int | None = None
    # Values dropped on the way in (wrong type, out of range, too long): reported, not stored.
    dropped: list[str] = field(default_factory=list, compare=False)

    def __post_init__(self) -> None:
        """Every source kind comes through here, so here feeds' values are made safe to store:
        wrong types dropped, sizes bounded the same for SQLite and PostgreSQL (which also
        refuses NUL characters). A value that cannot be fixed raises ValueError, which the
        parsers report as that entry's problem."""
        self.id = _text(self.id, "id")
        if not self.id:
            raise ValueError("no id")
        if len(self.id) > MAX_ID:
            raise ValueError(f"id longer than {MAX_ID} characters ({self.id[:60]}…)")
        self.title = _text(self.title, "title")[:MAX_TITLE]
        if not self.title:
            raise ValueError(f"{self.id}: no title")
        self.abstract = _text(self.abstract, "abstract")[:MAX_ABSTRACT]
        if not isinstance(self.announced, date):
            raise ValueError(f"{self.id}: no date")
        self.version = self._keep("version", _count(self.version, 1, 10_000), self.version)
        self.upvotes = self._keep("upvotes", _count(self.upvotes, 0, 2**31 - 1), self.upvotes)
        # Names are stored as people write them (`Günther`, not arXiv's `G\\"unther`), so
        # display and matching start from text.
        self.authors = [
            plain_name(a)[:MAX_NAME] for a in _strings(self.authors)[:MAX_AUTHORS] if a.strip()
        ]
        self.categories = [c[:MAX_NAME] for c in _strings(self.categories)[:MAX_CATEGORIES]]
        self.announce_type = self._keep(
            "type", _optional(self.announce_type, 32), self.announce_type
        )
        self.abs_url = self._keep("link", _optional(self.abs_url, MAX_URL), self.abs_url)
        self.pdf_url = self._keep("pdf link", _optional(self.pdf_url, MAX_URL), self.pdf_url)
        self.hf_url = self._keep("link", _optional(self.hf_url, MAX_URL), self.hf_url)
        self.doi = self._keep("doi", _optional(self.doi, MAX_NAME), self.doi)
        self.journal_ref = self._keep(
            "journal_ref", _optional(self.journal_ref, MAX_NAME), self.journal_ref
        )

    def _keep(self, what: str, kept: _T, given: object) -> _T:
        """``kept`` (the cleaned value); a value given but not kept is noted in `dropped`."""
        if kept is None and given is not None and given != "":
            shown = repr(given) if len(repr(given)) <= 40 else f"{repr(given)[:39]}…"
            self.dropped.append(f"{what} {shown} left out")
        return kept


# Bounds on what one entry may store. Paper.id is a 512-character column; the rest is far beyond
# any real paper (the longest arXiv abstract is under 2,000 characters, author lists under 3,000).
MAX_ID = 512
MAX_TITLE = 1_000
MAX_ABSTRACT = 20_000
MAX_AUTHORS = 5_000
MAX_CATEGORIES = 50
MAX_NAME = 300
MAX_URL = 2_048
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _text(value: object, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{what} is a {type(value).__name__}, not text")
    return _CONTROL.sub("", value)


def _optional(value: object, limit: int) -> str | None:
    """Text or nothing: a value of the wrong type, or one too long to be real, is dropped."""
    if not isinstance(value, str):
        return None
    value = _CONTROL.sub("", value).strip()
    return value if value and len(value) <= limit else None


def _strings(values: object) -> list[str]:
    if not isinstance(values, list | tuple):
        return []
    return [_CONTROL.sub("", v) for v in values if isinstance(v, str)]


def _count(value: object, low: int, high: int) -> int | None:
    """A whole number in [low, high], or None: `Infinity`, 1e25, -3 and "12" are not counts."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value) if low <= value <= high else None


def normalise_ws(text: object) -> str:
    """Collapse runs of white space (arXiv hard-wraps abstracts); keep every other character.
    Anything but text (a feed's number or list) is no text."""
    return _WS.sub(" ", text).strip() if isinstance(text, str) else ""


def arxiv_id(text: str | None) -> tuple[str, int | None] | None:
    """(id without version, version) from an arXiv link, guid or id; None if there is none."""
    if not text:
        return None
    m = _ARXIV_IN_TEXT.search(text.strip())
    if not m:
        return None
    v = m.group("v")
    return m.group("id"), (int(v) if v else None)


# A whole arXiv id as a person writes it: new style (2401.01234) or old style (hep-th/9901001),
# optionally with its version.
ARXIV_ID = re.compile(r"^(\d{4}\.\d{4,5}|[a-z-]+(\.[A-Z]{2})?/\d{7})(v\d+)?$")


def canonical_arxiv_id(text: str) -> str | None:
    """The id without `arXiv:` and without its version, if ``text`` is a whole arXiv id; the one
    normalisation for ids people type (profiles, `digest feedback`)."""
    pid = text.strip()
    if pid.lower().startswith("arxiv:"):
        pid = pid[len("arxiv:") :]
    if not ARXIV_ID.match(pid):
        return None
    return re.sub(r"v\d+$", "", pid)


def arxiv_links(pid: str, version: int | None = None) -> tuple[str, str]:
    suffix = f"v{version}" if version else ""
    return f"https://arxiv.org/abs/{pid}", f"https://arxiv.org/pdf/{pid}{suffix}"


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in ("p", "br", "div", "li"):
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1
        elif tag in ("p", "div", "li"):
            # `<p>…doi:10.1038/x</p>We decode…` (Nature's feeds): the end of a block is a
            # break between words too.
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Plain text of an HTML fragment from a generic feed (tags dropped, entities decoded).

    Only for feeds whose content really is HTML: arXiv text is taken verbatim, since maths such as
    `$1<p<2$` looks like a tag to any HTML parser.
    """
    if "<" not in markup:
        return normalise_ws(html.unescape(markup))
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    return normalise_ws("".join(parser.parts))


def split_authors(text: str) -> list[str]:
    """Author names from arXiv's one comma-separated string, affiliations dropped.

    Commas inside parentheses belong to affiliations ("Ada (MIT, Cambridge), Bob"), so the
    split only happens at depth zero.
    """
    names: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            names.append("".join(current))
            current = []
            continue
        if depth == 0 and ch != ")":
            current.append(ch)
    names.append("".join(current))
    out = []
    for n in names:
        n = normalise_ws(n)
        if n.lower().startswith("and "):
            n = n[4:]
        if n:
            out.append(n)
    return out
