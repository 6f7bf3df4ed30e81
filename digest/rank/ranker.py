"""Ranking: which of the day's new papers each subscriber sees, and why.

The corpus window gives one vocabulary (digest.rank.features) shared by everyone; each
subscriber has a small model (digest.rank.model) trained from their example papers, keywords and
feedback, kept in the database until one of those changes. Rules sit on top of the model's
calibrated score: `exclude` keywords drop a paper, followed authors pin it, categories and
literal keyword hits raise it, `trending_weight` blends in Hugging Face upvotes, and near-
duplicates are held back so one story cannot fill a digest. Every pick carries a one-line
reason built from what actually raised it: matching phrases, an author, a category, or the
example or liked paper it is closest to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from digest.profiles import Profile
from digest.rank.explain import Explainer
from digest.rank.features import RankPaper, StoredModel, Vocabulary
from digest.rank.match import FollowedAuthors, matchable, phrase
from digest.rank.model import Inputs, SubscriberModel, score_all, train
from digest.rank.params import DEFAULT, RankParams

# The boosts, the category prior and the near-duplicate threshold are in RankParams.

# A pick carries the caller's own paper type back, so mail can read its links and ids.
P = TypeVar("P", bound=RankPaper)


@dataclass
class Pick(Generic[P]):
    paper: P
    score: float
    reason: str
    signals: list[str] = field(default_factory=list)


@dataclass
class Ratings:
    """A subscriber's rated papers, as the store hands them over."""

    liked: Sequence[RankPaper] = field(default_factory=list)
    disliked: Sequence[RankPaper] = field(default_factory=list)


