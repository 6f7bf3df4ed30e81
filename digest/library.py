"""A reader's reference library (`papers_file`): the BibTeX, RIS or CSL-JSON file that Zotero,
Mendeley, JabRef, EndNote or Google Scholar export, read into example papers.

The file is the reader's, so it is untrusted: its size, its entry count and every text are
bounded before the parsers see them, an entry that cannot be used becomes one short skipped line
(never an exception), and only a file that cannot be read at all raises LibraryError, in one
line that the caller prefixes with the file's name.

May import the standard library, the two parsers, digest.record and digest.text only.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import bibtexparser
import rispy
from bibtexparser import model as bib

from digest.record import MAX_ABSTRACT, MAX_NAME, MAX_TITLE, canonical_arxiv_id, normalise_ws
from digest.record import arxiv_id as arxiv_id_in
from digest.text import fold, needs_latex, plain_latex, resolve_accents

MAX_BYTES = 20_000_000
MAX_ENTRIES = 10_000
# Past these the file is not a reference manager's export but something built to exhaust us:
# the parsers make one object per BibTeX field and per JSON object or list (bibtexparser takes
# 4 s and 290 MB for a million fields; json 0.5 GB for 6.7 million `{}`). Real libraries of
# 10,000 entries hold some 200,000 of either.
MAX_BIBTEX_FIELDS = 500_000
MAX_JSON_CONTAINERS = 1_000_000
MAX_KEY = 80  # a citation key or CSL id, only ever shown in messages
_PRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0 and C1 controls
FORMATS = "BibTeX (.bib), RIS (.ris) or CSL-JSON (.json)"


@dataclass(frozen=True, slots=True)
class LibraryEntry:
    key: str  # citation key, RIS ID or CSL id, else "entry N" (1-based): for messages
    arxiv_id: str | None  # without version: "2401.01234", "hep-th/9901001"
    title: str  # plain text, white space collapsed; "" only when there is an arXiv id
    abstract: str  # plain text, "" if none
    doi: str | None  # lower case, no https://doi.org/


@dataclass(frozen=True)
class Library:
    entries: list[LibraryEntry]  # usable: with an arXiv id or a title, each paper once
    skipped: list[str]  # one short line per entry not used, e.g. "entry 7 (smith2020): …"
    total: int  # entries in the file, read or not


class LibraryError(ValueError):
    """The whole file is unusable; str() is one line, without the file's name."""


class _Skip(Exception):
    """One entry is unusable; the message is its reason."""


# One entry still to be read: its key (may be "") and a reader given the key to store.
_Item = tuple[str, Callable[[str], LibraryEntry]]


def read_library(path: Path) -> Library:
    """The papers in a BibTeX, RIS or CSL-JSON file; LibraryError if it cannot be read at all."""
    text = _text_of(path)
    kind = _kind(path, text)
    items, total = {"bibtex": _bibtex, "ris": _ris, "json": _csl_json}[kind](text)
    if not total:
        raise LibraryError(f"no entries in it: is it really {FORMATS}?")
    return _gather(items, total)


def _text_of(path: Path) -> str:
    try:
        if (size := path.stat().st_size) > MAX_BYTES:
            raise LibraryError(f"larger than 20 MB ({size / 1e6:.0f} MB)")
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)  # bounded even for a pipe or a device
    except OSError as e:
        raise LibraryError(e.strerror or "cannot be read") from None
    if len(data) > MAX_BYTES:
        raise LibraryError("larger than 20 MB")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # EndNote and Excel on Windows
        raise LibraryError("UTF-16 text: save it as UTF-8")
    if b"\x00" in data:  # no text format has NUL bytes; saying "save it as UTF-8" would mislead
        raise LibraryError(f"a binary file, not {FORMATS}")
    try:
        text = data.decode("utf-8-sig")  # Windows tools often start with a BOM
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise LibraryError(f"not UTF-8 text (line {line}): save it as UTF-8") from None
    if not text.strip():
        raise LibraryError("the file is empty")
    return text.replace("\r\n", "\n").replace("\r", "\n")


