"""The evaluation splits: those of ../shared/EVAL.md, built exactly as it specifies, and two of
our own from its protocol 2 (a first week, and a first week after a backfill).

- `protocol1()`: research areas. 14 arXiv categories, 3 replicas, 10 examples each, the listing of
  each of 15 announcement days after D0 = 2026-04-13; feedback scored on days 6-15.
- `two_areas()`: the same days, each reader following a pair of categories (5 + 5 examples).
- `protocol2()`: narrow themes inside a busy field. Hugging Face daily papers labelled by their
  `ai_keywords`, among a sample of arXiv background papers; 14 themes, 3 replicas, 8 examples; 12
  weekly listings after D0 = 2026-03-02; feedback scored on weeks 4-12.
- `first_week(split)`: protocol 2 as a new instance sees it, the history cut to its newest 1,000
  papers and the readers' example papers.
- `with_backfill(split, days)`: that first week after `digest ingest --backfill DAYS`: the
  arXiv papers of the days before D0 join the corpus (vocabulary, background), never the pools.

Every split is the same shape: papers carry hidden labels (categories, or the themes they match),
and a reader is relevant to a paper when they share one. The rankers never see the labels.
"""

from __future__ import annotations

import ast
import functools
import gzip
import json
import os
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DIGEST_SHARED_DATA", ROOT.parent / "shared" / "data"))
ARXIV = SHARED / "labelled" / "arxiv_daily_2025-03-18_to_2026-07-01_dedup.jsonl.gz"
HF = SHARED / "hf_daily_papers" / "hf_daily_papers_2024-05-27_to_2026-08-21_flat.jsonl.gz"

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
PAIRS = [
    ("cs.RO", "cs.SD"),
    ("cs.GR", "cs.CR"),
    ("cs.IR", "cs.MA"),
    ("cs.HC", "cs.IT"),
    ("cs.CY", "cs.GT"),
    ("eess.IV", "cs.SE"),
    ("cs.LG", "cs.MM"),
]
REPLICAS = (0, 1, 2)
EVAL_DAYS = 15

D0_THEMES = date(2026, 3, 2)
THEMES = {
    "video generation": ["video generation", "text-to-video", "video diffusion"],
    "mixture of experts": ["mixture-of-experts", "mixture of experts", "moe"],
    "world models": ["world model"],
    "retrieval-augmented generation": ["retrieval-augmented", "retrieval augmented", "rag"],
    "image editing": ["image editing"],
    "flow matching": ["flow matching", "rectified flow"],
    "reward models": ["reward hacking", "reward model"],
    "vision-language-action models": ["vision-language-action", "vla"],
    "3d generation": ["3d generation", "3d gaussian", "gaussian splatting", "nerf"],
    "speech": ["speech", "text-to-speech", "tts", "asr", "automatic speech recognition"],
    "gui agents": ["gui agent", "web agent", "computer-use"],
    "quantization": ["quantization", "low-bit"],
    "kv cache": ["kv cache", "key-value cache"],
    "code generation": ["code generation", "code llm", "software engineering"],
}
WEEKS = 12
FIRST_WEEK_CORPUS = 1000


@dataclass
class Paper:
    id: str
    day: date
    title: str
    abstract: str
    authors: list[str]
    labels: frozenset[str]


@dataclass
class Reader:
    group: str  # what the breakdown groups by: a category, a pair, a theme
    seed: int
    examples: list[int]  # indices into the split's history
    wants: frozenset[str]  # relevant: a paper carrying any of these labels

    def relevant(self, papers: list[Paper]) -> np.ndarray:
        return np.array([bool(p.labels & self.wants) for p in papers], dtype=float)


@dataclass
class Split:
    name: str
    history: list[Paper]
    days: list[list[Paper]]  # the evaluation listings (days or weeks)
    readers: list[Reader] = field(default_factory=list)
    feedback_from: int = 5  # feedback nDCG over listings from this index on
    unit: str = "day"
    # (nDCG@10, MAP, with feedback) of the reference implementation, by baseline.
    reference: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    note: str = ""

    def describe(self) -> str:
        sizes = [len(d) for d in self.days]
        return (
            f"{self.name}: history {len(self.history)} papers; {len(self.days)} {self.unit}s of "
            f"{min(sizes)}-{max(sizes)} papers ({sum(sizes)} in all); {len(self.readers)} "
            f"readers{'; ' + self.note if self.note else ''}"
        )


def _ws(text: str | None) -> str:
    return " ".join((text or "").split())


