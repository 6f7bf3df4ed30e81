"""Ranking quality on the protocol of ../shared/EVAL.md, with its baselines beside our ranker.

    python bench/eval_ranking.py [--methods sanity,centroid,default,keywords,sanity-kw,centroid-kw]
    python bench/eval_ranking.py --methods default,no-prf,no-dislikes,no-holdback   (ablations)
    python bench/eval_ranking.py --methods ceiling   (a classifier given every hidden label)

Data: the 74,728 labelled arXiv papers in ../shared/data/labelled (or $DIGEST_SHARED_DATA).
Subscribers are research areas (an arXiv category the rankers never see); each gives 10 example
papers from the 60 days before D0 = 2026-04-13, then gets the real listing of each of the next
15 announcement days. Reports, per method: nDCG@10 and MAP over all 15 days without feedback,
and nDCG@10 over days 6-15 when the reader likes the relevant and dislikes the other papers of
each day's top 10. `default` and its ablations run through the store and the pipeline
(bench/eval_pipeline.py); `keywords` gives each subscriber only its category's name as keywords
(the cold start), next to the baselines fed the same words as their one positive document.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from digest.rank.params import DEFAULT  # noqa: E402

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


def read_rows() -> list[dict[str, Any]]:
    """Every labelled paper as stored, sorted by (first_seen_date, id) as EVAL.md says."""
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    rows.sort(key=lambda r: (r["first_seen_date"], r["id"]))
    return rows


def load() -> Split:
    rows = read_rows()
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


def evaluate(
    name: str,
    split: Split,
    f: Features,
    scorer: Scorer,
    subs: list[tuple[str, int, list[int]]] | None = None,
) -> tuple[float, float, float]:
    subs = subs or profiles(split)
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


def ceiling(split: Split, f: Features) -> tuple[float, float, float]:
    """Not a ranker: what a linear text classifier reaches when it is handed the hidden labels.

    Per category, a LinearSVC on the arxiv-sanity-lite features, trained on the true label of
    every history paper (14,309 labels, where a subscriber gives 10 examples). The feedback
    column retrains each day on the history plus every earlier evaluation day, fully labelled,
    which is more than any reader's feedback can give. It bounds what feedback can add.
    """

    def fit(x: sparse.csr_matrix, y: np.ndarray) -> LinearSVC:
        return LinearSVC(C=0.1, class_weight="balanced").fit(x, y)

    listing = sparse.vstack(f.days).tocsr()
    bounds = np.cumsum([0] + [m.shape[0] for m in f.days])
    plain_ndcg: list[float] = []
    plain_ap: list[float] = []
    fb_ndcg: list[float] = []
    for cat in CATEGORIES:
        labels = [np.array([cat in p.categories for p in day], dtype=float) for day in split.days]
        history = np.array([cat in p.categories for p in split.history], dtype=float)
        scores = fit(f.history, history).decision_function(listing)
        for d, rel in enumerate(labels):
            if rel.any():
                order = np.argsort(-scores[bounds[d] : bounds[d + 1]], kind="stable")
                plain_ndcg.append(ndcg_at_k(rel[order]))
                plain_ap.append(average_precision(rel[order]))
        for d in range(5, len(split.days)):
            if not labels[d].any():
                continue
            x = sparse.vstack([f.history, *f.days[:d]]).tocsr()
            model = fit(x, np.concatenate([history, *labels[:d]]))
            order = np.argsort(-model.decision_function(f.days[d]), kind="stable")
            fb_ndcg.append(ndcg_at_k(labels[d][order]))
    # The three replicas of a category would get the same ranking: one per category gives the
    # same mean over (subscriber, day) as the other methods.
    return float(np.mean(plain_ndcg)), float(np.mean(plain_ap)), float(np.mean(fb_ndcg))


METHODS: dict[str, tuple[str, Callable[[Split], Features], Scorer]] = {
    "sanity": ("arxiv-sanity-lite", sanity_features, svm_scores),
    "centroid": ("tf-idf centroid", sanity_features, centroid_scores),
}
# Methods driven through the store and pipeline (bench/eval_pipeline.py), by profile kind.
# Ablations switch one part of the default off: the RankParams fields they change.
PIPELINE: dict[str, tuple[str, dict[str, float]]] = {
    "default": ("examples", {}),
    "no-prf": ("examples", {"pseudo_weight": 0.0}),
    "no-dislikes": ("examples", {"dislike_weight": 0.0}),
    "no-holdback": ("examples", {"near_duplicate": 2.0}),
    "keywords": ("keywords", {}),
}
# Keyword-only baselines: the keywords as one pseudo-document standing in for the examples.
KEYWORD_BASELINES = {
    "sanity-kw": ("arxiv-sanity-lite, keywords only", svm_scores),
    "centroid-kw": ("tf-idf centroid, keywords only", centroid_scores),
}


def _report(label: str, ndcg: float, ap: float, fb: float, t1: float, extra: str) -> None:
    ref = BASELINES.get(label)
    shown = f"{ref[0]:.3f} {ref[1]:.3f} {ref[2]:.3f}" if ref else "-"
    print(
        f"{label:40} {ndcg:8.3f} {ap:6.3f} {fb:16.3f}   {shown}   "
        f"({time.perf_counter() - t1:.0f} s){extra}",
        flush=True,
    )


def keyword_setup(split: Split) -> tuple[Features, list[tuple[str, int, list[int]]]]:
    """The sanity features with one keyword pseudo-document per category appended to the
    history; each subscriber's only "example" is its category's pseudo-document."""
    from eval_pipeline import CATEGORY_NAMES

    f = sanity_features(split)
    names = [" ".join(CATEGORY_NAMES[c]) for c in CATEGORIES]
    pseudo = f.vectorizer.transform(names)
    n = f.history.shape[0]
    history = sparse.vstack([f.history, pseudo]).tocsr()
    row = {c: n + i for i, c in enumerate(CATEGORIES)}
    subs = [(c, s, [row[c]]) for c, s, _ in profiles(split)]
    return Features(f.vectorizer, history, f.days), subs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    every = [*METHODS, *PIPELINE, *KEYWORD_BASELINES, "ceiling"]
    default_methods = "sanity,centroid,default,keywords,sanity-kw,centroid-kw"
    parser.add_argument(
        "--methods",
        default=default_methods,
        help=f"comma-separated, from: {', '.join(every)}",
    )
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
    import eval_pipeline  # imports this module: loaded here, not at the top

    cache: dict[Callable[[Split], Features], Features] = {}
    print(f"{'method':40} {'nDCG@10':>8} {'MAP':>6} {'nDCG@10 fb 6-15':>16}   reference")
    with eval_pipeline.workspace(split) as pipe:
        for key in args.methods.split(","):
            t1 = time.perf_counter()
            extra = ""
            if key in PIPELINE:
                label = f"{key} (digest.service.pipeline)"
                kind, changes = PIPELINE[key]
                make_profile = (
                    eval_pipeline.with_examples
                    if kind == "examples"
                    else eval_pipeline.with_keywords
                )
                stats: dict[str, float] = {}
                params = dataclasses.replace(DEFAULT, **changes)
                ndcg, ap, fb = eval_pipeline.evaluate(pipe, make_profile, stats, params)
                extra = (
                    f" vocabulary fit {pipe.fit_seconds:.1f} s; one day for 42 subscribers "
                    f"(models + scores + order) {stats['day_seconds']:.2f} s median"
                )
            elif key == "ceiling":
                label = "ceiling: all history labels (not a ranker)"
                if sanity_features not in cache:
                    cache[sanity_features] = sanity_features(split)
                ndcg, ap, fb = ceiling(split, cache[sanity_features])
            elif key in KEYWORD_BASELINES:
                label, scorer = KEYWORD_BASELINES[key]
                f, subs = keyword_setup(split)
                ndcg, ap, fb = evaluate(label, split, f, scorer, subs)
            else:
                label, make, scorer = METHODS[key]
                if make not in cache:
                    cache[make] = make(split)
                ndcg, ap, fb = evaluate(label, split, cache[make], scorer)
            _report(label, ndcg, ap, fb, t1, extra)
    for label, (n, m, fb) in BASELINES.items():
        if "not run" in label:
            print(f"{label:40} {n:8.3f} {m:6.3f} {fb:16.3f}   (EVAL.md figure)")
    print("reproduce: python bench/eval_ranking.py --methods " + args.methods)
    return 0


if __name__ == "__main__":
    sys.exit(main())
