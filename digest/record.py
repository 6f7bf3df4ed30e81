"""The one paper record every source kind is normalised to, and the text helpers they share."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from datetime import date
from html.parser import HTMLParser

from digest.text import plain_name

# arXiv ids as they appear in links, guids and API ids: new style and old style, optional version.
_ARXIV_IN_TEXT = re.compile(
    r"(?:arxiv\.org/(?:abs|pdf|html)/|oai:arXiv\.org:|arXiv:|^)"
    r"(?P<id>\d{4}\.\d{4,5}|[a-z-]+(?:\.[A-Z]{2})?/\d{7})(?:v(?P<v>\d+))?",
    re.IGNORECASE,
)
_WS = re.compile(r"\s+")


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

    def __post_init__(self) -> None:
        # Every source kind comes through here: names are stored as people write them
        # (`Günther`, not arXiv's `G\\"unther`), so display and matching start from text.
        self.authors = [plain_name(a) for a in self.authors]


def normalise_ws(text: str | None) -> str:
    """Collapse runs of white space (arXiv hard-wraps abstracts); keep every other character."""
    return _WS.sub(" ", text or "").strip()


def arxiv_id(text: str | None) -> tuple[str, int | None] | None:
    """(id without version, version) from an arXiv link, guid or id; None if there is none."""
    if not text:
        return None
    m = _ARXIV_IN_TEXT.search(text.strip())
    if not m:
        return None
    v = m.group("v")
    return m.group("id"), (int(v) if v else None)


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