# A line that starts a BibTeX block (`@article{`, `@String(`) or a RIS record.
_BLOCK = re.compile(r"^[ \t]*@[ \t]*(\w*)[ \t]*[{(]", re.M)
_RIS_START = re.compile(r"^TY  -", re.M)


def _kind(path: Path, text: str) -> str:
    """The format: from the extension, else from the content."""
    ext = path.suffix.lower()
    for kind, exts in (("bibtex", (".bib", ".bibtex")), ("ris", (".ris",))):
        if ext in exts:
            return kind
    if ext in (".json", ".csljson") or text.lstrip()[:1] in ("[", "{"):
        return "json"
    if _RIS_START.search(text):
        return "ris"
    if _BLOCK.search(text):
        return "bibtex"
    raise LibraryError(f"not {FORMATS}")


def _gather(items: list[_Item], total: int) -> Library:
    """Read each item; keep each paper once; say why each other one was left out."""
    entries: list[LibraryEntry] = []
    skipped: list[str] = []
    seen: dict[str, tuple[int, str | None]] = {}  # identity -> (entry number, its arXiv id)
    for n, (raw_key, read) in enumerate(items[:MAX_ENTRIES], 1):
        # The file's own text, going into messages on the operator's terminal: no control
        # character (an escape sequence in a citation key would reach the terminal).
        key = _PRINTABLE.sub("", normalise_ws(raw_key))[:MAX_KEY]
        label = f"entry {n} ({key})" if key else f"entry {n}"
        try:
            entry = read(key or f"entry {n}")
        except _Skip as e:
            skipped.append(f"{label}: {e}")
            continue
        first = _first_seen(entry, seen)
        if first is not None:
            skipped.append(f"{label}: same paper as entry {first}")
            continue
        for mark in _identities(entry):
            seen.setdefault(mark, (n, entry.arxiv_id))
        entries.append(entry)
    if total > MAX_ENTRIES:
        skipped.append(
            f"{total - MAX_ENTRIES:,} entries past the first {MAX_ENTRIES:,} were not read"
        )
    return Library(entries, skipped, total)


def _identities(entry: LibraryEntry) -> list[str]:
    marks = [f"arxiv:{entry.arxiv_id}"] if entry.arxiv_id else []
    marks += [f"doi:{entry.doi}"] if entry.doi else []
    words = re.findall(r"\w+", fold(entry.title))
    return marks + ([f"title:{' '.join(words)}"] if words else [])


def _first_seen(entry: LibraryEntry, seen: dict[str, tuple[int, str | None]]) -> int | None:
    for mark in _identities(entry):
        if mark not in seen:
            continue
        n, other_id = seen[mark]
        # Two arXiv papers that share a title ("Deep learning") are still two papers.
        if mark.startswith("title:") and entry.arxiv_id and other_id not in (None, entry.arxiv_id):
            continue
        return n
    return None


def _entry(key: str, arxiv: str | None, title: str, abstract: str, doi: str) -> LibraryEntry:
    if not arxiv and not title:
        raise _Skip("no title and no arXiv id")
    return LibraryEntry(key, arxiv, title, abstract, _doi(doi))


# --- arXiv ids and DOIs -----------------------------------------------------------------------

# Where an id is written on purpose: an arXiv link, or `arXiv:` (Scholar's `arXiv preprint
# arXiv:2401.01234`, Zotero's note `arXiv: 1706.03762 [cs]`). A bare number in a note is not.
_MARKED = re.compile(r"arxiv\.org/(?:abs|pdf|html)/|\barxiv:", re.I)
_ARXIV_DOI = re.compile(r"10\.48550/arxiv\.([^\s,;{}\"<>]+)", re.I)
_DOI = re.compile(r"\b10\.\d{4,9}/[^\s\"<>{}]+")


