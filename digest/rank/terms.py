"""Words and two-word phrases of paper texts, counted for the vocabulary.

The same terms scikit-learn's `CountVectorizer(ngram_range=(1, 2), stop_words="english")` makes
(lower-cased tokens of two or more characters starting with a letter, English stop words
dropped, then every word and every pair of neighbouring kept words), and the same pruning by
document frequency; tests/test_vocabulary.py holds the two side by side on real papers. One
difference, at the `max_terms` cut only: terms of equal frequency there are kept in
alphabetical order, where scikit-learn's unstable sort keeps an arbitrary few. Counted in
arrays rather than through the vectorizer's dictionary: the vectorizer first collects every
phrase of the corpus as a Python string (millions of them at 20,000 papers, most seen once) and
sorts them all, which took 15 s and most of a gigabyte; here each word gets a number once, a
phrase is a pair of numbers, and counting is one sort of integers.
"""

from __future__ import annotations

import importlib.util
import itertools
import re
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from scipy import sparse

TOKEN = re.compile(r"(?u)\b[a-zA-Z][a-zA-Z0-9-]+\b")


def _english_stop_words() -> frozenset[str]:
    """scikit-learn's English stop words, from the one module of it that holds them.

    Loaded on its own: importing it the usual way runs scikit-learn's package start-up,
    70 MB of resident memory in every run for a list of 318 words.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.submodule_search_locations:
        path = Path(
            next(iter(spec.submodule_search_locations)), "feature_extraction", "_stop_words.py"
        )
        alone = importlib.util.spec_from_file_location("_digest_stop_words", path)
        if alone is not None and alone.loader is not None and path.is_file():
            module = importlib.util.module_from_spec(alone)
            alone.loader.exec_module(module)
            found = getattr(module, "ENGLISH_STOP_WORDS", None)
            if isinstance(found, frozenset) and found:
                return found
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS  # the layout changed

    return frozenset(ENGLISH_STOP_WORDS)


STOP_WORDS = _english_stop_words()


def words(text: str) -> list[str]:
    """The kept words of a text, in order."""
    return list(itertools.filterfalse(STOP_WORDS.__contains__, TOKEN.findall(text.lower())))


def terms_of(text: str) -> list[str]:
    """Every term of a text, repeated as often as it occurs: words, then neighbouring pairs."""
    ws = words(text)
    return ws + [f"{a} {b}" for a, b in itertools.pairwise(ws)]


class Terms:
    """The terms kept from a corpus, sorted, and the corpus's count matrix over them."""

    def __init__(self, terms: Sequence[str]) -> None:
        self.terms = list(terms)
        self.index = {t: i for i, t in enumerate(self.terms)}

    @classmethod
    def fit(
        cls, texts: Iterable[str], *, min_df: int, max_df: float, max_terms: int
    ) -> tuple[Terms, sparse.csr_matrix]:
        """Count every term, keep those in at least `min_df` papers and at most a `max_df`
        share of them, then the `max_terms` most frequent (ties by alphabetical order).

        Returns no terms (and an empty matrix) when nothing is left: the caller decides what a
        vocabulary of nothing means.
        """
        n, numbered, term_of, doc_of, counts = _occurrences(texts)
        u = max(len(numbered), 1)
        starts = (
            np.flatnonzero(np.r_[True, term_of[1:] != term_of[:-1]])
            if len(term_of)
            else np.zeros(0, np.int64)
        )
        codes = term_of[starts]
        df = np.diff(np.r_[starts, len(term_of)])
        tf = np.add.reduceat(counts, starts) if len(starts) else np.zeros(0, np.int64)
        del term_of, starts
        keep = (df >= min_df) & (df <= max_df * n)

        def name(code: int) -> str:
            if code < u:
                return numbered[code]
            a, b = divmod(code - u, u)
            return f"{numbered[a]} {numbered[b]}"

        candidates = np.flatnonzero(keep)
        names = [name(int(c)) for c in codes[candidates]]
        alphabetical = np.empty(len(names), np.int64)
        alphabetical[sorted(range(len(names)), key=names.__getitem__)] = np.arange(len(names))
        if len(candidates) > max_terms:
            chosen = np.lexsort((alphabetical, -tf[candidates]))[:max_terms]
        else:
            chosen = np.arange(len(candidates))
        chosen = chosen[np.argsort(alphabetical[chosen])]
        del names, alphabetical
        column = np.full(len(codes), -1, np.int64)
        column[candidates[chosen]] = np.arange(len(chosen))
        col = np.repeat(column, df)
        kept = col >= 0
        matrix = sparse.csc_matrix(
            (counts[kept].astype(np.float32), (doc_of[kept], col[kept])), shape=(n, len(chosen))
        ).tocsr()
        matrix.sort_indices()
        # Named afresh rather than picked from `names`: the kept few would otherwise hold on
        # to the memory of all the candidates' strings they were allocated among.
        return cls([name(int(c)) for c in codes[candidates[chosen]]]), matrix

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        """Counts of the kept terms in new texts (terms outside the vocabulary are dropped)."""
        indptr = [0]
        indices: list[int] = []
        get = self.index.get
        for text in texts:
            found = [i for t in terms_of(text) if (i := get(t)) is not None]
            indices.extend(found)
            indptr.append(len(indices))
        matrix = sparse.csr_matrix(
            (np.ones(len(indices), np.float32), np.asarray(indices, np.int64), indptr),
            shape=(len(texts), len(self.terms)),
        )
        matrix.sum_duplicates()
        return matrix


def _occurrences(
    texts: Iterable[str],
) -> tuple[int, list[str], np.ndarray, np.ndarray, np.ndarray]:
    """How many texts, and every (term, paper) pair that occurs in them, with its count,
    sorted by term then paper.

    Words are numbered in order of first sight (the list returned); a phrase of words a, b is
    the number u + a * u + b, above every word's (u words). Each occurrence becomes the one
    integer term * n + paper, so a single in-place sort of integers groups them.
    """
    numbers: dict[str, int] = {}
    flat, sizes = array("q"), array("q")
    for text in texts:  # read once: the caller may stream them from the database
        ws = words(text)
        # Numbers for the paper's new words first, so the lookup of all of them stays in C
        # (which word gets which number does not matter: terms are sorted by name later).
        for w in set(ws).difference(numbers):
            numbers[w] = len(numbers)
        flat.extend(map(numbers.__getitem__, ws))
        sizes.append(len(ws))
    n = len(sizes)
    lengths = np.frombuffer(sizes, np.int64) if n else np.zeros(0, np.int64)
    u = max(len(numbers), 1)
    ids = np.frombuffer(flat, np.int64) if len(flat) else np.zeros(0, np.int64)
    doc = np.repeat(np.arange(n, dtype=np.int64), lengths)
    same = doc[1:] == doc[:-1]  # neighbours within one paper make a phrase
    keys = np.empty(len(ids) + int(same.sum()), np.int64)
    keys[: len(ids)] = ids
    phrases = keys[len(ids) :]
    phrases[:] = ids[:-1][same]
    phrases *= u
    phrases += ids[1:][same]
    phrases += u
    del flat, ids
    keys *= max(n, 1)
    keys[: len(doc)] += doc
    phrases += doc[1:][same]
    del doc, same, phrases
    keys.sort()
    first = np.empty(len(keys), bool)
    first[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    del first
    counts = np.diff(np.append(starts, len(keys))).astype(np.int32)
    keys = keys[starts]
    del starts
    term_of = keys // max(n, 1)
    keys -= term_of * max(n, 1)  # what is left is the paper
    return n, list(numbers), term_of, keys.astype(np.int32), counts
