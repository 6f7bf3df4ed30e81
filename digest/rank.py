"""Ranking: which of the day's new papers each subscriber sees, and why.

The corpus window gives one vocabulary (digest.rank_features) shared by everyone; each
subscriber has a small model (digest.rank_model) trained from their example papers, keywords and
feedback, kept in the database until one of those changes. Rules sit on top of the model's
calibrated score: `exclude` keywords drop a paper, followed authors pin it, categories and
literal keyword hits raise it, `trending_weight` blends in Hugging Face upvotes, and near-
duplicates are held back so one story cannot fill a digest. Every pick carries a one-line
reason built from what actually raised it: matching phrases, an author, a category, or the
example or liked paper it is closest to.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from digest.models import Paper, RankModel
from digest.profiles import Profile
from digest.rank_features import Vocabulary
from digest.rank_model import Inputs, SubscriberModel, score_all, train

# Boosts are on the scale of the calibrated score (0..1, a percentile of recent papers); an
# explicit signal from the profile should outrank a merely similar paper.
AUTHOR_BOOST = 1.0
KEYWORD_BOOST = 0.5
CATEGORY_BOOST = 0.3
# Papers at least this close (cosine in the dense space) to one already picked are near-
# duplicates: they wait until everything else that qualifies has been placed.
NEAR_DUPLICATE = 0.9
# "Because you liked X" is only said when X is at least this close to the pick (in the
# evaluation data, half of the top picks have an example paper at 0.35 or closer; a random
# listing paper's closest example sits at 0.085).
ANCHOR_SIMILARITY = 0.3
# In the sparse term space (small corpora) distinct papers share fewer terms, and the entropy
# weighting fades the shared ones, so cosines run far lower: two random papers meet at 0.002.
ANCHOR_SIMILARITY_SPARSE = 0.06
REASON_TERMS = 3
REASON_TITLE = 60


def _phrase(term: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w-])" + re.escape(term.lower()) + r"(?![\w-])")


def _author_key(name: str) -> tuple[str, str]:
    """(surname, first initial): "Tri Dao", "T. Dao" and "Dao, Tri" all follow the same person."""
    name = name.strip().lower()
    if "," in name:
        last, first = (x.strip() for x in name.split(",", 1))
    else:
        parts = name.replace(".", ". ").split()
        last, first = (parts[-1], parts[0]) if parts else ("", "")
    return last, first[:1]


@dataclass
class Pick:
    paper: Paper
    score: float
    reason: str
    signals: list[str] = field(default_factory=list)


@dataclass
class Ratings:
    """A subscriber's rated papers, as the store hands them over."""

    liked: list[Paper] = field(default_factory=list)
    disliked: list[Paper] = field(default_factory=list)


class Ranker:
    """One vocabulary for the run, and the subscribers' models trained on it."""

    def __init__(self, corpus: Sequence[Paper], vocabulary: Vocabulary | None = None) -> None:
        self.vocab = vocabulary or Vocabulary(corpus)

    # -- models -----------------------------------------------------------------------------

    def inputs(self, profile: Profile, examples: Sequence[Paper], fb: Ratings) -> Inputs:
        return Inputs(
            profile.interests,
            [p.id for p in examples],
            [p.id for p in fb.liked],
            [p.id for p in fb.disliked],
        )

    def model(
        self,
        profile: Profile,
        examples: Sequence[Paper],
        fb: Ratings | None = None,
        stored: RankModel | None = None,
    ) -> tuple[SubscriberModel, bool]:
        """The subscriber's model, and whether it was (re)trained rather than reused."""
        fb = fb or Ratings()
        inputs = self.inputs(profile, examples, fb)
        fingerprint = inputs.fingerprint(self.vocab.version)
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
        )
        return model, True

    def score_all(self, models: Sequence[SubscriberModel], papers: Sequence[Paper]) -> np.ndarray:
        """Raw scores, subscribers x papers, in one product."""
        return score_all(models, self.vocab.dense_rows(papers))

    # -- ranking ----------------------------------------------------------------------------

    def rank(
        self,
        profile: Profile,
        candidates: Sequence[Paper],
        examples: Sequence[Paper] = (),
        fb: Ratings | None = None,
        *,
        model: SubscriberModel | None = None,
        raw: np.ndarray | None = None,
        limit: int | None = None,
        complete: bool = False,
    ) -> list[Pick]:
        """The best candidates for this profile, best first, each with its reason.

        ``raw`` are the model's scores of ``candidates`` when the caller scored many
        subscribers at once. ``complete`` ranks every candidate, ignoring `min_score` and the
        limit (for the evaluation, which needs the whole order).
        """
        fb = fb or Ratings()
        interests = profile.interests
        if model is None:
            model, _ = self.model(profile, examples, fb)
        excludes = [_phrase(k) for k in interests.exclude]
        keep = [
            i
            for i, p in enumerate(candidates)
            if not any(rx.search(f"{p.title} {p.abstract}".lower()) for rx in excludes)
        ]
        pool = [candidates[i] for i in keep]
        if not pool:
            return []
        dense = self.vocab.dense_rows(pool)
        raw = dense @ model.direction if raw is None else np.asarray(raw)[keep]
        calibrated = model.calibrate(raw)
        trending = _trending(pool) * profile.trending_weight
        keywords = [(k, _phrase(k)) for k in interests.keywords]
        followed = {_author_key(a): a for a in interests.authors}
        cats = set(interests.categories)
        scored: list[tuple[float, int, list[str], list[str], list[str]]] = []
        for i, p in enumerate(pool):
            text = f"{p.title}. {p.abstract}".lower()
            hit_kw = [k for k, rx in keywords if rx.search(text)]
            hit_auth = [followed[k] for a in p.authors if (k := _author_key(a)) in followed]
            hit_cat = [c for c in p.categories if c in cats or c.split(".")[0] in cats]
            explicit = bool(hit_kw or hit_auth or hit_cat)
            if not (complete or explicit or calibrated[i] >= profile.min_score):
                continue
            score = float(calibrated[i]) * (1 - profile.trending_weight) + float(trending[i])
            # The raw cosine breaks ties among papers above every background paper.
            score += 1e-3 * float(raw[i])
            score += KEYWORD_BOOST * min(len(hit_kw), 2) / 2 if hit_kw else 0.0
            score += AUTHOR_BOOST if hit_auth else 0.0
            score += CATEGORY_BOOST if hit_cat else 0.0
            scored.append((score, i, hit_kw, hit_auth, hit_cat))
        # Stable sort keeps listing order among equal scores.
        scored.sort(key=lambda s: -s[0])
        order = _hold_back_duplicates([s[1] for s in scored], dense)
        by_index = {s[1]: s for s in scored}
        shown = limit or profile.max_papers
        if not complete:
            order = order[:shown]
        explain = _Explainer(self.vocab, model, examples, fb)
        picks = []
        for n, i in enumerate(order):
            score, _, hit_kw, hit_auth, hit_cat = by_index[i]
            # Past the digest's length (only with `complete`) nobody reads a reason.
            signals = (
                explain.signals(pool[i], dense[i], hit_kw, hit_auth, hit_cat) if n < shown else []
            )
            picks.append(Pick(pool[i], score, "; ".join(signals), signals))
        return picks


