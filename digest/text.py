"""Text as people read it and as it is matched: TeX accents resolved, LaTeX made readable,
diacritics folded for comparison.

arXiv writes accents in TeX (`G\\"unther`, `Schr\\"odinger`, `Przemys{\\l}aw`); readers write them
in Unicode (`Günther`) or leave them out (`Gunther`). Display resolves the TeX; matching folds
both sides to the same plain lower-case letters.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
import unicodedata
from functools import lru_cache

# TeX accent commands and the combining mark each one puts on the next letter.
_SYMBOL_ACCENTS = {
    '"': "\u0308",
    "'": "\u0301",
    "`": "\u0300",
    "^": "\u0302",
    "~": "\u0303",
    "=": "\u0304",
    ".": "\u0307",
}
_LETTER_ACCENTS = {
    "u": "\u0306",
    "v": "\u030c",
    "H": "\u030b",
    "c": "\u0327",
    "k": "\u0328",
    "r": "\u030a",
    "b": "\u0331",
    "d": "\u0323",
}
# Letters TeX spells as commands: `{\l}`, `\o`, `\aa`, `\ss`, `{\i}` (a dotless i under an accent).
_LETTERS = {
    "l": "ł",
    "L": "Ł",
    "o": "ø",
    "O": "Ø",
    "aa": "å",
    "AA": "Å",
    "ae": "æ",
    "AE": "Æ",
    "oe": "œ",
    "OE": "Œ",
    "ss": "ß",
    "i": "ı",
    "j": "ȷ",
}
_BASE = r"(?:\{\s*(\\[ij]|[A-Za-z])\s*\}|(\\[ij](?![A-Za-z])|[A-Za-z]))"
_SYMBOL_RX = re.compile(r"\\([\"'`^~=.])\s*" + _BASE)
# Letter-named accents need a brace or a space before their letter: `\v{c}`, `\c c`, not `\vec`.
_LETTER_RX = re.compile(
    r"\\([uvHckrbd])(?:\s*\{\s*(\\[ij]|[A-Za-z])\s*\}|\s+(\\[ij](?![A-Za-z])|[A-Za-z]))"
)
_LETTER_CMD_RX = re.compile(r"\\(aa|AA|ae|AE|oe|OE|ss|l|L|o|O|i|j)(?![A-Za-z])(?:\{\}|\s)?")
# Braces left around letters once the commands inside them are gone: `Schr{ö}dinger`.
# Only braces around a letter that was accented: `\\vec{x}` keeps its own.
_BRACED_WORD = re.compile(r"\{([^\W\d_]*[^\x00-\x7f][^\W\d_]*)\}")
# After folding, letters that have no decomposition into a base letter and a mark.
_FOLD_EXTRA = str.maketrans(
    {"ł": "l", "ø": "o", "æ": "ae", "œ": "oe", "ß": "ss", "ı": "i", "ȷ": "j", "đ": "d", "þ": "th"}
)
_LATEX_HINT = re.compile(r"[$\\]")
_BARE_PERCENT = re.compile(r"(?<!\\)%")
# Sub- and superscripts of digits, as chemical formulas and powers use them: `CeCo$_{0.5}$`
# reads `CeCo₀.₅`, `$10^{-3}$` reads `10⁻³`. Others are left to the LaTeX converter.
_SUB = str.maketrans("0123456789+-=()", "₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎")
_SUP = str.maketrans("0123456789+-=()n", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁿ")
_SCRIPT = re.compile(r"([_^])(?:\{\s*([0-9+\-=().,]+)\s*\}|([0-9]))")
# A tilde that is not an accent command is a non-breaking space in TeX; keep it as a tilde.
_BARE_TILDE = re.compile(r"(?<!\\)~")


def _base_letter(braced: str | None, bare: str | None) -> str:
    # `\\'{\\i}`: the dotless i exists only to carry the accent, which takes the dot's place.
    letter = braced or bare or ""
    return letter[1:] if letter.startswith("\\") else letter


def resolve_accents(text: str) -> str:
    """TeX accents and special letters as Unicode: `G\\"unther` → `Günther`; the rest untouched.

    Cheap (regular expressions, no parser), so it runs on every name and abstract.
    """
    if "\\" not in text:
        return text

    def symbol(m: re.Match[str]) -> str:
        return _base_letter(m.group(2), m.group(3)) + _SYMBOL_ACCENTS[m.group(1)]

    def letter(m: re.Match[str]) -> str:
        return _base_letter(m.group(2), m.group(3)) + _LETTER_ACCENTS[m.group(1)]

    out = _SYMBOL_RX.sub(symbol, text)
    out = _LETTER_RX.sub(letter, out)
    out = _LETTER_CMD_RX.sub(lambda m: _LETTERS[m.group(1)], out)
    out = _BRACED_WORD.sub(r"\1", unicodedata.normalize("NFC", out))
    return out


def plain_name(name: str) -> str:
    """An author name as a person writes it: accents resolved, stray braces gone."""
    if "\\" not in name and "{" not in name:
        return name
    return " ".join(resolve_accents(name).replace("{", "").replace("}", "").split())


def fold(text: str) -> str:
    """Text for comparison: TeX accents resolved, then diacritics dropped and case folded,
    so `Schrödinger`, `Schrodinger` and `Schr\\"odinger` are all `schrodinger`."""
    resolved = resolve_accents(text)
    if resolved.isascii():  # most terms and many abstracts: nothing to decompose or drop
        return resolved.casefold().translate(_FOLD_EXTRA)
    bare = unicodedata.normalize("NFKD", resolved).translate(_combining_marks())
    return bare.casefold().translate(_FOLD_EXTRA)


@lru_cache(maxsize=1)
def _combining_marks() -> dict[int, None]:
    """Every combining character, to be dropped by `str.translate` (five times quicker than
    testing each character in Python). Made on the first text that needs it: 0.1 s."""
    return {c: None for c in range(sys.maxunicode + 1) if unicodedata.combining(chr(c))}


def plain_latex(text: str) -> str:
    """LaTeX in a title or abstract as readable text: `$\\mu$-P` becomes `μ-P`.

    Only text that has LaTeX in it is converted. A bare % is escaped first, because LaTeX
    would read it as a comment and drop the rest of the line; a bare ~ is kept as a tilde.
    Text longer than any real abstract only has its accents resolved: pylatexenc takes a fifth
    of a second on 20,000 characters, and a feed's text is untrusted.
    """
    if not needs_latex(text):
        return text
    known = _KNOWN.get(text)
    if known is not None:
        return known
    return _plain_latex(text) if len(text) <= MAX_LATEX_CHARS else resolve_accents(text)


# arXiv caps an abstract at 1,920 characters; room to spare for other sources.
MAX_LATEX_CHARS = 5_000
# Bump when our own handling around the converter changes; the package's and pylatexenc's
# versions are in the key too, so readings kept in the store by an older converter are no
# longer found, and made again.
PLAIN_VERSION = 2  # 2: spaces in maths kept
# Readings converted before and kept in the store (digest.store.plaintext), source -> plain:
# a run's listing (digest.service.context.prepare starts each run afresh) or an ingest's.
_KNOWN: dict[str, str] = {}
_KNOWN_CHARS = [0]
KNOWN_MAX_CHARS = 50_000_000  # a bound for a long-lived `serve`, whatever the feeds send


def needs_latex(text: str) -> bool:
    return _LATEX_HINT.search(text) is not None


@lru_cache(maxsize=1)
def _converter() -> str:
    from importlib.metadata import version

    from digest import __version__

    return f"{PLAIN_VERSION}|{__version__}|{version('pylatexenc')}"


def latex_key(text: str) -> str:
    """The store's key for a text's plain reading: the converter's versions and the text."""
    return hashlib.sha256(f"{_converter()}\n{text}".encode()).hexdigest()[:40]


