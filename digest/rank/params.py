"""The ranking's tunable numbers, in one place: the defaults are what bench/eval_ranking.py
measured best (bench/README.md); an ablation passes its own RankParams instead of patching
module constants. A stored model remembers the parameters it was trained with (its
fingerprint), so changing them retrains it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class RankParams:
    # Rocchio weight of the mean disliked paper against the mean positive: in the dense
    # direction, and in the sparse part's rated terms.
    dislike_weight: float = 0.5
    term_dislike_weight: float = 0.5
    # The rated papers' terms (digest.rank.sparse_part) against the dense direction's 1.
    term_feedback_weight: float = 1.0
    # Pseudo-relevance feedback: this many corpus papers, weighted this much against the rest.
    pseudo_positives: int = 100
    pseudo_weight: float = 0.3
    # Background papers sampled to calibrate a model's scores into percentiles.
    background: int = 2000
    # Boosts on the calibrated score (0..1, a percentile of recent papers). A followed author's
    # paper is always picked: its boost exceeds anything else a paper can score (calibrated 1 +
    # keywords 0.5 + a category-only prior 0.3).
    author_boost: float = 2.0
    keyword_boost: float = 0.5
    # A category is a prior, not a trump: a few percentiles (also against `min_score`), unless
    # the profile has nothing else to rank by.
    category_prior: float = 0.05
    category_only_boost: float = 0.3
    # A pick this close (cosine) to an earlier one is moved behind the rest (2.0: never).
    near_duplicate: float = 0.9

    def key(self) -> str:
        """What a model's fingerprint records of these (the training ones only)."""
        return _key(self)


@functools.lru_cache(maxsize=16)
def _key(params: RankParams) -> str:
    # Asked twice for every reader's model (a fifth of a millisecond each way): the parameters
    # are frozen, so once per set of them.
    training = (
        "dislike_weight",
        "term_dislike_weight",
        "term_feedback_weight",
        "pseudo_positives",
        "pseudo_weight",
        "background",
    )
    return json.dumps({k: v for k, v in dataclasses.asdict(params).items() if k in training})


DEFAULT = RankParams()
