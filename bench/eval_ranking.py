"""Ranking quality on the protocols of ../shared/EVAL.md, each method beside the baselines.

    python bench/eval_ranking.py                      every protocol, the default methods
    python bench/eval_ranking.py --quick              one replica per group (for iterating)
    python bench/eval_ranking.py --protocols p2,first --methods sanity,default
    python bench/eval_ranking.py --protocols p1 --methods default,no-prf,no-dislikes  (ablations)

Protocols (bench/eval_data.py builds them exactly as EVAL.md says):
- p1: research areas (14 arXiv categories, 10 examples, 15 daily listings);
- two: the two-areas variant (a pair of categories, 5 + 5 examples);
- p2: narrow themes inside a busy field (Hugging Face papers by `ai_keywords`, 8 examples, 12
  weekly listings among arXiv background papers);
- first: p2 as a new instance holds it (the newest 1,000 history papers);
- backfill: that first week after `digest ingest --backfill` (--backfill-days, default 30).

Per method: nDCG@10 and MAP without feedback, nDCG@10 with feedback (the reader likes the
relevant and dislikes the other papers of each listing's top 10; days 6-15, weeks 4-12), the
gain feedback brings, and a breakdown per category or theme. `default` and its ablations run
through the store and the pipeline `digest run` uses (bench/eval_pipeline.py); `keywords` (p1
only) gives each reader only its category's name, beside the baselines fed the same words;
`ceiling` (p1 only) is a classifier handed every hidden label.

Data: ../shared/data (or $DIGEST_SHARED_DATA).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import eval_data
import numpy as np
from eval_data import Paper, Reader, Split
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC

sys.path.insert(0, str(eval_data.ROOT))

from digest.rank.params import DEFAULT

if TYPE_CHECKING:  # eval_pipeline imports this module: only its type here
    from eval_pipeline import Pipeline

K = 10


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


@dataclass
class Result:
    """Per (reader, listing) figures, kept by group for the breakdown."""

    ndcg: dict[str, list[float]] = field(default_factory=dict)
    ap: dict[str, list[float]] = field(default_factory=dict)
    fb: dict[str, list[float]] = field(default_factory=dict)
    # nDCG@10 without feedback on the listings the feedback column is scored on: the gain
    # on the same days (the plain column averages every listing, the first five included).
    late: dict[str, list[float]] = field(default_factory=dict)
    extra: str = ""

    def add(self, into: dict[str, list[float]], group: str, value: float) -> None:
        into.setdefault(group, []).append(value)

    @staticmethod
    def mean(of: dict[str, list[float]], group: str | None = None) -> float:
        values = of.get(group, []) if group else [v for vs in of.values() for v in vs]
        return float(np.mean(values)) if values else float("nan")

    def totals(self) -> tuple[float, float, float]:
        return self.mean(self.ndcg), self.mean(self.ap), self.mean(self.fb)


class Tracker:
    """Scores one reader's rankings as EVAL.md says; the caller hands the rankings in."""

    def __init__(self, split: Split, result: Result) -> None:
        self.split, self.result = split, result

    def plain(self, reader: Reader, d: int, relevant_in_order: np.ndarray) -> None:
        if relevant_in_order.any():
            self.result.add(self.result.ndcg, reader.group, ndcg_at_k(relevant_in_order))
            self.result.add(self.result.ap, reader.group, average_precision(relevant_in_order))
            if d >= self.split.feedback_from:
                self.result.add(self.result.late, reader.group, ndcg_at_k(relevant_in_order))

    def rated(self, reader: Reader, d: int, relevant_in_order: np.ndarray) -> None:
        if d >= self.split.feedback_from and relevant_in_order.any():
            self.result.add(self.result.fb, reader.group, ndcg_at_k(relevant_in_order))


# -- the baselines ------------------------------------------------------------------------------


@dataclass
class Features:
    vectorizer: TfidfVectorizer
    history: sparse.csr_matrix
    days: list[sparse.csr_matrix]


def _text(p: Paper) -> str:
    return f"{p.title} {p.abstract} {' '.join(p.authors)}"


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
    hist = vec.fit_transform([_text(p) for p in split.history])
    days = [vec.transform([_text(p) for p in day]) for day in split.days]
    return Features(vec, hist.tocsr(), [d.tocsr() for d in days])