def know_plain(readings: dict[str, str]) -> None:
    """Take readings made before (source -> plain) so they are not converted again here."""
    size = sum(len(k) + len(v) for k, v in readings.items())
    if _KNOWN_CHARS[0] + size > KNOWN_MAX_CHARS:
        forget_plain()
    _KNOWN.update(readings)
    _KNOWN_CHARS[0] += size


def forget_plain() -> None:
    _KNOWN.clear()
    _KNOWN_CHARS[0] = 0


def _script(m: re.Match[str]) -> str:
    digits = m.group(2) or m.group(3)
    if m.group(1) == "^" and "n" not in digits and "." in digits:
        return m.group(0)  # no superscript dot: 10^{2.5} stays as LaTeX says it
    return digits.translate(_SUB if m.group(1) == "_" else _SUP)


@lru_cache(maxsize=16384)
def _plain_latex(text: str) -> str:
    from pylatexenc.latex2text import LatexNodes2Text

    # Its parse warnings name the author's LaTeX, not a problem of ours.
    logging.getLogger("pylatexenc").setLevel(logging.ERROR)

    text = _SCRIPT.sub(_script, text)
    source = _BARE_TILDE.sub(r"\\textasciitilde{}", _BARE_PERCENT.sub(r"\\%", text))
    try:
        # LaTeX's own rule (a control word eats the spaces after it) in text, not in maths,
        # where TeX spaces by itself and the source's spaces are all a reader gets:
        # `$\alpha < \beta$` read "α< β" and `$n \log n$` "n logn" under the strict rule.
        out = LatexNodes2Text(
            math_mode="text", strict_latex_spaces="except-in-equations"
        ).latex_to_text(source)
    except Exception:  # unparseable LaTeX: at least the accents read right
        return resolve_accents(text)
    if "%s" in out:  # a macro whose arguments were missing: pylatexenc's placeholder leaked
        return resolve_accents(text)
    return " ".join(out.split()) or text


_CONTROL_CHAR = re.compile(r"[\x00-\x1f\x7f]")


def has_control(value: str) -> bool:
    """Whether text holds a control character (a line break, tab, NUL, DEL...): never allowed in
    a header, an address, a name or a URL that reaches one."""
    return _CONTROL_CHAR.search(value) is not None


def masked(address: str) -> str:
    """`ada@example.org` as `a…@example.org`: enough for its owner to recognise, not enough
    for whoever a digest is forwarded to (or a web view shared with) to write to them."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}…@{domain}"


# Something that looks like a mail address (in a relay's reply, say).
_ADDRESS = re.compile(r"[^\s<>\"'@]+@[^\s<>\"'@]+")


def mask_addresses(text: str) -> str:
    """Every mail address in ``text`` as "…": for log lines quoting a relay's reply, which
    often names the recipient."""
    return _ADDRESS.sub("…", text)
