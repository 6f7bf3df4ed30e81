"""The day's listing as every subscriber's ranking reads it, computed once per run.

Ranking 100,000 readers against 1,500 papers cannot run each reader's keywords, excludes,
authors and categories over every paper in Python. Here each paper's folded text, projected
row, upvotes, categories and author names are laid out once; a phrase becomes a boolean mask
over the listing the first time any reader asks for it (readers share most of their phrases),
and categories and followed authors are looked up in per-run maps. A reader's ranking is then a
handful of array operations over their candidates (digest.rank.ranker), and only their top
picks get Python-level work (the reasons).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

import numpy as np
from scipy import sparse

from digest.rank.explain import shown_terms
from digest.rank.features import RankPaper, Vocabulary
from digest.rank.match import FollowedAuthors, author_key, matchable, phrase, same_given
from digest.text import fold

P = TypeVar("P", bound=RankPaper)
# Words as `phrase` bounds them: runs of word characters and hyphens.
_WORDS = re.compile(r"[\w-]+")


class Listing(Generic[P]):
    def __init__(self, papers: Sequence[P], vocab: Vocabulary) -> None:
        self.papers = list(papers)
        self.position = {p.id: i for i, p in enumerate(self.papers)}
        self.folded = [matchable(p) for p in self.papers]
        self.dense = vocab.dense_rows(self.papers)
        # math.log1p per paper, as the single-reader path always computed it (np.log1p may
        # differ in the last bit, and the batched and single orders must agree exactly).
        self.votes = np.array([math.log1p(max(p.upvotes or 0, 0)) for p in self.papers])
        self._phrases: dict[str, np.ndarray] = {}
        self._words: dict[str, list[int]] | None = None  # word -> papers, made when first needed
        self._vocab = vocab
        self._terms: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._term_rows: sparse.csr_matrix | None = None
        # A category and its archive ("cs.CL" and "cs") both lead to the paper.
        self._categories: dict[str, list[int]] = {}
        for i, p in enumerate(self.papers):
            for c in p.categories:
                for key in {c, c.split(".")[0]}:
                    self._categories.setdefault(key, []).append(i)
        self._surnames: dict[str, list[tuple[int, tuple[str, ...]]]] = {}
        for i, p in enumerate(self.papers):
            for name in p.authors:
                last, given = author_key(name)
                if last:
                    self._surnames.setdefault(last, []).append((i, given))

    @property
    def term_rows(self) -> sparse.csr_matrix:
        """The papers' term rows, for models with a sparse part; made when first asked."""
        if self._term_rows is None:
            self._term_rows = self._vocab.sparse_rows(self.papers)
        return self._term_rows

    def positions(self, papers: Iterable[RankPaper]) -> np.ndarray | None:
        """Where these papers sit in the listing; None if one of them is not in it. The very
        objects laid out, not only the same ids: a caller ranking changed copies (other
        upvotes, say) gets them laid out afresh."""
        out = []
        for p in papers:
            i = self.position.get(p.id)
            if i is None or self.papers[i] is not p:
                return None
            out.append(i)
        return np.array(out, dtype=np.intp)

    def matches(self, term: str) -> np.ndarray:
        """Papers whose folded title and abstract hold the phrase whole (digest.rank.match)."""
        found = self._phrases.get(term)
        if found is None:
            rx = phrase(term)
            found = np.zeros(len(self.folded), dtype=bool)
            for i in self._holding_words(fold(term)):
                found[i] = rx.search(self.folded[i]) is not None
            self._phrases[term] = found
        return found

    def _holding_words(self, needle: str) -> Iterable[int]:
        """The papers that hold every word of the needle as a word of their own: a superset of
        where the whole phrase can stand, since `phrase` allows no [\\w-] character on either
        side of it (so each word of a match is a whole word of the text). The pattern then runs
        on these few texts only, instead of on the whole listing for each new phrase."""
        words = set(_WORDS.findall(needle))
        if not words:
            return range(len(self.folded))
        if self._words is None:
            self._words = {}
            for i, text in enumerate(self.folded):
                for w in set(_WORDS.findall(text)):
                    self._words.setdefault(w, []).append(i)
        postings = sorted((self._words.get(w, []) for w in words), key=len)
        found = set(postings[0])
        for more in postings[1:]:
            found.intersection_update(more)
        return sorted(found)

    def terms(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The terms a reason may name for paper i (digest.rank.explain.shown_terms), worked
        out the first time a reader's pick needs them."""
        found = self._terms.get(i)
        if found is None:
            found = self._terms[i] = shown_terms(self._vocab, self.papers[i])
        return found

    def in_categories(self, categories: Iterable[str]) -> np.ndarray:
        mask = np.zeros(len(self.papers), dtype=bool)
        for c in categories:
            mask[self._categories.get(c, [])] = True
        return mask

    def by_authors(self, followed: FollowedAuthors) -> np.ndarray:
        mask = np.zeros(len(self.papers), dtype=bool)
        for last, names in followed.by_surname.items():
            for i, given in self._surnames.get(last, ()):
                if not mask[i] and any(same_given(f, given) for f, _ in names):
                    mask[i] = True
        return mask