Scorer = Callable[
    [Features, list[int], list[sparse.csr_matrix], list[sparse.csr_matrix], sparse.csr_matrix],
    np.ndarray,
]


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
    x = sparse.vstack(blocks).tocsr()
    clf = LinearSVC(C=0.01, class_weight="balanced", max_iter=10000, tol=1e-6)
    clf.fit(x, np.concatenate(labels))
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
    split: Split, f: Features, scorer: Scorer, readers: list[Reader] | None = None
) -> Result:
    result = Result()
    track = Tracker(split, result)
    bounds = np.cumsum([0] + [m.shape[0] for m in f.days])
    everything = sparse.vstack(f.days).tocsr()
    for reader in readers or split.readers:
        relevant = [reader.relevant(day) for day in split.days]
        # Without feedback the model is the same every day: one fit scores every listing.
        all_scores = scorer(f, reader.examples, [], [], everything)
        for d, rel in enumerate(relevant):
            order = np.argsort(-all_scores[bounds[d] : bounds[d + 1]], kind="stable")
            track.plain(reader, d, rel[order])
        # With feedback: after each listing's top 10, like the relevant, dislike the rest.
        likes: list[sparse.csr_matrix] = []
        dislikes: list[sparse.csr_matrix] = []
        for d, (rel, listing) in enumerate(zip(relevant, f.days, strict=True)):
            order = np.argsort(-scorer(f, reader.examples, likes, dislikes, listing), kind="stable")
            track.rated(reader, d, rel[order])
            top = order[:K]
            if liked := [j for j in top if rel[j]]:
                likes.append(listing[liked])
            if disliked := [j for j in top if not rel[j]]:
                dislikes.append(listing[disliked])
    return result


def ceiling(split: Split, f: Features) -> Result:
    """Not a ranker: what a linear text classifier reaches when it is handed the hidden labels.

    Per group, a LinearSVC on the arxiv-sanity-lite features, trained on the true label of
    every history paper (14,309 labels, where a reader gives 10 examples). As EVAL.md gives it,
    its third column is the same model on the feedback days: it needs no feedback, and bounds
    what feedback can add to a linear model on these features. The replicas of a group would
    get the same ranking: one per group gives the same mean.
    """
    result = Result()
    track = Tracker(split, result)
    listing = sparse.vstack(f.days).tocsr()
    bounds = np.cumsum([0] + [m.shape[0] for m in f.days])
    for reader in (r for r in split.readers if r.seed == 0):
        labels = [reader.relevant(day) for day in split.days]
        history = reader.relevant(split.history)
        scores = _fit_all(f.history, history).decision_function(listing)
        for d, rel in enumerate(labels):
            in_order = rel[np.argsort(-scores[bounds[d] : bounds[d + 1]], kind="stable")]
            track.plain(reader, d, in_order)
            track.rated(reader, d, in_order)
    return result


def _fit_all(x: sparse.csr_matrix, y: np.ndarray) -> LinearSVC:
    return LinearSVC(C=0.1, class_weight="balanced").fit(x, y)


def keyword_setup(split: Split) -> tuple[Features, list[Reader]]:
    """The sanity features with one keyword pseudo-document per category appended to the
    history; each reader's only "example" is its category's pseudo-document."""
    from eval_pipeline import CATEGORY_NAMES

    f = sanity_features(split)
    groups = list(dict.fromkeys(r.group for r in split.readers))
    pseudo = f.vectorizer.transform([" ".join(CATEGORY_NAMES[g]) for g in groups])
    n = f.history.shape[0]
    row = {g: n + i for i, g in enumerate(groups)}
    readers = [dataclasses.replace(r, examples=[row[r.group]]) for r in split.readers]
    return Features(f.vectorizer, sparse.vstack([f.history, pseudo]).tocsr(), f.days), readers


# -- the run ------------------------------------------------------------------------------------

