"""Ranking quality on the protocol of ../shared/EVAL.md, with its baselines beside our ranker.

    python bench/eval_ranking.py [--methods sanity,centroid,default]

Data: the 74,728 labelled arXiv papers in ../shared/data/labelled (or $DIGEST_SHARED_DATA).
Subscribers are research areas (an arXiv category the rankers never see); each gives 10 example
papers from the 60 days before D0 = 2026-04-13, then gets the real listing of each of the next
15 announcement days. Reports, per method: nDCG@10 and MAP over all 15 days without feedback,
and nDCG@10 over days 6-15 when the reader likes the relevant and dislikes the other papers of
each day's top 10.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("DIGEST_SHARED_DATA", ROOT.parent / "shared" / "data"))
DATA = SHARED / "labelled" / "arxiv_daily_2025-03-18_to_2026-07-01_dedup.jsonl.gz"

D0 = date(2026, 4, 13)
CATEGORIES = [
    "cs.RO",
    "cs.GR",
    "cs.IR",
    "cs.HC",
    "cs.CR",
    "cs.MA",
    "cs.CY",
    "eess.IV",
    "cs.LG",
    "cs.SD",
    "cs.IT",
    "cs.GT",
    "cs.MM",
    "cs.SE",
]
REPLICAS = (0, 1, 2)
EVAL_DAYS = 15
K = 10
BASELINES = {  # EVAL.md, measured with its reference implementation
    "arxiv-sanity-lite": (0.322, 0.274, 0.375),
    "tf-idf centroid": (0.306, 0.265, 0.356),
    "sentence-embedding cosine (not run)": (0.272, 0.239, 0.286),
}


@dataclass
class Paper:
    id: str
    day: date
    title: str
    abstract: str
    authors: list[str]
    categories: set[str]


@dataclass
class Split:
    history: list[Paper]
    days: list[list[Paper]]


def load() -> Split:
    rows = []
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            rows.append(r)
    rows.sort(key=lambda r: (r["first_seen_date"], r["id"]))
    papers = [
        Paper(
            id=r["id"],
            day=date.fromisoformat(r["first_seen_date"]),
            title=" ".join(r["title"].split()),
            abstract=" ".join(r["abstract"].split()),
            authors=list(r["authors"]) if isinstance(r["authors"], list) else [],
            categories=set(r["arxiv_categories"]),
        )
        for r in rows
    ]
    history = [p for p in papers if D0 - timedelta(days=90) <= p.day < D0]
    eval_dates = sorted({p.day for p in papers if p.day >= D0})[:EVAL_DAYS]
    by_day = {d: [p for p in papers if p.day == d] for d in eval_dates}
    return Split(history, [by_day[d] for d in eval_dates])


def profiles(split: Split) -> list[tuple[str, int, list[int]]]:
    """(category, replica, indices into history of the 10 example papers)."""
    out = []
    recent = D0 - timedelta(days=60)
    for cat in CATEGORIES:
        pool = [i for i, p in enumerate(split.history) if p.day >= recent and cat in p.categories]
        for seed in REPLICAS:
            picks = np.random.default_rng(seed).choice(pool, 10, replace=False)
            out.append((cat, seed, [int(i) for i in picks]))
    return out


def ndcg_at_k(relevant: np.ndarray, k: int = K) -> float:
    """Binary gains in ranked order; relevant is the 0/1 vector of the whole ranking."""
    gains = relevant[:k]
    dcg = float(np.sum(gains / np.log2(np.arange(2, len(gains) + 2))))
    ideal = min(k, int(relevant.sum()))
    idcg = sum(1 / math.log2(i + 2) for i in range(ideal))
    return dcg / idcg


def average_precision(relevant: np.ndarray) -> float:
    hits = np.cumsum(relevant)
    ranks = np.arange(1, len(relevant) + 1)
    return float(np.sum((hits / ranks) * relevant) / relevant.sum())


# A method: given the history matrix and a subscriber's positives/negatives, score a listing.
Scorer = Callable[
    ["Features", list[int], list[sparse.csr_matrix], list[sparse.csr_matrix], sparse.csr_matrix],
    np.ndarray,
]


@dataclass
class Features:
    vectorizer: TfidfVectorizer
    history: sparse.csr_matrix
    days: list[sparse.csr_matrix]


def sanity_features(split: Split) -> Features:
    """arxiv-sanity-lite's features, as EVAL.md specifies them."""
    vec = TfidfVectorizer(
        ngram_range=(1, 2),
        max_df=0.1,
        min_df=5,
        max_features=20000,
        sublinear_tf=True,
        stop_words="english",
    )

    def text(p: Paper) -> str:
        return f"{p.title} {p.abstract} {' '.join(p.authors)}"

    hist = vec.fit_transform([text(p) for p in split.history])
    days = [vec.transform([text(p) for p in day]) for day in split.days]
    return Features(vec, hist.tocsr(), [d.tocsr() for d in days])


