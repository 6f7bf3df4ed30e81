"""The shared, batched path of a run ranks every reader exactly as ranking that reader alone.

A run lays the listing out once (digest.rank.listing), scores a batch of readers in one product
and plans them from batched queries. Over 300 varied profiles on the real 1,504-item listing,
each reader's papers, order, scores and reasons must be those of a fresh ranker given only that
reader: their candidates laid out on their own, their model's scores computed for them alone.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from digest.config import Config, SourceConfig
from digest.ingest.run import ingest_all
from digest.rank import Ranker
from digest.service.context import prepare, prepare_models
from digest.service.picking import candidates, pick_papers
from digest.store import Store
from tests.profile_mix import LISTING, corpus_rows, phrase_pool, profiles, store_corpus

pytestmark = pytest.mark.shared_data
NOW = datetime(2024, 11, 28, 12, 0, tzinfo=UTC)


def test_a_batch_ranks_each_reader_as_if_ranked_alone(tmp_path: Path) -> None:
    rows = corpus_rows(4000)
    subs = tmp_path / "subscribers"
    subs.mkdir()
    texts = profiles(300, rows, seed=7)
    for i, text in enumerate(texts):
        (subs / f"r{i:03d}.toml").write_text(text)
    cfg = Config(
        data_dir=tmp_path / "data",
        subscribers_dir=subs,
        sources=[SourceConfig(name="arxiv", kind="arxiv-rss", url=LISTING.as_uri())],
    )
    store = Store(f"sqlite:///{tmp_path / 'digest.db'}")
    store.upgrade()
    store_corpus(store, rows)
    ingest_all(store, cfg, today=NOW.date())
    # Feedback for every fifth reader, so liked papers take part in models and reasons.
    rng = random.Random(3)
    ids = [r["id"] for r in rows]
    for i in range(0, 300, 5):
        for pid in rng.sample(ids, 4):
            store.set_feedback(
                f"reader{i:06d}@bench.example.org", pid, rng.choice(["like", "dislike"])
            )

    ctx = prepare(cfg, store, NOW)
    assert len(ctx.profiles) == 300 and not ctx.profile_errors
    prepare_models(ctx, ctx.profiles)
    alone = Ranker([], vocabulary=ctx.ranker.vocab)  # no listing laid out: each reader's own
    standing = store.standings({p.email.lower(): NOW.date() for p in ctx.profiles})
    compared = picked = 0
    for profile in ctx.profiles:
        email = profile.email.lower()
        shared, _ = pick_papers(ctx, profile, standing[email])
        pool = candidates(ctx, profile, standing[email])
        own = alone.rank(
            profile, pool, ctx.examples[email], ctx.feedback[email], model=ctx.models[email]
        )
        assert [(p.paper.id, p.reason) for p in shared] == [(p.paper.id, p.reason) for p in own]
        assert [p.score for p in shared] == pytest.approx([p.score for p in own], abs=1e-6)
        compared += 1
        picked += len(shared)
    assert compared == 300 and picked > 2000
    store.dispose()


def test_a_phrase_found_through_the_word_index_is_found_where_a_full_scan_finds_it() -> None:
    from digest.ingest import arxiv_rss
    from digest.rank.features import Vocabulary
    from digest.rank.listing import Listing
    from digest.rank.match import phrase
    from digest.text import fold

    src = SourceConfig(name="arxiv", kind="arxiv-rss", url=LISTING.as_uri())
    records = arxiv_rss.parse(LISTING.read_bytes(), src, NOW.date()).records
    vocab = Vocabulary.from_texts([r.id for r in records], [r.title for r in records])
    listing = Listing(records, vocab)
    rows = [{"title": r.title} for r in records]
    hostile = [
        "c++",
        "-based",
        "state-of-the-art",
        "",
        " ",
        "(",
        "schrödinger",
        "SCHRODINGER",
        "l2",
        "x",
        "a.b",
        "kv  cache",
        "über",
        "large language models.",
        "3d",
        "--",
        "μ",
    ]
    checked = hits = 0
    for term in phrase_pool(rows)[:1500] + hostile:
        rx, needle = phrase(term), fold(term)  # the pattern can only match where the needle is
        scan = [needle in t and rx.search(t) is not None for t in listing.folded]
        assert listing.matches(term).tolist() == scan, term
        checked, hits = checked + 1, hits + sum(scan)
    assert checked > 1000 and hits > 3000  # most phrases found somewhere: a real comparison
