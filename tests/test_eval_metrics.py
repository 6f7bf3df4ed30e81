"""The metrics of bench/eval_ranking.py (EVAL.md): nDCG@10 with binary gains and MAP."""

from __future__ import annotations

import importlib.util
import math
import sys

import numpy as np

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))  # eval_ranking imports eval_data beside it
_spec = importlib.util.spec_from_file_location("eval_ranking", ROOT / "bench" / "eval_ranking.py")
assert _spec is not None and _spec.loader is not None
ev = importlib.util.module_from_spec(_spec)
sys.modules["eval_ranking"] = ev  # its dataclasses look their module up there
_spec.loader.exec_module(ev)


def test_ndcg_is_one_for_a_perfect_ranking_and_discounts_by_position() -> None:
    assert math.isclose(ev.ndcg_at_k(np.array([1.0, 1.0, 0.0, 0.0])), 1.0)
    # One relevant paper at rank 2 of 10: 1/log2(3) against the ideal 1/log2(2).
    assert math.isclose(ev.ndcg_at_k(np.array([0.0, 1.0] + [0.0] * 8)), 1 / math.log2(3))
    # Only the top 10 count; the ideal is capped at 10 relevant papers.
    twelve = np.array([1.0] * 12)
    assert math.isclose(ev.ndcg_at_k(twelve), 1.0)
    assert ev.ndcg_at_k(np.array([0.0] * 10 + [1.0])) == 0.0


def test_average_precision_over_the_full_listing() -> None:
    # Relevant at ranks 1 and 3: (1/1 + 2/3) / 2.
    assert math.isclose(ev.average_precision(np.array([1.0, 0.0, 1.0, 0.0])), (1 + 2 / 3) / 2)


def test_the_pipeline_evaluation_runs_end_to_end_on_a_small_split() -> None:
    """bench/eval_pipeline.py on a synthetic split: two topics, feedback written to the store."""
    from datetime import date, timedelta

    import eval_data
    import eval_pipeline

    topics = {
        "cs.RO": "robot grasping manipulation arm gripper legged locomotion",
        "cs.CV": "image segmentation pixels convolution detection vision",
    }
    words = {c: t.split() for c, t in topics.items()}
    rng = np.random.default_rng(0)

    def paper(i: int, day: date) -> object:
        cat = "cs.RO" if i % 3 == 0 else "cs.CV"
        text = " ".join(rng.choice(words[cat], 12))
        return eval_data.Paper(
            f"2604.{i:05d}", day, f"On {text[:30]}", text, ["A. Author"], frozenset([cat])
        )

    d0 = eval_data.D0
    history = [paper(i, d0 - timedelta(days=1 + i % 50)) for i in range(300)]
    days = [
        [paper(1000 + 40 * d + j, d0 + timedelta(days=d)) for j in range(40)] for d in range(15)
    ]
    pool = [i for i, p in enumerate(history) if "cs.RO" in p.labels]
    readers = [eval_data.Reader("cs.RO", 0, pool[:10], frozenset(["cs.RO"]))]
    split = eval_data.Split("synthetic", history, days, readers)
    with eval_pipeline.workspace(split) as pipe:
        stats: dict[str, float] = {}
        ndcg, ap, fb = eval_pipeline.evaluate(pipe, eval_pipeline.with_examples, stats).totals()
    assert ndcg > 0.9 and ap > 0.8 and fb > 0.9
    assert stats["retrained"] > 0