def _trending(pool: Sequence[Paper]) -> np.ndarray:
    """Upvotes as 0..1 on a log scale against the most upvoted candidate (0 without any)."""
    votes = np.array([math.log1p(max(p.upvotes or 0, 0)) for p in pool])
    top = votes.max() if len(votes) else 0.0
    return votes / top if top > 0 else np.zeros(len(pool))


def _hold_back_duplicates(order: list[int], dense: np.ndarray) -> list[int]:
    """Keep the order, but move a paper that nearly repeats an earlier pick behind the rest."""
    kept: list[int] = []
    held: list[int] = []
    for i in order:
        if kept and float(np.max(dense[kept] @ dense[i])) >= NEAR_DUPLICATE:
            held.append(i)
        else:
            kept.append(i)
    return kept + held


class _Explainer:
    """Builds the one-line reason of a pick from what raised it."""

    def __init__(
        self,
        vocab: Vocabulary,
        model: SubscriberModel,
        examples: Sequence[Paper],
        fb: Ratings,
    ) -> None:
        self.vocab = vocab
        self.model = model
        self._weights: np.ndarray | None = None
        self.anchors = [(p, "in your profile") for p in examples] + [
            (p, "you liked") for p in fb.liked
        ]
        self.anchor_rows = vocab.dense_rows([p for p, _ in self.anchors])

    def weights(self) -> np.ndarray:
        # Computed only when a pick needs it: a dense direction as one weight per term.
        if self._weights is None:
            self._weights = self.vocab.term_weights(self.model.direction)
        return self._weights

    def signals(
        self,
        paper: Paper,
        row: np.ndarray,
        hit_kw: list[str],
        hit_auth: list[str],
        hit_cat: list[str],
    ) -> list[str]:
        text = f"{paper.title}. {paper.abstract}".lower()
        terms = self.top_terms(paper, text) if self.model.trained else []
        out = []
        matched = _without_overlap([*hit_kw, *terms])
        if matched:
            out.append("matches: " + ", ".join(matched[:REASON_TERMS]))
        if hit_auth:
            out.append("author: " + ", ".join(dict.fromkeys(hit_auth)))
        if hit_cat:
            out.append("category: " + ", ".join(dict.fromkeys(hit_cat)))
        anchor = self.anchor(row)
        if anchor:
            out.append(anchor)
        if not out:
            out.append("similar to the papers in your profile")
        return out

    def anchor(self, row: np.ndarray) -> str:
        if not self.anchors:
            return ""
        sims = self.anchor_rows @ row
        best = int(np.argmax(sims))
        floor = ANCHOR_SIMILARITY if self.vocab.basis is not None else ANCHOR_SIMILARITY_SPARSE
        if sims[best] < floor:
            return ""
        paper, how = self.anchors[best]
        title = " ".join(paper.title.split())
        if len(title) > REASON_TITLE:
            title = title[: REASON_TITLE - 1].rstrip() + "…"
        return f"close to “{title}” ({how})"

    def top_terms(self, paper: Paper, text: str) -> list[str]:
        """The paper's terms that pushed its score up the most.

        Only terms that stand in the paper as written: the vectorizer also makes bigrams across
        sentence ends, which would read as nonsense in a reason.
        """
        x = self.vocab.sparse_rows([paper])
        cols, vals = x.indices, x.data
        contrib = vals * self.weights()[cols]
        out: list[str] = []
        for j in np.argsort(-contrib):
            if contrib[j] <= 0 or len(out) >= 2 * REASON_TERMS:
                break
            term = str(self.vocab.terms[cols[j]])
            if _phrase(term).search(text):
                out.append(term)
        return out


def _without_overlap(terms: list[str]) -> list[str]:
    """Drop terms already said by an earlier, longer one ("space models" after
    "state space models"), and let a phrase replace the single words it contains."""
    out: list[str] = []
    for term in terms:
        padded = f" {term} "
        if any(padded in f" {kept} " for kept in out):
            continue
        out = [kept for kept in out if f" {kept} " not in padded]
        out.append(term)
    return out