BASELINES: dict[str, tuple[str, Scorer]] = {
    "sanity": ("arxiv-sanity-lite", svm_scores),
    "centroid": ("tf-idf centroid", centroid_scores),
}
# Methods driven through the store and pipeline (bench/eval_pipeline.py), by profile kind.
# Ablations switch one part of the default off: the RankParams fields they change.
PIPELINE: dict[str, tuple[str, dict[str, float]]] = {
    "default": ("examples", {}),
    "no-prf": ("examples", {"pseudo_weight": 0.0}),
    "no-dislikes": ("examples", {"dislike_weight": 0.0, "term_dislike_weight": 0.0}),
    "term-dislikes-1": ("examples", {"term_dislike_weight": 1.0}),
    "term-dislikes-2": ("examples", {"term_dislike_weight": 2.0}),
    "dislikes-.25": ("examples", {"dislike_weight": 0.25}),
    "term-fb-.5": ("examples", {"term_feedback_weight": 0.5}),
    "term-fb-.7": ("examples", {"term_feedback_weight": 0.7}),
    "term-fb-1.5": ("examples", {"term_feedback_weight": 1.5}),
    "no-holdback": ("examples", {"near_duplicate": 2.0}),
    "keywords": ("keywords", {}),
}
KEYWORD_BASELINES: dict[str, tuple[str, Scorer]] = {
    "sanity-kw": ("arxiv-sanity-lite, keywords only", svm_scores),
    "centroid-kw": ("tf-idf centroid, keywords only", centroid_scores),
}
ONLY_P1 = {"keywords", "sanity-kw", "centroid-kw", "ceiling"}
PROTOCOLS = ("p1", "two", "p2", "first", "backfill")
DEFAULT_METHODS = "sanity,centroid,default,keywords,sanity-kw,centroid-kw,ceiling"
BACKFILL_DAYS = 30


def build(names: list[str], backfill_days: int, quick: bool, examples: int = 10) -> list[Split]:
    out: list[Split] = []
    p2: Split | None = None
    for name in names:
        if name == "p1":
            out.append(eval_data.protocol1(examples))
        elif name == "two":
            out.append(eval_data.two_areas())
        else:
            p2 = p2 or eval_data.protocol2()
            if name == "p2":
                out.append(p2)
            elif name == "first":
                out.append(eval_data.first_week(p2))
            else:
                out.append(eval_data.with_backfill(eval_data.first_week(p2), backfill_days))
    return [eval_data.quick(s) for s in out] if quick else out


def run_method(
    key: str, split: Split, pipe: Pipeline, cache: dict[str, Features]
) -> tuple[str, Result]:
    import eval_pipeline

    if key in PIPELINE:
        kind, changes = PIPELINE[key]
        make = eval_pipeline.with_examples if kind == "examples" else eval_pipeline.with_keywords
        stats: dict[str, float] = {}
        result = eval_pipeline.evaluate(pipe, make, stats, dataclasses.replace(DEFAULT, **changes))
        result.extra = (
            f"vocabulary fit {pipe.fit_seconds:.1f} s; one listing for {len(split.readers)} "
            f"readers {stats['day_seconds']:.2f} s median"
        )
        return f"{key} (digest pipeline)", result
    if "sanity" not in cache:
        cache["sanity"] = sanity_features(split)
    if key == "ceiling":
        return "ceiling: all history labels (not a ranker)", ceiling(split, cache["sanity"])
    if key in KEYWORD_BASELINES:
        label, scorer = KEYWORD_BASELINES[key]
        f, readers = keyword_setup(split)
        return label, evaluate(split, f, scorer, readers)
    label, scorer = BASELINES[key]
    return label, evaluate(split, cache["sanity"], scorer)


def _figure(x: float) -> str:
    """A reference figure, or "-" where EVAL.md gives none (NaN)."""
    return "-" if np.isnan(x) else f"{x:.3f}"


def _gain(label: str, plain: float, rated: float) -> str:
    # The ceiling takes no feedback: its two columns differ only by the days they cover.
    return "-" if "not a ranker" in label else f"{rated - plain:+.3f}"


