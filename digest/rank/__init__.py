"""Ranking: a reader's papers, best first, each with the reason it is there.

Offers `Ranker`, `Pick`, `Ratings` (ranker), the vocabulary and features (features), a reader's
model (model), the explicit rules (match) and the why-line (explain). Imports the ground modules
only: papers are anything that fits `features.RankPaper` (the store's `Paper` does), so ranking
never imports the store.
"""

from __future__ import annotations

from digest.rank.ranker import Pick, Ranker, Ratings

__all__ = ["Pick", "Ranker", "Ratings"]