def svm_scores(
    f: Features,
    examples: list[int],
    likes: list[sparse.csr_matrix],
    dislikes: list[sparse.csr_matrix],
    listing: sparse.csr_matrix,
) -> np.ndarray:
    """arxiv-sanity-lite: LinearSVC; positives examples (+ likes), negatives every other history
    paper (+ dislikes)."""
    n = f.history.shape[0]
    y = np.zeros(n)
    y[examples] = 1
    blocks = [f.history]
    labels = [y]
    if likes:
        blocks.append(sparse.vstack(likes))
        labels.append(np.ones(sum(m.shape[0] for m in likes)))
    if dislikes:
        blocks.append(sparse.vstack(dislikes))
        labels.append(np.zeros(sum(m.shape[0] for m in dislikes)))
    X = sparse.vstack(blocks).tocsr()
    clf = LinearSVC(C=0.01, class_weight="balanced", max_iter=10000, tol=1e-6)
    clf.fit(X, np.concatenate(labels))
    return np.asarray(clf.decision_function(listing))


def centroid_scores(
    f: Features,
    examples: list[int],
    likes: list[sparse.csr_matrix],
    dislikes: list[sparse.csr_matrix],
    listing: sparse.csr_matrix,
) -> np.ndarray:
    """TF-IDF centroid: dot product with the mean of the examples (+ likes)."""
    rows = [f.history[examples], *likes]
    centre = np.asarray(sparse.vstack(rows).mean(axis=0)).ravel()
    return np.asarray(listing @ centre).ravel()


def evaluate(name: str, split: Split, f: Features, scorer: Scorer) -> tuple[float, float, float]:
    subs = profiles(split)
    plain_ndcg: list[float] = []
    plain_ap: list[float] = []
    fb_ndcg: list[float] = []
    for cat, _seed, examples in subs:
        # Without feedback the model is the same every day: one fit scores all 15 listings.
        all_scores = scorer(f, examples, [], [], sparse.vstack(f.days).tocsr())
        bounds = np.cumsum([0] + [m.shape[0] for m in f.days])
        for d, day in enumerate(split.days):
            rel = np.array([cat in p.categories for p in day], dtype=float)
            if not rel.any():
                continue
            scores = all_scores[bounds[d] : bounds[d + 1]]
            order = np.argsort(-scores, kind="stable")
            plain_ndcg.append(ndcg_at_k(rel[order]))
            plain_ap.append(average_precision(rel[order]))
        # With feedback: after each day's top 10, like the relevant, dislike the rest.
        likes: list[sparse.csr_matrix] = []
        dislikes: list[sparse.csr_matrix] = []
        for i, (day, listing) in enumerate(zip(split.days, f.days, strict=True)):
            rel = np.array([cat in p.categories for p in day], dtype=float)
            scores = scorer(f, examples, likes, dislikes, listing)
            order = np.argsort(-scores, kind="stable")
            if i >= 5 and rel.any():
                fb_ndcg.append(ndcg_at_k(rel[order]))
            top = order[:K]
            liked = [j for j in top if rel[j]]
            disliked = [j for j in top if not rel[j]]
            if liked:
                likes.append(listing[liked])
            if disliked:
                dislikes.append(listing[disliked])
    return float(np.mean(plain_ndcg)), float(np.mean(plain_ap)), float(np.mean(fb_ndcg))