def _arxiv(eprint: str, dois: Iterable[str], marked: Iterable[str]) -> str | None:
    """The first id found: a BibTeX eprint, then an arXiv DOI, then a marked id in a text."""
    if eprint and (pid := canonical_arxiv_id(eprint)):
        return pid
    for text in dois:
        for m in _ARXIV_DOI.finditer(text):
            if pid := canonical_arxiv_id(m.group(1).rstrip(".)")):
                return pid
    for text in marked:
        for m in _MARKED.finditer(text):
            found = arxiv_id_in(text[m.end() :].lstrip())
            if found and (pid := canonical_arxiv_id(found[0])):
                return pid
    return None


def _doi(text: str) -> str | None:
    m = _DOI.search(text)
    return m.group(0).rstrip(".,;").lower()[:MAX_NAME] if m else None


# --- BibTeX -----------------------------------------------------------------------------------

_NOT_ENTRIES = ("comment", "string", "preamble")
_ESCAPED = re.compile(r"\\([%&#_])")
_TIE = re.compile(r"(?<!\\)~")  # TeX's non-breaking space; `\~n` is an accent
# A command left after conversion: plain_latex falls back to accents alone on TeX it cannot
# parse (nesting deeper than Python's recursion limit, say).
_LEFT_COMMAND = re.compile(r"\\[A-Za-z]+\*?")


def _bibtex(text: str) -> tuple[list[_Item], int]:
    text, unread = _first_blocks(text)
    if text.count("=") > MAX_BIBTEX_FIELDS:
        raise LibraryError(f"more than {MAX_BIBTEX_FIELDS:,} fields: not a reference library")
    # Its warnings name faults of the reader's file, which come back as skipped lines instead.
    logging.getLogger("bibtexparser").setLevel(logging.CRITICAL)
    try:
        # The documented entry point, re-exported without __all__ (so mypy's strict mode asks).
        parsed = bibtexparser.parse_string(text)  # type: ignore[attr-defined]
    except Exception as e:  # the parser's own faults ("please report this bug"): no partial read
        raise LibraryError(f"bibtexparser failed on it ({type(e).__name__})") from None
    items: list[_Item] = []
    for block in parsed.blocks:
        if isinstance(block, bib.Entry):
            items.append((block.key, partial(_from_bibtex, _bib_fields(block, enclosed=False))))
        elif isinstance(block, bib.ParsingFailedBlock):
            inner = block.ignore_error_block
            if isinstance(inner, bib.Entry):
                # A duplicate key or field: the entry itself is whole, only not post-processed.
                items.append((inner.key, partial(_from_bibtex, _bib_fields(inner, enclosed=True))))
            elif not re.match(r"@\s*(comment|string|preamble)\b", block.raw or "", re.I):
                items.append(_malformed(block))
    return items, len(items) + unread


def _first_blocks(text: str) -> tuple[str, int]:
    """The text up to the 10,001st entry (or other block) and how many entries lie past it:
    bibtexparser holds a whole file at once, 7 GB for 20 MB of `@a{` lines."""
    entries = others = unread = 0
    cut = len(text)
    for m in _BLOCK.finditer(text):
        is_entry = m.group(1).lower() not in _NOT_ENTRIES
        if cut < len(text):
            unread += is_entry
            continue
        entries += is_entry
        others += not is_entry
        if entries > MAX_ENTRIES or others > MAX_ENTRIES:
            cut, unread = m.start(), int(is_entry)
    return text[:cut], unread


def _malformed(block: bib.ParsingFailedBlock) -> _Item:
    key = re.match(r"@\w*[ \t]*[{(][ \t]*([^,\s{}()@]*)", block.raw or "")
    reason = getattr(block.error, "abort_reason", "")
    # The splitter's reasons, said for a person. Most often a brace or quote never closed: it
    # then stops at the next line starting with @, so the entries after it are kept.
    why = next((say for cue, say in _REASONS.items() if cue in reason), "not key = {value} pairs")
    line = f" at line {block.start_line + 1}" if block.start_line is not None else ""
    return (key.group(1) if key else "", partial(_fail, f"malformed BibTeX{line} ({why})"))


