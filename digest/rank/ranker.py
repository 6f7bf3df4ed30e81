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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
from scipy import sparse

from digest.profiles import Profile
from digest.rank.explain import Explainer
from digest.rank.features import RankPaper, StoredModel, Vocabulary
from digest.rank.listing import Listing
from digest.rank.match import FollowedAuthors
from digest.rank.model import Inputs, SubscriberModel, score_all, train_many
from digest.rank.params import DEFAULT, RankParams
from digest.rank.sparse_part import wanted

# The boosts, the category prior and the near-duplicate threshold are in RankParams.

# A pick carries the caller's own paper type back, so mail can read its links and ids.
P = TypeVar("P", bound=RankPaper)


@dataclass
class Pick(Generic[P]):
    paper: P
    score: float
    reason: str
    signals: list[str] = field(default_factory=list)
    # Where the email shows it: "" for the reader's own picks, or a section of its own
    # (digest.mail.render.SECTIONS).
    section: str = ""


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
        # The run's listing, laid out once for every subscriber (`use_listing`).
        self._listing: Listing[RankPaper] | None = None

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
        return self.models([(profile, examples, fb or Ratings(), stored)])[0]

    def models(
        self,
        readers: Sequence[tuple[Profile, Sequence[RankPaper], Ratings, StoredModel | None]],
    ) -> list[tuple[SubscriberModel, bool]]:
        """`model` for many readers: the stored models whose inputs are unchanged are reused,
        and the rest trained together (`train_many`: shared matrix products)."""
        out: list[tuple[SubscriberModel, bool] | None] = []
        todo: list[int] = []
        for profile, examples, fb, stored in readers:
            inputs = self.inputs(profile, examples, fb)
            fingerprint = inputs.fingerprint(self.vocab.version, self.params)
            if stored is not None and stored.fingerprint == fingerprint:
                try:
                    model = SubscriberModel.from_bytes(stored.blob, fingerprint, self.vocab.version)
                    out.append((model, False))
                    continue
                except (ValueError, KeyError, OSError):
                    pass  # unreadable: retrain below
            todo.append(len(out))
            out.append(None)
        batch = []
        term_rows = []
        vocab = self.vocab
        no_rows = sparse.csr_matrix((0, vocab.matrix.shape[1]), dtype=np.float32)
        for i in todo:
            profile, examples, fb, _ = readers[i]
            batch.append(
                (
                    self.inputs(profile, examples, fb),
                    vocab.dense_rows(examples),
                    vocab.dense_rows(fb.liked),
                    vocab.dense_rows(fb.disliked),
                )
            )
            # Term rows only for a reader whose model has a sparse part to make (see
            # digest.rank.sparse_part): most readers of a run have none.
            if wanted(len(examples), len(fb.liked) + len(fb.disliked)):
                term_rows.append(
                    (
                        vocab.sparse_rows(examples),
                        vocab.sparse_rows(fb.liked),
                        vocab.sparse_rows(fb.disliked),
                    )
                )
            else:
                term_rows.append((no_rows, no_rows, no_rows))
        trained = train_many(vocab, batch, params=self.params, term_rows=term_rows)
        for i, model in zip(todo, trained, strict=True):
            out[i] = (model, True)
        return [m for m in out if m is not None]

    def score_all(
        self, models: Sequence[SubscriberModel], papers: Sequence[RankPaper]
    ) -> np.ndarray:
        """Raw scores, subscribers x papers, in one product (and one for the sparse parts)."""
        terms = self.vocab.sparse_rows(papers) if any(len(m.terms) for m in models) else None
        return score_all(models, self.vocab.dense_rows(papers), terms)

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
        at: np.ndarray | None = None,
    ) -> list[Pick[P]]:
        """The best candidates for this profile, best first, each with its reason.

        ``raw`` are the model's scores of ``candidates`` when the caller scored many
        subscribers at once. ``complete`` ranks every candidate, ignoring `min_score` and the
        limit (for the evaluation, which needs the whole order). ``at`` are the candidates'
        positions in the listing of `use_listing`, when the caller has them (a run does).
        """
        fb = fb or Ratings()
        params = self.params
        interests = profile.interests
        if model is None:
            model, _ = self.model(profile, examples, fb)
        listing, at = self._listing_of(candidates, at)
        excluded = _matching_any(listing, at, interests.exclude)
        keep = np.flatnonzero(~excluded)
        if not len(keep):
            return []
        at = at[keep]
        # The listing's rows, read through `at`: gathering every candidate's row for each
        # reader (a megabyte) cost more than the few rows ranking reads.
        rows = listing.dense
        if raw is None:
            raw = rows[at] @ model.direction
            if len(model.terms):
                raw = raw + listing.term_rows[at][:, model.terms] @ model.weights
        else:
            raw = np.asarray(raw)[keep]
        # Every term below in float64, in the order the per-paper formula always added them,
        # so the arrays give the very scores (and ties) of a paper-by-paper loop.
        raw64 = np.asarray(raw, dtype=np.float64)
        calibrated = np.asarray(model.calibrate(raw), dtype=np.float64)
        votes = listing.votes[at]
        top = votes.max() if len(votes) else 0.0
        trending = (votes / top if top > 0 else np.zeros(len(at))) * profile.trending_weight
        keyword_hits = np.zeros(len(at), dtype=np.int64)
        for term in interests.keywords:
            keyword_hits += listing.matches(term)[at]
        followed = FollowedAuthors(interests.authors)
        by_author = listing.by_authors(followed)[at]
        in_category = listing.in_categories(interests.categories)[at]
        # With no keywords, examples or feedback the model knows nothing, and the categories
        # are all the profile says: then they pick papers on their own.
        category_only = in_category & (not model.trained)
        prior = np.where(
            in_category,
            np.where(category_only, params.category_only_boost, params.category_prior),
            0.0,
        )
        explicit = (keyword_hits > 0) | by_author | category_only
        eligible = explicit | (calibrated + prior >= profile.min_score)
        if complete:
            eligible[:] = True
        score = calibrated * (1 - profile.trending_weight) + trending
        # The raw score breaks ties among papers above every background paper. In units of
        # the background's spread it can reach a hundred, so it is squashed first: monotone,
        # and never above a thousandth, which no boost or prior can be outweighed by.
        score = score + 1e-3 * np.tanh(raw64 / 100)
        score = score + params.keyword_boost * np.minimum(keyword_hits, 2) / 2
        score = score + np.where(by_author, params.author_boost, 0.0)
        score = score + prior
        chosen = np.flatnonzero(eligible)
        # A stable sort keeps listing order among equal scores.
        ranked = chosen[np.argsort(-score[chosen], kind="stable")]
        shown = limit or profile.max_papers
        order = _hold_back_duplicates(
            ranked, rows, at, params.near_duplicate, None if complete else shown
        )
        explain = Explainer(self.vocab, model, examples, fb.liked)
        cats = set(interests.categories)
        picks = []
        # Past the digest's length (only with `complete`) nobody reads a reason.
        terms = [listing.terms(int(at[i])) for i in order[:shown]]
        contrib = explain.contributions(terms)
        for n, i in enumerate(order):
            paper = candidates[int(keep[i])]
            signals: list[str] = []
            if n < shown:
                hit_kw = [k for k in interests.keywords if listing.matches(k)[at[i]]]
                hit_auth = followed.hits(paper.authors) if by_author[i] else []
                hit_cat = [c for c in paper.categories if c in cats or c.split(".")[0] in cats]
                weights = contrib[n] if contrib else None
                signals = explain.signals(terms[n], rows[at[i]], hit_kw, hit_auth, hit_cat, weights)
            picks.append(Pick(paper, float(score[i]), " · ".join(signals), signals))
        return picks

    def excluded(self, profile: Profile, papers: Sequence[RankPaper]) -> np.ndarray:
        """Which of these papers the profile's `exclude` drops: papers shown outside its
        ranking (a trending section) honour it too."""
        listing, at = self._listing_of(papers)
        return _matching_any(listing, at, profile.interests.exclude)

    def use_listing(self, papers: Sequence[RankPaper]) -> None:
        """Lay out the run's listing once: every later `rank` of papers within it reads it."""
        self._listing = Listing(papers, self.vocab)

    def _listing_of(
        self, candidates: Sequence[RankPaper], at: np.ndarray | None = None
    ) -> tuple[Listing[RankPaper], np.ndarray]:
        """The run's listing and the candidates' places in it, or a listing of the candidates
        alone (a caller ranking papers outside any run: the same code path, laid out now)."""
        if self._listing is not None and at is not None:
            return self._listing, at
        if self._listing is not None:
            at = self._listing.positions(candidates)
            if at is not None:
                return self._listing, at
        return Listing(candidates, self.vocab), np.arange(len(candidates), dtype=np.intp)