class DefaultRanker:
    """The project's ranker (digest.rank.Ranker), fitted on the history as `digest run` fits it
    on the stored corpus; likes and dislikes go to its model as `digest run` will pass them."""

    def __init__(self, split: Split) -> None:
        from digest.models import Paper as StoredPaper
        from digest.rank import Ranker

        def stored(p: Paper) -> StoredPaper:
            return StoredPaper(
                id=p.id, title=p.title, abstract=p.abstract, authors=p.authors, announced=p.day
            )

        self.history = [stored(p) for p in split.history]
        self.ranker = Ranker(self.history)
        self.days = [[stored(p) for p in day] for day in split.days]

    def features(self, split: Split) -> Features:
        days = [self.ranker.vectors(day) for day in self.days]
        return Features(self.ranker.vectorizer, self.ranker.matrix, days)

    def scores(
        self,
        f: Features,
        examples: list[int],
        likes: list[sparse.csr_matrix],
        dislikes: list[sparse.csr_matrix],
        listing: sparse.csr_matrix,
    ) -> np.ndarray:
        from digest.profiles import Interests, Profile

        papers = [self.history[i] for i in examples]
        profile = Profile(
            email="eval@example.org", interests=Interests(papers=[p.id for p in papers])
        )
        proba, _ = self.ranker._model_scores(
            profile,
            papers,
            listing,
            likes=sparse.vstack(likes).tocsr() if likes else None,
            dislikes=sparse.vstack(dislikes).tocsr() if dislikes else None,
        )
        assert proba is not None
        return proba


def _default_method() -> tuple[str, Callable[[Split], Features], Scorer]:
    holder: dict[str, DefaultRanker] = {}

    def make(split: Split) -> Features:
        holder["r"] = DefaultRanker(split)
        return holder["r"].features(split)

    def score(
        f: Features,
        examples: list[int],
        likes: list[sparse.csr_matrix],
        dislikes: list[sparse.csr_matrix],
        listing: sparse.csr_matrix,
    ) -> np.ndarray:
        return holder["r"].scores(f, examples, likes, dislikes, listing)

    return ("default (digest.rank)", make, score)


METHODS: dict[str, tuple[str, Callable[[Split], Features], Scorer]] = {
    "sanity": ("arxiv-sanity-lite", sanity_features, svm_scores),
    "centroid": ("tf-idf centroid", sanity_features, centroid_scores),
    "default": _default_method(),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args(argv)
    if not DATA.exists():
        print(f"missing {DATA}", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    split = load()
    print(
        f"history {len(split.history)} papers; {len(split.days)} evaluation days of "
        f"{min(map(len, split.days))}-{max(map(len, split.days))} papers; "
        f"{len(CATEGORIES) * len(REPLICAS)} subscribers "
        f"(loaded in {time.perf_counter() - t0:.0f} s)"
    )
    cache: dict[Callable[[Split], Features], Features] = {}
    print(f"{'method':40} {'nDCG@10':>8} {'MAP':>6} {'nDCG@10 fb 6-15':>16}   reference")
    for key in args.methods.split(","):
        label, make, scorer = METHODS[key]
        t1 = time.perf_counter()
        if make not in cache:
            cache[make] = make(split)
        ndcg, ap, fb = evaluate(label, split, cache[make], scorer)
        ref = BASELINES.get(label)
        shown = f"{ref[0]:.3f} {ref[1]:.3f} {ref[2]:.3f}" if ref else "-"
        print(
            f"{label:40} {ndcg:8.3f} {ap:6.3f} {fb:16.3f}   {shown}   "
            f"({time.perf_counter() - t1:.0f} s)",
            flush=True,
        )
    for label, (n, m, fb) in BASELINES.items():
        if "not run" in label:
            print(f"{label:40} {n:8.3f} {m:6.3f} {fb:16.3f}   (EVAL.md figure)")
    print("reproduce: python bench/eval_ranking.py --methods " + args.methods)
    return 0


if __name__ == "__main__":
    sys.exit(main())
