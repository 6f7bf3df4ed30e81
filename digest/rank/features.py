"""The ranker's features: a vocabulary fitted on the corpus window and shared by every subscriber.

Two views of each paper:
- sparse weighted term counts over words and two-word phrases, which the explanations read
  terms from. Each count is damped to log(1 + tf) and multiplied by a global weight per term,
  its IDF times its entropy weight (1 - the normalised entropy of the term's spread over the
  corpus). The entropy factor keeps terms that cluster in a few papers ("grasp", "regret") and
  fades those spread evenly everywhere, which plain IDF cannot tell apart at equal document
  frequency. In bench/eval_ranking.py it lifted nDCG@10 from 0.361 to 0.377 (bench/README.md);
- a dense low-rank projection of it (truncated SVD, 256 dimensions), which the models score in.
  Ten example papers share few exact phrases with tomorrow's listing, but they share topics;
  in bench/eval_ranking.py the projection beat every sparse model tried (see bench/README.md).

The first singular direction is dropped (it is the "generic arXiv prose" direction every
paper leans on), and the rest are rescaled by singular value ** -0.25 so that a few broad
topics do not drown the narrower ones. Both choices were measured, not guessed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from scipy import sparse

from digest.rank.lowrank import left_singular, product
from digest.rank.terms import Terms

DIMENSIONS = 256
# Rescaling exponent for the kept singular directions (0 keeps the SVD's own weighting).
SPECTRUM_POWER = 0.25
# Singular values are floored at this share of the largest kept one before the rescaling. On a
# real corpus the 256 kept values span 0.39-1 of the largest and nothing changes; a corpus with
# a vocabulary barely larger than 256 terms keeps directions that are only noise, and the
# rescaling would amplify them (a two-topic test corpus lost 0.2 nDCG@10 with feedback).
SPECTRUM_FLOOR = 0.25
# Singular values below this share of the largest kept one are treated as zero (see _fit).
RANK_TOLERANCE = 1e-3
# Below this many corpus papers the models score in the sparse term space itself.
MIN_PROJECTED = 300
# The one term of a vocabulary fitted on no words (not an English stop word, unlike "empty").
PLACEHOLDER = "digestplaceholderterm"
# Terms kept: the most frequent, of those in at least two papers and at most half of them.
MAX_TERMS = 100_000
# Bump when the features change, so stored vocabularies and models are rebuilt.
FEATURES_VERSION = "logidfent12-rsvd256-drop1-p025"
# Bump when the stored arrays change.
STORE_FORMAT = "digest-vocabulary-1"


class Text(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def abstract(self) -> str: ...


class RankPaper(Text, Protocol):
    """What ranking reads of a paper. The store's `Paper` fits it; rank never imports the store,
    so the bench scripts and tests may hand in any object with these attributes."""

    @property
    def authors(self) -> list[str]: ...
    @property
    def categories(self) -> list[str]: ...
    @property
    def upvotes(self) -> int | None: ...


class StoredModel(Protocol):
    """A model as the store keeps it: the fingerprint of its inputs and its bytes."""

    @property
    def fingerprint(self) -> str: ...
    @property
    def blob(self) -> bytes: ...


def paper_text(p: Text) -> str:
    """The one text of a paper that features, keywords and excludes all read: title, then
    abstract, with a sentence break between so no phrase spans the seam."""
    return joined_text(p.title, p.abstract)


def joined_text(title: str, abstract: str) -> str:
    return f"{title}. {abstract}"


def corpus_version(ids: Sequence[str]) -> str:
    """A short fingerprint of which papers a vocabulary was fitted on."""
    h = hashlib.sha256(FEATURES_VERSION.encode())
    for pid in sorted(ids):
        h.update(pid.encode() + b"\n")
    return h.hexdigest()[:16]


def global_weights(counts: sparse.csr_matrix) -> np.ndarray:
    """Per term: smoothed IDF times the log-entropy weight 1 + sum_d p log p / log n, where p is
    the share of the term's occurrences falling in paper d (1 for a term in one paper, 0 for
    one spread evenly over all of them)."""
    n = counts.shape[0]
    df = np.bincount(counts.indices, minlength=counts.shape[1]).astype(np.float64)
    idf = np.log((1 + n) / (1 + df)) + 1
    if n < 2:
        return np.asarray(idf, dtype=np.float32)
    totals = np.asarray(counts.sum(axis=0), dtype=np.float64).ravel()
    share = counts.astype(np.float64).tocoo()
    p = share.data / totals[share.col]
    plogp = np.bincount(share.col, weights=p * np.log(p), minlength=counts.shape[1])
    entropy_weight = 1 + plogp / np.log(n)
    # A term in every paper exactly alike would weigh 0; keep a floor so no row goes empty.
    return np.asarray(idf * np.maximum(entropy_weight, 1e-3), dtype=np.float32)


class Vocabulary:
    """Weighted term counts and their low-rank projection, fitted once on a corpus."""

    def __init__(self, corpus: Sequence[Text], seed: int = 0) -> None:
        self._fit([p.id for p in corpus], (paper_text(p) for p in corpus), seed)

    @classmethod
    def from_texts(cls, ids: list[str], texts: Iterable[str], seed: int = 0) -> Vocabulary:
        """Fitted on `texts` (each `paper_text`, in the order of `ids`), read once: the
        caller may stream them rather than hold 20,000 abstracts."""
        vocab = cls.__new__(cls)
        vocab._fit(ids, texts, seed)
        return vocab

    def _fit(self, ids: list[str], texts: Iterable[str], seed: int) -> None:
        n = len(ids)
        self.version = corpus_version(ids)
        # Small corpora (a first day, the demo) cannot afford to drop rare terms.
        terms, counts = Terms.fit(
            texts,
            min_df=2 if n >= 500 else 1,
            max_df=0.5 if n >= 50 else 1.0,
            max_terms=MAX_TERMS,
        )
        if counts.shape[0] != n:
            raise ValueError(f"{n} papers but {counts.shape[0]} texts")
        if not terms.terms:
            # Papers whose text is only stop words, or no papers at all (a first run whose
            # feeds all failed): one made-up term keeps every later step working; the papers'
            # rows stay empty, so they score zero rather than crash the run.
            terms, counts = Terms([PLACEHOLDER]), sparse.csr_matrix((n, 1), dtype=np.float32)
        self.terms_ = terms
        self.weights = global_weights(counts)
        matrix = self.weigh(counts)
        del counts
        coefficients: np.ndarray | None = None
        if n >= MIN_PROJECTED and matrix.shape[1] > DIMENSIONS + 1:
            values, left = left_singular(matrix, DIMENSIONS + 1, seed)
            values, left = values[1:], left[:, 1:]
            floor = max(float(values.max(initial=0.0)) * SPECTRUM_FLOOR, 1e-6)
            scale = np.maximum(values, floor) ** -SPECTRUM_POWER
            # The right singular vectors are X^T U / s: the basis is X^T times these
            # coefficients, so only they are stored (a paper-sized block, not a term-sized one).
            # A corpus of fewer distinct texts than directions (repeats, a tiny demo) has
            # singular values near zero whose vectors are rounding noise; divided by them they
            # would swamp every projection, so those directions are left out (zero).
            real = values > RANK_TOLERANCE * float(values.max(initial=0.0))
            inverse = np.divide(1.0, values, out=np.zeros_like(values), where=real)
            coefficients = np.ascontiguousarray(left * (scale * inverse))
        # Too few papers for a projection worth having (a first day, the demo): a handful of
        # documents would each get a direction of their own, and a repeated paper the dropped
        # first one. Too few terms, and there is nothing to compress (a corpus of a few words
        # repeated left no direction at all). Then the models score in the sparse term space
        # itself (no basis: the identity).
        self.ids = ids
        self._setup(matrix, coefficients)

    def _setup(self, matrix: sparse.csr_matrix, coefficients: np.ndarray | None) -> None:
        """What follows from the stored arrays, the same after a fit and after a load."""
        self.index = {pid: i for i, pid in enumerate(self.ids)}
        self.matrix = matrix
        self.coefficients = coefficients
        # Dense map: sparse term row -> projected row is `row @ self.basis`.
        self.basis: np.ndarray | None = (
            None
            if coefficients is None
            else np.ascontiguousarray(product(matrix.T.tocsr(), coefficients), dtype=np.float32)
        )
        self.dense = self.project(matrix)
        # Papers outside the corpus (the listing, feedback): transformed once, kept per process.
        self._extra: dict[str, tuple[sparse.csr_matrix, np.ndarray]] = {}
        self._keywords: dict[str, np.ndarray] = {}
        self._backgrounds: dict[tuple[int, int], np.ndarray] = {}
        self._background_terms: dict[tuple[int, int], sparse.csc_matrix] = {}

    @property
    def terms(self) -> list[str]:
        return self.terms_.terms

    @property
    def dimensions(self) -> int:
        return int(self.basis.shape[1] if self.basis is not None else self.matrix.shape[1])

    def weigh(self, counts: sparse.csr_matrix) -> sparse.csr_matrix:
        """Raw term counts to the weighted, unit-length rows the models read."""
        out = counts.astype(np.float32).tocsr()  # a copy: the data is rewritten in place
        np.log1p(out.data, out=out.data)
        out.data *= self.weights[out.indices]
        return _unit_rows(out)

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        return self.weigh(self.terms_.transform(texts))

    def project(self, rows: sparse.csr_matrix) -> np.ndarray:
        if self.basis is None:
            out = np.asarray(rows.toarray(), dtype=np.float32)
        else:
            out = np.asarray(product(rows, self.basis), dtype=np.float32)
        return _unit_dense(out)

    def sparse_rows(self, papers: Sequence[Text]) -> sparse.csr_matrix:
        if not papers:  # most readers' liked and disliked papers: no stack to build
            return sparse.csr_matrix((0, self.matrix.shape[1]), dtype=np.float32)
        rows = [self.index.get(p.id, -1) for p in papers]
        if min(rows) >= 0:
            # One fancy index: a stack of single rows cost half a millisecond a reader.
            found: sparse.csr_matrix = self.matrix[rows]
            return found
        self._remember(papers)
        return sparse.vstack(
            [
                self.matrix[self.index[p.id]] if p.id in self.index else self._extra[p.id][0]
                for p in papers
            ]
            or [sparse.csr_matrix((0, self.matrix.shape[1]), dtype=np.float32)]
        ).tocsr()

    def dense_rows(self, papers: Sequence[Text]) -> np.ndarray:
        if not papers:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        rows = [self.index.get(p.id, -1) for p in papers]
        if min(rows) >= 0:
            return self.dense[rows]
        self._remember(papers)
        return np.vstack(
            [
                self.dense[r] if r >= 0 else self._extra[p.id][1]
                for r, p in zip(rows, papers, strict=True)
            ]
        )

    def forget(self, ids: Sequence[str]) -> None:
        """Drop these papers' transforms (`_remember`): one reader's own texts, done with."""
        for pid in ids:
            self._extra.pop(pid, None)

    def _remember(self, papers: Sequence[Text]) -> None:
        """Transform papers outside the corpus once; a run asks for the listing many times
        (once per subscriber), and the term transform is the slow part."""
        new = [p for p in papers if p.id not in self.index and p.id not in self._extra]
        if not new:
            return
        rows = self.transform([paper_text(p) for p in new])
        dense = self.project(rows)
        for i, p in enumerate(new):
            self._extra[p.id] = (rows[i], dense[i])

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        return self.project(self.transform(texts))

    def embed_keywords(self, keywords: Sequence[str]) -> np.ndarray:
        """`embed_text` of profile keywords, each embedded once per process: readers share
        most of their keywords, and the term transform is the slow part of training."""
        new = [k for k in dict.fromkeys(keywords) if k not in self._keywords]
        if new:
            for k, row in zip(new, self.embed_text(new), strict=True):
                self._keywords[k] = row
        return np.vstack([self._keywords[k] for k in keywords])

    def background(self, size: int, seed: int = 0) -> np.ndarray:
        """The corpus papers a model calibrates its scores against: a fixed random sample of
        `size` (the whole corpus when smaller), drawn once per vocabulary, not per reader."""
        found = self._backgrounds.get((size, seed))
        if found is None:
            found = self._backgrounds[(size, seed)] = self.dense[self.background_rows(size, seed)]
        return found

    def background_terms(self, size: int, seed: int = 0) -> sparse.csc_matrix:
        """The term rows of `background`, by column (a model's sparse part reads only the
        columns of its own terms), made once per vocabulary."""
        found = self._background_terms.get((size, seed))
        if found is None:
            rows = self.matrix[self.background_rows(size, seed)]
            found = self._background_terms[(size, seed)] = rows.tocsc()
        return found

    def background_rows(self, size: int, seed: int = 0) -> np.ndarray:
        """Which corpus rows `background` holds (their term rows are `matrix[...]` of it)."""
        n = self.dense.shape[0]
        if n <= size:
            return np.arange(n)
        return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))

    # Persistence: fitting on 20,000 papers takes seconds, so a run reuses the vocabulary a
    # previous run fitted on the same corpus window. Plain arrays in one uncompressed .npz (no
    # pickle: nothing in the file runs code when read); the basis and the projected corpus are
    # derived from them on load in well under a second.
    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A file of its own: two runners fitting at once (two containers may both be pid 1)
        # must not write into each other's.
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        arrays = {
            "format": np.array([STORE_FORMAT]),
            "version": np.array([self.version]),
            "ids": _joined(self.ids),
            "terms": _joined(self.terms),
            "weights": self.weights,
            "data": self.matrix.data,
            "indices": self.matrix.indices,
            "indptr": self.matrix.indptr,
            "shape": np.array(self.matrix.shape),
        }
        if self.basis is not None:
            if self.coefficients is None:
                raise ValueError("only a freshly fitted vocabulary can be saved")
            arrays["coefficients"] = self.coefficients
        try:
            with tmp.open("wb") as f:
                np.savez(f, allow_pickle=False, **arrays)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)  # gone already when it was renamed
        # Only the file needs them (the basis is made from them once): 20 MB not held all run.
        self.coefficients = None

    @staticmethod
    def stored_version(path: Path) -> str | None:
        """The version of the stored vocabulary, read without the rest: loading all of it
        (and deriving the basis) takes most of a second at 20,000 papers, for nothing when
        the window has moved and it is to be fitted again."""
        try:
            with np.load(path, allow_pickle=False) as f:
                if str(f["format"][0]) != STORE_FORMAT:
                    return None
                return str(f["version"][0])
        except (OSError, EOFError, ValueError, KeyError, IndexError, zipfile.BadZipFile):
            return None

    @staticmethod
    def load(path: Path) -> Vocabulary | None:
        """The stored vocabulary, or None if missing, unreadable or from other features."""
        try:
            with np.load(path, allow_pickle=False) as f:
                if str(f["format"][0]) != STORE_FORMAT:
                    return None
                vocab = Vocabulary.__new__(Vocabulary)
                vocab.version = str(f["version"][0])
                vocab.ids = _split(f["ids"])
                vocab.terms_ = Terms(_split(f["terms"]))
                vocab.weights = f["weights"]
                shape = tuple(int(x) for x in f["shape"])
                matrix = sparse.csr_matrix((f["data"], f["indices"], f["indptr"]), shape=shape)
                coefficients = f["coefficients"] if "coefficients" in f.files else None
        except (OSError, EOFError, ValueError, KeyError, IndexError, zipfile.BadZipFile):
            return None
        if len(vocab.ids) != shape[0] or len(vocab.terms) != shape[1]:
            return None
        vocab._setup(matrix, coefficients)
        vocab.coefficients = None  # stored already (see `save`)
        return vocab


def _unit_rows(m: sparse.csr_matrix) -> sparse.csr_matrix:
    """Scale each row of `m` to unit length in place (empty rows stay empty)."""
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    norms = np.sqrt(
        np.bincount(rows, weights=np.square(m.data, dtype=np.float64), minlength=m.shape[0])
    )
    m.data /= np.where(norms > 0, norms, 1.0)[rows].astype(m.data.dtype)
    return m


def _unit_dense(m: np.ndarray) -> np.ndarray:
    """Scale each row of a fresh array to unit length, in place (zero rows stay zero)."""
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    m /= np.where(norms > 0, norms, 1).astype(m.dtype)
    return m


def _joined(items: Sequence[str]) -> np.ndarray:
    """Strings as one byte array, newline-separated (ids and terms hold no newline)."""
    return np.frombuffer("\n".join(items).encode(), dtype=np.uint8)


def _split(blob: np.ndarray) -> list[str]:
    text = blob.tobytes().decode()
    return text.split("\n") if text else []
