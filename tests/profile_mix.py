"""Real papers and a realistic mix of subscriber profiles drawn from them, for bench/cycle.py
and the tests that compare ranking paths over many readers. The corpus is the labelled arXiv set
in ../shared/data, dated into the days before the real 1,504-item listing of 2024-11-28; the
profiles mix keywords only, 3-10 example papers from one area, followed authors, excludes,
categories, max_papers 5-25, and now and then a min_score or a trending weight."""

from __future__ import annotations

import gzip
import itertools
import json
import random
import re
from collections import Counter
from datetime import date, timedelta
from typing import Any

from digest.record import PaperRecord
from digest.store import Store
from tests.conftest import SHARED

LABELLED = SHARED / "labelled" / "arxiv_daily_2025-03-18_to_2026-07-01_dedup.jsonl.gz"
LISTING = SHARED / "arxiv_rss" / "rss_arxiv_all-archives_2024-11-28.xml"
LISTING_DAY = date(2024, 11, 28)

STOP = frozenset(
    re.findall(
        r"\w+",
        """a an and are as at be by for from in into is it of on or that the this to with via
        using towards toward we our its their can not no do does than then over under between
        through based new how what when why which your you beyond across without within""",
    )
)


def phrase_pool(rows: list[dict[str, Any]]) -> list[str]:
    """Keywords a reader would type: the corpus titles' most frequent bigrams and long words."""
    bigrams: Counter[str] = Counter()
    words: Counter[str] = Counter()
    for r in rows:
        toks = re.findall(r"[a-z][a-z-]+", r["title"].lower())
        for a, b in itertools.pairwise(toks):
            if a not in STOP and b not in STOP:
                bigrams[f"{a} {b}"] += 1
        words.update(t for t in toks if len(t) >= 7 and t not in STOP)
    return [p for p, _ in bigrams.most_common(3000)] + [w for w, _ in words.most_common(1000)]


def profiles(n: int, rows: list[dict[str, Any]], seed: int = 0) -> list[str]:
    """N profile files' text: a mix of the kinds of reader the issue names."""
    rng = random.Random(seed)
    pool = phrase_pool(rows)
    weights = [1 / (i + 10) for i in range(len(pool))]  # popular phrases recur, as in life
    by_cat: dict[str, list[str]] = {}
    authors: list[str] = []
    for r in rows:
        for c in r["arxiv_categories"][:1]:
            by_cat.setdefault(c, []).append(r["id"])
        if isinstance(r["authors"], list):
            # The labelled set has stray fragments (":") among its names; a reader follows people.
            authors += [a for a in r["authors"][:2] if len(re.findall(r"[^\W\d_]", a)) >= 3]
    cats = [c for c, ids in by_cat.items() if len(ids) >= 30]
    out = []
    for i in range(n):
        kind = rng.choices(
            ["keywords", "examples", "authors", "categories", "all"], [3, 3, 1, 1, 2]
        )[0]
        lines = [
            f'email = "reader{i:06d}@bench.example.org"',
            f'name = "Reader {i}"',
            f"max_papers = {rng.randint(5, 25)}",
            *([f"min_score = {rng.choice([0.5, 0.8, 0.95])}"] if rng.random() < 0.1 else []),
            *([f"trending_weight = {rng.choice([0.1, 0.3])}"] if rng.random() < 0.05 else []),
            "[interests]",
        ]
        area = rng.choice(cats)
        if kind in ("keywords", "authors", "categories", "all"):
            kws = set(rng.choices(pool, weights, k=rng.randint(2, 6)))
            lines.append("keywords = " + json.dumps(sorted(kws)))
        if kind in ("examples", "all"):
            lines.append("papers = " + json.dumps(rng.sample(by_cat[area], rng.randint(3, 10))))
        if kind in ("authors", "all"):
            lines.append("authors = " + json.dumps(rng.sample(authors, rng.randint(1, 3))))
        if kind in ("categories", "all"):
            lines.append("categories = " + json.dumps([area]))
        if kind == "all" or rng.random() < 0.1:
            lines.append(
                "exclude = " + json.dumps(rng.sample(["survey", "benchmark", "review"], 1))
            )
        out.append("\n".join(lines) + "\n")
    return out


def corpus_rows(n: int) -> list[dict[str, Any]]:
    """The newest n labelled papers."""
    with gzip.open(LABELLED, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    rows.sort(key=lambda r: (r["first_seen_date"], r["id"]))
    return rows[-n:]


def store_corpus(store: Store, rows: list[dict[str, Any]]) -> None:
    """Dated into the 85 days before the listing's lookback window, as the `arxiv` source's
    earlier days: what a running instance would have stored."""
    last = LISTING_DAY - timedelta(days=4)
    span = 85
    records = []
    for i, r in enumerate(rows):
        day = last - timedelta(days=span - 1 - (i * span) // len(rows))
        records.append(
            PaperRecord(
                id=r["id"],
                title=" ".join(r["title"].split()),
                abstract=" ".join(r["abstract"].split()),
                source="arxiv",
                kind="arxiv-rss",
                announced=day,
                authors=list(r["authors"]) if isinstance(r["authors"], list) else [],
                categories=list(r["arxiv_categories"]),
                announce_type="new",
            )
        )
    for start in range(0, len(records), 2000):
        store.upsert_papers(records[start : start + 2000])
