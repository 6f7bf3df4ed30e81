"""Ranking: which of the day's new papers each subscriber sees, and why.

TF-IDF over a rolling corpus of stored papers, fitted once per run and shared by every
subscriber; per subscriber a logistic regression trained on their example papers and keyword
pseudo-documents (positives) against background papers from the corpus. Rules sit on top:
`exclude` keywords drop a paper, followed authors and categories and literal keyword hits raise
it. Every pick carries a one-line reason built from what actually contributed to its score.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from digest.models import Paper
from digest.profiles import Profile

# Boosts are on the scale of the classifier's probability (0..1); an explicit signal from the
# profile should outrank a merely similar paper.
AUTHOR_BOOST = 1.0
KEYWORD_BOOST = 0.5
CATEGORY_BOOST = 0.3
# A paper with no explicit match needs at least this probability to be picked at all.
MIN_PROBABILITY = 0.5
BACKGROUND_SIZE = 2000
# How much more an explicit "less like this" counts than one background paper.
DISLIKE_WEIGHT = 5.0
# Pseudo-positives from a first pass over the corpus, and how much each counts.
PSEUDO_POSITIVES = 30
PSEUDO_WEIGHT = 0.3
REASON_TERMS = 3


def paper_text(p: Paper) -> str:
    # The title twice: it is the densest statement of what a paper is about.
    return f"{p.title}. {p.title}. {p.abstract}"


def _phrase(term: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w-])" + re.escape(term.lower()) + r"(?![\w-])")


def _author_key(name: str) -> tuple[str, str]:
    """(surname, first initial): "Tri Dao", "T. Dao" and "Dao, Tri" all follow the same person."""
    name = name.strip().lower()
    if "," in name:
        last, first = (x.strip() for x in name.split(",", 1))
    else:
        parts = name.replace(".", ". ").split()
        last, first = (parts[-1], parts[0]) if parts else ("", "")
    return last, first[:1]


@dataclass
class Pick:
    paper: Paper
    score: float
    reason: str
    signals: list[str] = field(default_factory=list)


class Ranker:
    """Vocabulary and background fitted once on the corpus, then one model per subscriber."""

    def __init__(self, corpus: Sequence[Paper], seed: int = 0) -> None:
        self.corpus = list(corpus)
        n = len(self.corpus)
        # Small corpora (a first day, the demo) cannot afford to drop rare terms.
        self.vectorizer = TfidfVectorizer(
            ngram_range=(1, 2),
            sublinear_tf=True,
            stop_words="english",
            min_df=2 if n >= 500 else 1,
            max_df=0.5 if n >= 50 else 1.0,
            max_features=100_000,
            token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z0-9-]+\b",
        )
        texts = [paper_text(p) for p in self.corpus] or ["empty"]
        self.matrix = self.vectorizer.fit_transform(texts)
        self.terms = self.vectorizer.get_feature_names_out()
        self.index = {p.id: i for i, p in enumerate(self.corpus)}
        self.rng = np.random.default_rng(seed)

    def vectors(self, papers: Sequence[Paper]) -> sparse.csr_matrix:
        rows = [self.index.get(p.id) for p in papers]
        if all(r is not None for r in rows):
            return self.matrix[rows]
        return self.vectorizer.transform([paper_text(p) for p in papers])

    def rank(
        self,
        profile: Profile,
        candidates: Sequence[Paper],
        examples: Sequence[Paper] = (),
        limit: int | None = None,
    ) -> list[Pick]:
        """The best candidates for this profile, best first, each with its reason."""
        interests = profile.interests
        limit = limit or profile.max_papers
        excludes = [_phrase(k) for k in interests.exclude]
        pool = [
            p
            for p in candidates
            if not any(rx.search(f"{p.title} {p.abstract}".lower()) for rx in excludes)
        ]
        if not pool:
            return []
        X = self.vectors(pool)
        proba, contrib = self._model_scores(profile, examples, X)
        keywords = [(k, _phrase(k)) for k in interests.keywords]
        followed = {_author_key(a): a for a in interests.authors}
        cats = set(interests.categories)
        picks: list[Pick] = []
        for i, p in enumerate(pool):
            text = f"{p.title}. {p.abstract}".lower()
            hit_kw = [k for k, rx in keywords if rx.search(text)]
            hit_auth = [followed[k] for a in p.authors if (k := _author_key(a)) in followed]
            hit_cat = [c for c in p.categories if c in cats or c.split(".")[0] in cats]
            score = float(proba[i]) if proba is not None else 0.0
            score += KEYWORD_BOOST * min(len(hit_kw), 2) / 2 if hit_kw else 0.0
            score += AUTHOR_BOOST if hit_auth else 0.0
            score += CATEGORY_BOOST if hit_cat else 0.0
            explicit = bool(hit_kw or hit_auth or hit_cat)
            if not explicit and (proba is None or proba[i] < MIN_PROBABILITY):
                continue
            terms = self._top_terms(X, i, contrib, text) if contrib is not None else []
            signals = []
            matched = _without_overlap([*hit_kw, *terms])
            if matched:
                signals.append("matches: " + ", ".join(matched[:REASON_TERMS]))
            if hit_auth:
                signals.append("author: " + ", ".join(dict.fromkeys(hit_auth)))
            if hit_cat:
                signals.append("category: " + ", ".join(dict.fromkeys(hit_cat)))
            if not signals:
                signals.append("similar to the papers in your profile")
            picks.append(Pick(p, score, "; ".join(signals), signals))
        # Stable sort keeps listing order among equal scores.
        picks.sort(key=lambda k: -k.score)
        return picks[:limit]

    def _model_scores(
        self,
        profile: Profile,
        examples: Sequence[Paper],
        X: sparse.csr_matrix,
        likes: sparse.csr_matrix | None = None,
        dislikes: sparse.csr_matrix | None = None,
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Per-candidate probability and the model's per-term weights (None without positives).

        Likes join the positives; dislikes join the negatives with extra weight, because one
        "not for me" says more about this reader than a random background paper does.
        """
        interests = profile.interests
        pos_docs: list[sparse.csr_matrix] = []
        if examples:
            pos_docs.append(self.vectors(examples))
        if likes is not None and likes.shape[0]:
            pos_docs.append(likes)
        kw = [k for k in interests.keywords if k]
        if kw:
            pos_docs.append(self.vectorizer.transform([*kw, " ".join(kw)]))
        if not pos_docs:
            return None, None
        positives = sparse.vstack(pos_docs).tocsr()
        positives = positives[np.asarray(positives.sum(axis=1)).ravel() > 0]
        if positives.shape[0] == 0:
            return None, None
        example_ids = {p.id for p in examples}
        background = [i for i, p in enumerate(self.corpus) if p.id not in example_ids]
        if len(background) > BACKGROUND_SIZE:
            background = list(self.rng.choice(background, BACKGROUND_SIZE, replace=False))
        if not background:
            return None, None
        negatives = self.matrix[background]
        weights = np.ones(positives.shape[0] + negatives.shape[0])
        if dislikes is not None and dislikes.shape[0]:
            negatives = sparse.vstack([negatives, dislikes]).tocsr()
            weights = np.r_[weights, np.full(dislikes.shape[0], DISLIKE_WEIGHT)]
        train = sparse.vstack([positives, negatives]).tocsr()
        y = np.r_[np.ones(positives.shape[0]), np.zeros(negatives.shape[0])]
        clf = LogisticRegression(C=10.0, class_weight="balanced", max_iter=1000)
        clf.fit(train, y, sample_weight=weights)
        # Second pass: the corpus papers the first model likes best stand in, down-weighted, for
        # the many ways a field is written about that ten examples cannot show.
        first = clf.decision_function(self.matrix)
        first[[self.index[p.id] for p in examples if p.id in self.index]] = -np.inf
        pseudo = np.argsort(-first)[:PSEUDO_POSITIVES]
        train = sparse.vstack([train, self.matrix[pseudo]]).tocsr()
        y = np.r_[y, np.ones(len(pseudo))]
        weights = np.r_[weights, np.full(len(pseudo), PSEUDO_WEIGHT)]
        clf = LogisticRegression(C=10.0, class_weight="balanced", max_iter=1000)
        clf.fit(train, y, sample_weight=weights)
        return clf.predict_proba(X)[:, 1], clf.coef_.ravel()

    def _top_terms(self, X: sparse.csr_matrix, row: int, coef: np.ndarray, text: str) -> list[str]:
        """The paper's terms that pushed its score up the most.

        Only terms that stand in the paper as written: TF-IDF also makes bigrams across
        sentence ends, which would read as nonsense in a reason.
        """
        start, end = X.indptr[row], X.indptr[row + 1]
        cols, vals = X.indices[start:end], X.data[start:end]
        weights = vals * coef[cols]
        out: list[str] = []
        for j in np.argsort(-weights):
            if weights[j] <= 0 or len(out) >= 2 * REASON_TERMS:
                break
            term = str(self.terms[cols[j]])
            if _phrase(term).search(text):
                out.append(term)
        return out


def _without_overlap(terms: list[str]) -> list[str]:
    """Drop terms already said by an earlier, longer one ("space models" after
    "state space models"), and let a phrase replace the single words it contains."""
    out: list[str] = []
    for term in terms:
        padded = f" {term} "
        if any(padded in f" {kept} " for kept in out):
            continue
        out = [kept for kept in out if f" {kept} " not in padded]
        out.append(term)
    return out
