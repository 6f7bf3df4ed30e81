"""Ranking speed and memory on real papers: issue 4's targets.

    python bench/rank_speed.py [--corpus 20000] [--listing 1000] [--subscribers 10000]

From the labelled arXiv papers in ../shared/data/labelled (or $DIGEST_SHARED_DATA): the vocabulary
is fitted on a corpus of `--corpus` papers, every subscriber's model is trained (10 example
papers drawn from the corpus, plus 5 liked and 5 disliked papers for every second subscriber),
and a listing of the next `--listing` papers is scored for all subscribers at once. Reports:
- the vocabulary fit (once per corpus window, kept on disk between runs);
- (re)training one subscriber's model: median and 95th percentile over all subscribers;
- scoring the listing for all subscribers: projecting the listing (one sparse product) and the
  subscribers x papers score matrix (one dense product, and one sparse product for the models'
  sparse parts), median of 5 rounds;
- memory of the models: their arrays, and the process's peak resident size;
- for scale, the full `rank` (rules, near-duplicates, reasons) of one subscriber's digest.
Targets: scoring <= 2 s, retraining <= 50 ms median, models <= 500 MB for 10,000 subscribers.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from eval_data import ARXIV as DATA  # noqa: E402
from eval_data import arxiv_rows  # noqa: E402

from digest.profiles import Interests, Profile  # noqa: E402
from digest.rank import Ranker, Ratings  # noqa: E402
from digest.store.schema import Paper  # noqa: E402


def load(n: int) -> list[Paper]:
    """The last n papers, as the store would hold them."""
    return [
        Paper(
            id=r["id"],
            title=" ".join(r["title"].split()),
            abstract=" ".join(r["abstract"].split()),
            authors=r["authors"] if isinstance(r["authors"], list) else [],
            announced=date.fromisoformat(r["first_seen_date"]),
        )
        for r in arxiv_rows()[-n:]
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=int, default=20_000)
    parser.add_argument("--listing", type=int, default=1_000)
    parser.add_argument("--subscribers", type=int, default=10_000)
    args = parser.parse_args()
    if not DATA.exists():
        print(f"missing {DATA}", file=sys.stderr)
        return 1
    papers = load(args.corpus + args.listing)
    corpus, listing = papers[: args.corpus], papers[args.corpus :]
    print(f"corpus {len(corpus)} papers, listing {len(listing)}, {args.subscribers} subscribers")

    t0 = time.perf_counter()
    ranker = Ranker(corpus)
    fit = time.perf_counter() - t0
    print(f"vocabulary fit: {fit:.1f} s ({len(ranker.vocab.terms)} terms, once per window)")

    rng = np.random.default_rng(0)
    models = []
    # Traced from here: what the 10,000 models themselves hold, Python objects included.
    tracemalloc.start()
    train_ms = []
    for s in range(args.subscribers):
        picks = rng.choice(len(corpus), 20, replace=False)
        examples = [corpus[i] for i in picks[:10]]
        fb = Ratings()
        if s % 2:
            fb = Ratings([corpus[i] for i in picks[10:15]], [corpus[i] for i in picks[15:]])
        profile = Profile(
            email=f"s{s}@bench.example",
            interests=Interests(papers=[p.id for p in examples]),
        )
        t1 = time.perf_counter()
        model, _ = ranker.model(profile, examples, fb)
        train_ms.append((time.perf_counter() - t1) * 1000)
        models.append(model)
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    model_bytes = sum(
        m.direction.nbytes + m.quantiles.nbytes + m.terms.nbytes + m.weights.nbytes for m in models
    )
    sparse_terms = [len(m.terms) for m in models]
    print(
        f"retrain one subscriber: median {np.median(train_ms):.1f} ms, "
        f"p95 {np.percentile(train_ms, 95):.1f} ms (target <= 50 ms median); sparse parts: "
        f"{sum(1 for n in sparse_terms if n)} of {len(models)} models, "
        f"{np.mean([n for n in sparse_terms if n] or [0]):.0f} terms on average"
    )

    project_s, product_s = [], []
    for _ in range(5):
        ranker.vocab._extra.clear()  # every round transforms the listing from its text
        t2 = time.perf_counter()
        ranker.vocab.dense_rows(listing)
        t3 = time.perf_counter()
        # The dense product and the sparse parts' product, as a run scores (Ranker.score_all).
        scores = ranker.score_all(models, listing)
        t4 = time.perf_counter()
        project_s.append(t3 - t2)
        product_s.append(t4 - t3)
    total = np.median(np.add(project_s, product_s))
    print(
        f"score {len(listing)} papers x {len(models)} subscribers: median {total:.2f} s "
        f"(project listing {np.median(project_s):.2f} s + product {np.median(product_s):.2f} s; "
        f"matrix {scores.shape}) (target <= 2 s)"
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"models of {len(models)} subscribers: {held / 1e6:.1f} MB held "
        f"({model_bytes / 1e6:.1f} MB of it arrays) (target <= 500 MB); whole process peak "
        f"{rss / 1024:.0f} MB, most of it the 74,728-paper file and the vocabulary"
    )

    profile = Profile(email="one@bench.example", interests=Interests(papers=[corpus[0].id]))
    t5 = time.perf_counter()
    picks = ranker.rank(profile, listing, [corpus[0]], model=models[0], raw=scores[0])
    print(
        f"full rank of one digest (rules, near-duplicates, reasons): "
        f"{(time.perf_counter() - t5) * 1000:.0f} ms, {len(picks)} picks"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