_REASONS = {
    "still looking": "a brace or quote left open",
    "end of file": "a brace or quote left open",
    "comma after entry key": "no comma after its key",
}


def _fail(reason: str, key: str) -> LibraryEntry:
    raise _Skip(reason)


def _bib_fields(entry: bib.Entry, enclosed: bool) -> dict[str, str]:
    """Fields by lower-case name, the first of a repeated one; `enclosed` for an entry the
    parser did not strip of its outer {} or "" (one in a failed block)."""
    fields: dict[str, str] = {}
    for field in entry.fields:
        value = field.value
        if isinstance(value, str) and (name := field.key.strip().lower()) not in fields:
            if enclosed and value[:1] + value[-1:] in ("{}", '""'):
                value = value[1:-1]
            fields[name] = value
    return fields


def _from_bibtex(fields: dict[str, str], key: str) -> LibraryEntry:
    get = fields.get
    prefix = (get("archiveprefix") or get("eprinttype") or "arxiv").strip().lower()
    # Mendeley writes the id alone in `arxivId` too.
    eprint = (get("eprint", "") if prefix == "arxiv" else "") or get("arxivid", "")
    links = [get(f, "") for f in ("url", "howpublished", "note", "doi")]
    texts = [*links, eprint, *(get(f, "") for f in ("journal", "journaltitle", "number"))]
    pid = _arxiv(eprint, links, texts)
    title = _tex(get("title", ""), MAX_TITLE)
    return _entry(key, pid, title, _tex(get("abstract", ""), MAX_ABSTRACT), get("doi", ""))


def _tex(value: str, limit: int) -> str:
    """TeX as plain text: accents, escapes, maths and protective braces resolved.

    pylatexenc costs 0.4-7 ms a text (47 s for 10,000 abstracts), so it only sees text that
    still has TeX in it once accents and Zotero's `\\%` `\\&` escapes are read cheaply."""
    text = resolve_accents(_TIE.sub(" ", value[: 2 * limit]))
    cheap = _ESCAPED.sub(r"\1", text)
    out = _LEFT_COMMAND.sub("", plain_latex(text)) if needs_latex(cheap) else cheap
    out = out.replace("{", "").replace("}", "").replace("---", "—").replace("--", "–")
    return normalise_ws(out)[:limit]


# --- RIS --------------------------------------------------------------------------------------

_RIS_TAG = re.compile(r"[A-Z][A-Z0-9]  -")  # rispy's own test for a tagged line


def _ris(text: str) -> tuple[list[_Item], int]:
    """One item per `TY  -` line, each read by rispy alone: rispy silently merges a record
    whose `ER  -` is missing into the next, and drops the last one if it has none."""
    starts: list[int] = []
    total = 0
    for m in _RIS_START.finditer(text):
        total += 1
        if total <= MAX_ENTRIES + 1:  # the one past the last read ends it
            starts.append(m.start())
    items: list[_Item] = []
    ends = [*starts[1:], len(text)] if starts else []
    for start, end in list(zip(starts, ends, strict=True))[:MAX_ENTRIES]:
        record = text[start:end]
        found = re.search(r"^ID  - (.*)$", record, re.M)
        items.append((found.group(1).strip() if found else "", partial(_from_ris, record)))
    return items, total


