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
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from scipy import sparse
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.preprocessing import normalize

DIMENSIONS = 256
# Rescaling exponent for the kept singular directions (0 keeps the SVD's own weighting).
SPECTRUM_POWER = 0.25
# Singular values are floored at this share of the largest kept one before the rescaling. On a
# real corpus the 256 kept values span 0.39-1 of the largest and nothing changes; a corpus with
# a vocabulary barely larger than 256 terms keeps directions that are only noise, and the
# rescaling would amplify them (a two-topic test corpus lost 0.2 nDCG@10 with feedback).
SPECTRUM_FLOOR = 0.25
# Below this many corpus papers the models score in the sparse term space itself.
MIN_PROJECTED = 300
# The one term of a vocabulary fitted on no words (not an English stop word, unlike "empty").
PLACEHOLDER = "digestplaceholderterm"
# Bump when the features change, so stored vocabularies and models are rebuilt.
FEATURES_VERSION = "logidfent12-svd256-drop1-p025"


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
    return f"{p.title}. {p.abstract}"


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
        n = len(corpus)
        self.version = corpus_version([p.id for p in corpus])
        # Small corpora (a first day, the demo) cannot afford to drop rare terms.
        self.vectorizer = CountVectorizer(
            ngram_range=(1, 2),
            stop_words="english",
            min_df=2 if n >= 500 else 1,
            max_df=0.5 if n >= 50 else 1.0,
            max_features=100_000,
            token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z0-9-]+\b",
            dtype=np.float32,
        )
        texts = [paper_text(p) for p in corpus]
        try:
            counts = self.vectorizer.fit_transform(texts or [PLACEHOLDER]).tocsr()
        except ValueError:
            # Papers whose text is only stop words (or no text): one made-up term keeps every
            # later step working; the papers' rows stay empty, so they score zero rather than
            # crash the run. An empty corpus (a first run whose feeds all failed) fits on the
            # made-up term alone, above.
            counts = self.vectorizer.fit_transform([*texts, PLACEHOLDER]).tocsr()[: len(texts)]
        self.weights = global_weights(counts)
        matrix = self.weigh(counts)
        self.terms = self.vectorizer.get_feature_names_out()
        # Dense map: sparse term row -> projected row is `row @ self.basis`.
        if n >= MIN_PROJECTED and matrix.shape[1] > DIMENSIONS + 1:
            svd = TruncatedSVD(DIMENSIONS + 1, random_state=seed, n_iter=5).fit(matrix)
            comps, values = svd.components_[1:], svd.singular_values_[1:]
            floor = max(float(values.max(initial=0.0)) * SPECTRUM_FLOOR, 1e-6)
            scale = np.maximum(values, floor) ** -SPECTRUM_POWER
            self.basis: np.ndarray | None = np.ascontiguousarray(
                (comps.T * scale).astype(np.float32)
            )
        else:
            # Too few papers for a projection worth having (a first day, the demo): a handful
            # of documents would each get a direction of their own, and a repeated paper the
            # dropped first one. Too few terms, and there is nothing to compress (a corpus of
            # a few words repeated left no direction at all). Score in the sparse term space
            # itself (no basis: the identity).
            self.basis = None
        self.ids = [p.id for p in corpus]
        self.index = {pid: i for i, pid in enumerate(self.ids)}
        self.matrix = matrix
        self.dense = self.project(matrix)
        # Papers outside the corpus (the listing, feedback): transformed once, kept per process.
        self._extra: dict[str, tuple[sparse.csr_matrix, np.ndarray]] = {}
        self._keywords: dict[str, np.ndarray] = {}
        self._backgrounds: dict[tuple[int, int], np.ndarray] = {}

    @property
    def dimensions(self) -> int:
        return int(self.basis.shape[1] if self.basis is not None else self.matrix.shape[1])

    def weigh(self, counts: sparse.csr_matrix) -> sparse.csr_matrix:
        """Raw term counts to the weighted, unit-length rows the models read."""
        out = counts.astype(np.float32).tocsr()  # a copy: the data is rewritten in place
        np.log1p(out.data, out=out.data)
        out.data *= self.weights[out.indices]
        return normalize(out, copy=False)

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        return self.weigh(self.vectorizer.transform(list(texts)).tocsr())

    def project(self, rows: sparse.csr_matrix) -> np.ndarray:
        if self.basis is None:
            out = np.asarray(rows.toarray(), dtype=np.float32)
        else:
            out = np.asarray(rows @ self.basis, dtype=np.float32)
        return normalize(out) if out.shape[0] else out

    def sparse_rows(self, papers: Sequence[Text]) -> sparse.csr_matrix:
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
            sample = self.dense
            if sample.shape[0] > size:
                rng = np.random.default_rng(seed)
                sample = sample[rng.choice(sample.shape[0], size, replace=False)]
            found = self._backgrounds[(size, seed)] = sample
        return found

    # Persistence: fitting the projection on 20,000 papers takes tens of seconds, so a run
    # reuses the vocabulary a previous run fitted on the same corpus window.
    def __getstate__(self) -> dict[str, object]:
        # The projected corpus is derived from the matrix and the basis: not stored twice.
        derived = ("dense", "_extra", "_keywords", "_backgrounds")
        return {k: v for k, v in self.__dict__.items() if k not in derived}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._extra, self._keywords, self._backgrounds = {}, {}, {}
        self.dense = self.project(self.matrix)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Per process: two runners fitting at once must not write into each other's file.
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with tmp.open("wb") as f:
            pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)

    @staticmethod
    def load(path: Path) -> Vocabulary | None:
        """The stored vocabulary, or None if missing, unreadable or from other features."""
        try:
            with path.open("rb") as f:
                vocab = pickle.load(f)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
            return None
        if not isinstance(vocab, Vocabulary) or not vocab.version:
            return None
        return vocab