@functools.lru_cache(maxsize=1)
def arxiv_rows() -> tuple[dict[str, Any], ...]:
    """Every labelled arXiv paper as stored, sorted by (first_seen_date, id) as EVAL.md says."""
    with gzip.open(ARXIV, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    rows.sort(key=lambda r: (r["first_seen_date"], r["id"]))
    return tuple(rows)


def _arxiv_paper(r: dict[str, Any], labels: frozenset[str]) -> Paper:
    return Paper(
        id=r["id"],
        day=date.fromisoformat(r["first_seen_date"]),
        title=_ws(r["title"]),
        abstract=_ws(r["abstract"]),
        authors=list(r["authors"]) if isinstance(r["authors"], list) else [],
        labels=labels,
    )


def _by_category() -> tuple[list[Paper], list[list[Paper]]]:
    papers = [_arxiv_paper(r, frozenset(r["arxiv_categories"])) for r in arxiv_rows()]
    history = [p for p in papers if D0 - timedelta(days=90) <= p.day < D0]
    eval_dates = sorted({p.day for p in papers if p.day >= D0})[:EVAL_DAYS]
    by_day: dict[date, list[Paper]] = {d: [] for d in eval_dates}
    for p in papers:
        if p.day in by_day:
            by_day[p.day].append(p)
    return history, [by_day[d] for d in eval_dates]


def _pool(history: list[Paper], label: str, since: date) -> list[int]:
    return [i for i, p in enumerate(history) if p.day >= since and label in p.labels]


def protocol1(examples: int = 10) -> Split:
    """EVAL.md's protocol 1; ``examples`` other than its 10 is a diagnostic of ours (how much
    more random papers of the area would give, against what feedback gives)."""
    history, days = _by_category()
    recent = D0 - timedelta(days=60)
    readers = []
    for cat in CATEGORIES:
        pool = _pool(history, cat, recent)
        for seed in REPLICAS:
            n = min(examples, len(pool))
            picks = np.random.default_rng(seed).choice(pool, n, replace=False)
            readers.append(Reader(cat, seed, [int(i) for i in picks], frozenset([cat])))
    name = "" if examples == 10 else f", {examples} examples each (not EVAL.md's 10)"
    return Split(
        f"protocol 1 (research areas){name}",
        history,
        days,
        readers,
        # EVAL.md's figures are of its 10 examples (and it gives no MAP for the ceiling).
        reference={
            "arxiv-sanity-lite": (0.322, 0.274, 0.375),
            "tf-idf centroid": (0.306, 0.265, 0.356),
            "sentence-embedding cosine (not run)": (0.272, 0.239, 0.286),
            "ceiling: all history labels (not a ranker)": (0.458, float("nan"), 0.449),
        }
        if examples == 10
        else {},
    )


def two_areas() -> Split:
    history, days = _by_category()
    recent = D0 - timedelta(days=60)
    readers = []
    for a, b in PAIRS:
        pool_a, pool_b = _pool(history, a, recent), _pool(history, b, recent)
        for seed in REPLICAS:
            rng = np.random.default_rng(seed)
            picks = [*rng.choice(pool_a, 5, replace=False), *rng.choice(pool_b, 5, replace=False)]
            readers.append(Reader(f"{a}+{b}", seed, [int(i) for i in picks], frozenset([a, b])))
    return Split(
        "two areas",
        history,
        days,
        readers,
        reference={
            "arxiv-sanity-lite": (0.261, 0.212, 0.361),
            "tf-idf centroid": (0.252, 0.201, 0.328),
        },
    )


def _literal_list(value: Any) -> list[str]:
    """`ai_keywords` and `authors` arrive as lists or as Python-literal strings of lists."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return []
    if not isinstance(value, list):
        return []
    return [str(v) for v in value]


def themes_of(keywords: list[str]) -> frozenset[str]:
    """The themes a paper is relevant to: a keyword equals a key, or contains a key of more
    than 4 characters."""
    kws = [k.lower() for k in keywords]
    return frozenset(
        theme
        for theme, keys in THEMES.items()
        if any(kw == key or (len(key) > 4 and key in kw) for kw in kws for key in keys)
    )


@functools.lru_cache(maxsize=1)
def hf_papers() -> tuple[Paper, ...]:
    """The kept Hugging Face papers: a non-empty `ai_keywords`, first occurrence of each id."""
    seen: set[str] = set()
    out = []
    with gzip.open(HF, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            keywords = _literal_list(r.get("ai_keywords"))
            if not keywords or r["id"] in seen:
                continue
            seen.add(r["id"])
            stamp = r.get("submittedOnDailyAt") or r.get("publishedAt") or r["file_date"]
            out.append(
                Paper(
                    id=r["id"],
                    day=date.fromisoformat(stamp[:10]),
                    title=_ws(r["title"]),
                    abstract=_ws(r.get("summary")),
                    authors=_literal_list(r.get("authors")),
                    labels=themes_of(keywords),
                )
            )
    return tuple(out)


def _background(hf_ids: set[str]) -> list[Paper]:
    """The 20 weeks from D0 - 8 weeks: each week's background papers sampled to 400, one
    generator shared by the weeks in order."""
    rng = np.random.default_rng(0)
    start = D0_THEMES - timedelta(weeks=8)
    rows = [r for r in arxiv_rows() if r["id"] not in hf_ids]
    out: list[Paper] = []
    for w in range(20):
        lo, hi = str(start + timedelta(weeks=w)), str(start + timedelta(weeks=w + 1))
        week = [r for r in rows if lo <= r["first_seen_date"] < hi]  # sorted already
        picks = rng.choice(len(week), min(400, len(week)), replace=False)
        out += [_arxiv_paper(week[int(i)], frozenset()) for i in sorted(picks)]
    return out


def protocol2() -> Split:
    hf = list(hf_papers())
    papers = sorted(hf + _background({p.id for p in hf}), key=lambda p: (p.day, p.id))
    history = [p for p in papers if p.day < D0_THEMES]
    weeks = [
        [
            p
            for p in papers
            if D0_THEMES + timedelta(weeks=w) <= p.day < D0_THEMES + timedelta(weeks=w + 1)
        ]
        for w in range(WEEKS)
    ]
    return Split(
        "protocol 2 (narrow themes)",
        history,
        weeks,
        _theme_readers(history, range(len(history))),
        feedback_from=3,
        unit="week",
        reference={
            "arxiv-sanity-lite": (0.567, 0.468, 0.593),
            "tf-idf centroid": (0.556, 0.454, 0.580),
        },
    )


def _theme_readers(history: list[Paper], allowed: range) -> list[Reader]:
    since = D0_THEMES - timedelta(days=180)
    readers = []
    for theme in THEMES:
        pool = [i for i in allowed if history[i].day >= since and theme in history[i].labels]
        for seed in REPLICAS:
            picks = np.random.default_rng(seed).choice(pool, 8, replace=False)
            readers.append(Reader(theme, seed, [int(i) for i in picks], frozenset([theme])))
    return readers


def first_week(full: Split) -> Split:
    """Protocol 2 as a new instance holds it: the newest 1,000 history papers, and the
    readers' example papers, which `digest` looks up and adds to the corpus of a reader's
    own accord. The examples are the protocol's own: the newest 1,000 span two weeks and hold
    0-12 papers of a theme (none of kv cache), too few to draw 8 from, and the same readers
    let the figure be set beside the full history's."""
    n = len(full.history)
    wanted = {i for r in full.readers for i in r.examples}
    keep = sorted(set(range(max(0, n - FIRST_WEEK_CORPUS), n)) | wanted)
    at = {old: new for new, old in enumerate(keep)}
    return replace(
        full,
        name="protocol 2, first-week corpus",
        history=[full.history[i] for i in keep],
        readers=[replace(r, examples=[at[i] for i in r.examples]) for r in full.readers],
        reference={},
        note=f"the newest {FIRST_WEEK_CORPUS} history papers and {len(keep) - FIRST_WEEK_CORPUS}"
        " older example papers",
    )


def with_backfill(first: Split, days: int) -> Split:
    """The first-week split after a backfill of ``days``: every labelled arXiv paper first
    seen in the days before D0 (what the arXiv API returns for the field's categories: the
    labelled dump is mostly cs.CV, cs.CL and cs.AI) joins the history before the first-week papers.
    The readers and their examples stay as they were: the backfill is corpus, not anyone's
    reading. A Hugging Face paper it brings keeps its hidden themes."""
    # A paper the listings hold is not backfilled twice: Hugging Face dates a paper by its
    # day on the daily page, often days after arXiv first listed it.
    known = {p.id for p in first.history} | {p.id for day in first.days for p in day}
    themes = {p.id: p.labels for p in hf_papers()}
    since = D0_THEMES - timedelta(days=days)
    extra = [
        _arxiv_paper(r, themes.get(r["id"], frozenset()))
        for r in arxiv_rows()
        if str(since) <= r["first_seen_date"] < str(D0_THEMES) and r["id"] not in known
    ]
    history = extra + first.history
    offset = len(extra)
    readers = [replace(r, examples=[i + offset for i in r.examples]) for r in first.readers]
    return replace(
        first,
        name=f"protocol 2, first week + {days}-day backfill",
        history=history,
        readers=readers,
        note=f"{len(extra)} backfilled papers before the first-week {len(first.history)}",
    )


def quick(split: Split) -> Split:
    """One replica per group: a third of the work, for iterating (not for the note)."""
    return replace(split, readers=[r for r in split.readers if r.seed == 0])