class Ranker:
    """One vocabulary for the run, and the subscribers' models trained on it."""

    def __init__(
        self,
        corpus: Sequence[RankPaper],
        vocabulary: Vocabulary | None = None,
        params: RankParams = DEFAULT,
    ) -> None:
        self.params = params
        self.vocab = vocabulary or Vocabulary(corpus)
        # Folded text per paper id: every subscriber's keywords run over the same listing.
        self._folded: dict[str, str] = {}

    def folded(self, paper: RankPaper) -> str:
        text = self._folded.get(paper.id)
        if text is None:
            text = self._folded[paper.id] = matchable(paper)
        return text

    # -- models -----------------------------------------------------------------------------

    def inputs(self, profile: Profile, examples: Sequence[RankPaper], fb: Ratings) -> Inputs:
        return Inputs(
            profile.interests,
            [p.id for p in examples],
            [p.id for p in fb.liked],
            [p.id for p in fb.disliked],
        )

    def model(
        self,
        profile: Profile,
        examples: Sequence[RankPaper],
        fb: Ratings | None = None,
        stored: StoredModel | None = None,
    ) -> tuple[SubscriberModel, bool]:
        """The subscriber's model, and whether it was (re)trained rather than reused."""
        fb = fb or Ratings()
        inputs = self.inputs(profile, examples, fb)
        fingerprint = inputs.fingerprint(self.vocab.version, self.params)
        if stored is not None and stored.fingerprint == fingerprint:
            try:
                return SubscriberModel.from_bytes(
                    stored.blob, fingerprint, self.vocab.version
                ), False
            except (ValueError, KeyError, OSError):
                pass  # unreadable: retrain below
        model = train(
            self.vocab,
            inputs,
            self.vocab.dense_rows(examples),
            self.vocab.dense_rows(fb.liked),
            self.vocab.dense_rows(fb.disliked),
            params=self.params,
        )
        return model, True

    def score_all(
        self, models: Sequence[SubscriberModel], papers: Sequence[RankPaper]
    ) -> np.ndarray:
        """Raw scores, subscribers x papers, in one product."""
        return score_all(models, self.vocab.dense_rows(papers))

    # -- ranking ----------------------------------------------------------------------------

    def rank(
        self,
        profile: Profile,
        candidates: Sequence[P],
        examples: Sequence[RankPaper] = (),
        fb: Ratings | None = None,
        *,
        model: SubscriberModel | None = None,
        raw: np.ndarray | None = None,
        limit: int | None = None,
        complete: bool = False,
    ) -> list[Pick[P]]:
        """The best candidates for this profile, best first, each with its reason.

        ``raw`` are the model's scores of ``candidates`` when the caller scored many
        subscribers at once. ``complete`` ranks every candidate, ignoring `min_score` and the
        limit (for the evaluation, which needs the whole order).
        """
        fb = fb or Ratings()
        params = self.params
        interests = profile.interests
        if model is None:
            model, _ = self.model(profile, examples, fb)
        excludes = [phrase(k) for k in interests.exclude]
        keep = [
            i
            for i, p in enumerate(candidates)
            if not any(rx.search(self.folded(p)) for rx in excludes)
        ]
        pool = [candidates[i] for i in keep]
        if not pool:
            return []
        dense = self.vocab.dense_rows(pool)
        raw = dense @ model.direction if raw is None else np.asarray(raw)[keep]
        calibrated = model.calibrate(raw)
        trending = _trending(pool) * profile.trending_weight
        keywords = [(k, phrase(k)) for k in interests.keywords]
        followed = FollowedAuthors(interests.authors)
        cats = set(interests.categories)
        scored: list[tuple[float, int, list[str], list[str], list[str]]] = []
        for i, p in enumerate(pool):
            text = self.folded(p)
            hit_kw = [k for k, rx in keywords if rx.search(text)]
            hit_auth = followed.hits(p.authors)
            hit_cat = [c for c in p.categories if c in cats or c.split(".")[0] in cats]
            # With no keywords, examples or feedback the model knows nothing, and the
            # categories are all the profile says: then they pick papers on their own.
            category_only = bool(hit_cat) and not model.trained
            prior = (
                (params.category_only_boost if category_only else params.category_prior)
                if hit_cat
                else 0.0
            )
            explicit = bool(hit_kw or hit_auth or category_only)
            if not (complete or explicit or calibrated[i] + prior >= profile.min_score):
                continue
            score = float(calibrated[i]) * (1 - profile.trending_weight) + float(trending[i])
            # The raw cosine breaks ties among papers above every background paper.
            score += 1e-3 * float(raw[i])
            score += params.keyword_boost * min(len(hit_kw), 2) / 2 if hit_kw else 0.0
            score += params.author_boost if hit_auth else 0.0
            score += prior
            scored.append((score, i, hit_kw, hit_auth, hit_cat))
        # Stable sort keeps listing order among equal scores.
        scored.sort(key=lambda s: -s[0])
        order = _hold_back_duplicates([s[1] for s in scored], dense, params.near_duplicate)
        by_index = {s[1]: s for s in scored}
        shown = limit or profile.max_papers
        if not complete:
            order = order[:shown]
        explain = Explainer(self.vocab, model, examples, fb.liked)
        picks = []
        for n, i in enumerate(order):
            score, _, hit_kw, hit_auth, hit_cat = by_index[i]
            # Past the digest's length (only with `complete`) nobody reads a reason.
            signals = (
                explain.signals(pool[i], dense[i], hit_kw, hit_auth, hit_cat) if n < shown else []
            )
            picks.append(Pick(pool[i], score, " · ".join(signals), signals))
        return picks


def _trending(pool: Sequence[RankPaper]) -> np.ndarray:
    """Upvotes as 0..1 on a log scale against the most upvoted candidate (0 without any)."""
    votes = np.array([math.log1p(max(p.upvotes or 0, 0)) for p in pool])
    top = votes.max() if len(votes) else 0.0
    return votes / top if top > 0 else np.zeros(len(pool))


def _hold_back_duplicates(order: list[int], dense: np.ndarray, threshold: float) -> list[int]:
    """Keep the order, but move a paper that nearly repeats an earlier pick behind the rest."""
    kept: list[int] = []
    held: list[int] = []
    for i in order:
        if kept and float(np.max(dense[kept] @ dense[i])) >= threshold:
            held.append(i)
        else:
            kept.append(i)
    return kept + held