def report_split(split: Split, rows: list[tuple[str, Result, float]]) -> None:
    unit = (
        "days 6-15" if split.unit == "day" else f"weeks {split.feedback_from + 1}-{len(split.days)}"
    )
    print(f"{'method':44} {'nDCG@10':>8} {'MAP':>6} {'fb ' + unit:>16} {'gain':>6}   reference")
    for label, result, seconds in rows:
        n, m, fb = result.totals()
        ref = split.reference.get(label)
        shown = " ".join(_figure(x) for x in ref) if ref else "-"
        extra = f"; {result.extra}" if result.extra else ""
        gain = _gain(label, n, fb)
        print(
            f"{label:44} {n:8.3f} {m:6.3f} {fb:16.3f} {gain:>6}   {shown}   "
            f"({seconds:.0f} s{extra})"
        )
    for label, (n, m, fb) in split.reference.items():
        if "not run" in label:
            print(f"{label:44} {n:8.3f} {_figure(m):>6} {fb:16.3f}   (EVAL.md figure)")
    # The breakdown: nDCG@10 without / with feedback per group, methods side by side.
    groups = list(dict.fromkeys(r.group for r in split.readers))
    shown_rows = [(label, r) for label, r, _ in rows if r.ndcg]
    print(
        f"\n  by {'category' if split.unit == 'day' else 'theme'} (nDCG@10 / the same on the "
        "feedback column's listings / with feedback):"
    )
    print(
        "  " + f"{'':30}" + "".join(f"{label.split(' (')[0][:17]:>19}" for label, _ in shown_rows)
    )
    for g in groups:
        cells = "".join(
            f"{Result.mean(r.ndcg, g):7.3f}/{Result.mean(r.late, g):.3f}/{Result.mean(r.fb, g):.3f}"
            for _, r in shown_rows
        )
        print(f"  {g[:30]:30}{cells}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    every = [*BASELINES, *PIPELINE, *KEYWORD_BASELINES, "ceiling"]
    parser.add_argument("--methods", default=DEFAULT_METHODS, help=f"from: {', '.join(every)}")
    parser.add_argument(
        "--protocols", default=",".join(PROTOCOLS), help=f"from: {', '.join(PROTOCOLS)}"
    )
    parser.add_argument("--backfill-days", type=int, default=BACKFILL_DAYS)
    parser.add_argument("--quick", action="store_true", help="one replica per group")
    parser.add_argument(
        "--p1-examples",
        type=int,
        default=10,
        help="a diagnostic: protocol 1 with this many examples per reader (EVAL.md: 10)",
    )
    args = parser.parse_args(argv)
    for path in (eval_data.ARXIV, eval_data.HF):
        if not path.exists():
            print(f"missing {path}", file=sys.stderr)
            return 1
    import eval_pipeline

    start = time.perf_counter()
    summary: list[str] = []
    for split in build(args.protocols.split(","), args.backfill_days, args.quick, args.p1_examples):
        print(f"\n== {split.describe()}", flush=True)
        rows: list[tuple[str, Result, float]] = []
        cache: dict[str, Features] = {}
        p1 = split.name.startswith("protocol 1")
        methods = [m for m in args.methods.split(",") if p1 or m not in ONLY_P1]
        with eval_pipeline.workspace(split) as pipe:
            for key in methods:
                t0 = time.perf_counter()
                label, result = run_method(key, split, pipe, cache)
                rows.append((label, result, time.perf_counter() - t0))
        report_split(split, rows)
        for label, result, _ in rows:
            n, _m, fb = result.totals()
            gain, same = _gain(label, n, fb), _gain(label, Result.mean(result.late), fb)
            summary.append(
                f"{split.name[:34]:34} {label[:40]:40} {n:.3f} {fb:.3f} {gain:>6} {same:>6}"
            )
    print(
        "\nsummary: protocol, method, nDCG@10, with feedback, gain, gain on the same days "
        "(against nDCG@10 without feedback on the feedback column's listings)"
    )
    print("\n".join(summary))
    print(f"\nwhole run {time.perf_counter() - start:.0f} s")
    quick = " --quick" if args.quick else ""
    if args.p1_examples != 10:
        quick += f" --p1-examples {args.p1_examples}"
    print(
        f"reproduce: python bench/eval_ranking.py --protocols {args.protocols} --methods "
        f"{args.methods} --backfill-days {args.backfill_days}{quick}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