def _matching_any(listing: Listing[RankPaper], at: np.ndarray, terms: list[str]) -> np.ndarray:
    found = np.zeros(len(at), dtype=bool)
    for term in terms:
        found |= listing.matches(term)[at]
    return found


def _hold_back_duplicates(
    ranked: np.ndarray, rows: np.ndarray, at: np.ndarray, threshold: float, wanted: int | None
) -> list[int]:
    """Keep the order, but move a paper that nearly repeats an earlier pick behind the rest.
    ``ranked`` are candidates, each candidate i the row ``at[i]`` of ``rows``.

    With ``wanted``, stop once that many are kept: whether a paper is kept depends only on
    the papers kept before it, so the first ``wanted`` of the full order are the same (up to
    the rounding of a likeness within a float's last bits of the threshold: the first
    candidates are compared in one product, the full order one paper at a time)."""
    kept: list[int] = []
    held: list[int] = []
    order = ranked.tolist()
    # The first few candidates' likeness to each other in one product: a digest is nearly
    # always filled from them, and a product per candidate cost a tenth of ranking.
    head = order[: 2 * wanted] if wanted else []
    if head:
        block = rows[at[head]]
        near = (block @ block.T >= threshold).tolist()
        kept_at: list[int] = []
        for j, i in enumerate(head):
            row = near[j]
            if any(row[k] for k in kept_at):
                held.append(i)
            else:
                kept_at.append(j)
                kept.append(i)
                if len(kept) == wanted:
                    return kept
    for i in order[len(head) :]:
        if kept and float(np.max(rows[at[kept]] @ rows[at[i]])) >= threshold:
            held.append(i)
        else:
            kept.append(i)
            if wanted is not None and len(kept) >= wanted:
                break
    out = kept + held
    return out if wanted is None else out[:wanted]