def _from_ris(record: str, key: str) -> LibraryEntry:
    try:
        fields = rispy.loads(_unwrapped(record) + "\nER  - \n")[0]
    except Exception as e:  # a third-party parser on untrusted text: that record, not the file
        raise _Skip(f"not readable as RIS ({type(e).__name__})") from None

    def texts(*names: str) -> list[str]:
        out: list[str] = []
        for name in names:
            value = fields.get(name)
            values = [value] if isinstance(value, str) else value or []
            out += [v for v in values if isinstance(v, str)]
        return out

    unknown = fields.get("unknown_tag") or {}  # tags rispy has no name for, LK among them
    links = [*texts("urls", "file_attachments1", "file_attachments2"), *unknown.get("LK", [])]
    notes = texts("notes", "journal_name", "alternate_title3", "secondary_title")
    pid = _arxiv("", texts("doi", "urls"), [*links, *notes])
    title = _clean(next(iter(texts("title", "primary_title")), ""), MAX_TITLE)
    abstract = _clean(next(iter(texts("abstract", "notes_abstract")), ""), MAX_ABSTRACT)
    return _entry(key, pid, title, abstract, next(iter(texts("doi")), ""))


def _unwrapped(record: str) -> str:
    """Continuation lines joined onto their tag's line: rispy joins them one at a time, which
    is quadratic (a 20 MB abstract of one-word lines would take hours)."""
    lines: list[list[str]] = []
    for line in record.split("\n"):
        if _RIS_TAG.match(line) or not lines:
            lines.append([line])
        else:
            lines[-1].append(line.strip())
    return "\n".join(" ".join(parts) for parts in lines)


def _clean(value: str, limit: int) -> str:
    return normalise_ws(value[: 2 * limit])[:limit]


# --- CSL-JSON ---------------------------------------------------------------------------------

# The rich text Zotero and citeproc put in CSL titles. Only these tags: a title's maths
# (`$1<p<2$`) would look like a tag to an HTML parser.
_CSL_MARKUP = re.compile(r"</?(?:i|b|sub|sup|sc|span)\b[^<>]*>", re.I)


def _csl_json(text: str) -> tuple[list[_Item], int]:
    if text.count("{") + text.count("[") > MAX_JSON_CONTAINERS:
        raise LibraryError(f"more than {MAX_JSON_CONTAINERS:,} JSON objects and lists")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise LibraryError(f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise LibraryError("not usable JSON (nested too deeply)") from None
    except ValueError as e:  # a number of 5,000 digits
        raise LibraryError(f"not usable JSON ({_one_line(e)})") from None
    if isinstance(doc, dict) and isinstance(doc.get("items"), list):
        doc = doc["items"]
    if not isinstance(doc, list):
        raise LibraryError(f"CSL-JSON is a list of items; this is {_a(doc)}")
    items: list[_Item] = []
    for item in doc[:MAX_ENTRIES]:
        pid = item.get("id") if isinstance(item, dict) else None
        key = str(pid) if isinstance(pid, str | int) and not isinstance(pid, bool) else ""
        items.append((key, partial(_from_csl, item)))
    return items, len(doc)


def _from_csl(item: object, key: str) -> LibraryEntry:
    if not isinstance(item, dict):
        raise _Skip(f"{_a(item)}, not an entry")

    def text(name: str) -> str:
        value = item.get(name)
        if value is None or isinstance(value, str):
            return value or ""
        raise _Skip(f"{name} is {_a(value)}, not text")

    title = _clean(_CSL_MARKUP.sub("", text("title")), MAX_TITLE)
    abstract = _clean(_CSL_MARKUP.sub("", text("abstract")), MAX_ABSTRACT)
    where = " ".join(text(f) for f in ("archive", "publisher", "container-title")).lower()
    number = item.get("number")  # CSL allows a number here (an issue), which is never an id
    eprint = number if isinstance(number, str) and "arxiv" in where else ""
    links = [text("URL"), text("note")]
    pid = _arxiv(eprint, [text("DOI"), *links], [*links, text("container-title")])
    return _entry(key, pid, title, abstract, text("DOI"))


def _a(value: object) -> str:
    """What a JSON value is, for a message."""
    kinds = {bool: "true or false", int: "a number", float: "a number", list: "a list"}
    return "null" if value is None else {**kinds, dict: "an object"}.get(type(value), "text")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200] or type(e).__name__
