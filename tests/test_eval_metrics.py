"""The metrics of bench/eval_ranking.py (EVAL.md): nDCG@10 with binary gains and MAP."""

from __future__ import annotations

import importlib.util
import math
import sys

import numpy as np

from tests.conftest import ROOT

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
