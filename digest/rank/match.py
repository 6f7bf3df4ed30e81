"""The profile's explicit rules as matches on text: keywords, excludes and followed authors.

Everything is compared folded (digest.text.fold): TeX accents resolved, diacritics dropped, case
folded, on both sides. So `authors = ["Martin Günther"]`, `"M. Gunther"` or `"Günther, Martin"`
all follow arXiv's `Martin G\\"unther`, and the keyword `Schrödinger` finds `Schr\\"odinger`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from digest.rank.features import RankPaper, paper_text
from digest.text import fold, plain_name


@lru_cache(maxsize=65536)
def phrase(term: str) -> re.Pattern[str]:
    """A whole-phrase pattern over folded text (see `matchable`): never inside a longer word."""
    return re.compile(r"(?<![\w-])" + re.escape(fold(term)) + r"(?![\w-])")


def matchable(paper: RankPaper) -> str:
    """Title and abstract as keywords and excludes are matched against: TeX accents resolved,
    diacritics and case folded, so `Schrödinger` finds arXiv's `Schr\\"odinger`."""
    return fold(paper_text(paper))


@lru_cache(maxsize=65536)
def author_key(name: str) -> tuple[str, tuple[str, ...]]:
    """(surname, given names or initials), folded: "Martin Günther", "M. Gunther",
    "Günther, Martin" and arXiv's `Martin G\\"unther` all give ("gunther", ("martin",)) or
    ("gunther", ("m",)); "Jean-Pierre" and "J.-P." give two given parts each."""
    name = fold(plain_name(name)).strip()
    if "," in name:
        last, first = (x.strip() for x in name.split(",", 1))
    else:
        parts = name.replace(".", ". ").split()
        last, first = (parts[-1], " ".join(parts[:-1])) if parts else ("", "")
    return last, tuple(re.split(r"[\s.\-]+", first.strip(" .-"))) if first.strip(" .-") else ()


def same_given(followed: tuple[str, ...], author: tuple[str, ...]) -> bool:
    """A followed name's given parts against an author's, in order: each equal, or one of the two
    an initial of the other. A followed surname alone follows everyone of that surname; given
    parts the reader wrote must all be there ("J. C. Martínez" is not "Jessica Martinez"), while
    a middle name the reader left out may be ("Martin Günther" follows "Martin K. Günther")."""
    if len(followed) > len(author):
        return False
    for f, a in zip(followed, author, strict=False):
        if f != a and not ((len(f) == 1 or len(a) == 1) and f[0] == a[0]):
            return False
    return True


class FollowedAuthors:
    """A profile's `authors`, looked up by folded surname."""

    def __init__(self, names: Sequence[str]) -> None:
        self.by_surname: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        for name in names:
            last, given = author_key(name)
            if last:
                # Shown in the reason as the reader wrote it, TeX accents resolved.
                self.by_surname.setdefault(last, []).append((given, plain_name(name)))

    def hits(self, authors: Sequence[str]) -> list[str]:
        """The followed names (as the profile writes them) among a paper's authors."""
        out: list[str] = []
        if not self.by_surname:
            return out
        for author in authors:
            last, given = author_key(author)
            for followed_given, name in self.by_surname.get(last, ()):
                if same_given(followed_given, given) and name not in out:
                    out.append(name)
        return out
