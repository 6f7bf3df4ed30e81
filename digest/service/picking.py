"""Which papers a reader gets today: the candidate filter, ranking with the run's shared
scores, the trending digest, and the digest of a stored delivery (for previews and retries)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any, overload

import numpy as np

from digest.errors import NotFound
from digest.mail.render import (
    TRENDING,
    Rendered,
    render_digest,
)
from digest.profiles import Profile, topics_of
from digest.rank.ranker import Pick
from digest.record import BACKFILL
from digest.service.context import Context, _micros, from_sources, prepare_models
from digest.store.planning import Standing
from digest.store.schema import SECTIONS_KEY, Delivery, Paper


def candidates(ctx: Context, profile: Profile, standing: Standing) -> list[Paper]:
    """Listing papers of the last few days that arrived since this subscriber's last digest.

    Papers already considered for an earlier digest and passed over are not offered again the
    next day; papers already sent are never offered again at all.
    """
    return [ctx.listing[i] for i in candidate_positions(ctx, profile, standing)]


def candidate_positions(ctx: Context, profile: Profile, standing: Standing) -> np.ndarray:
    """`candidates` as positions in the listing, from per-run arrays: no loop over the listing
    per reader."""
    mask = ctx.from_sources(profile.sources) & ctx.within(profile)
    since = standing.last_digest_at
    if since is not None:
        mask &= ctx.first_seen > _micros(since)
    for pid in standing.sent | profile.own_papers:
        j = ctx.position.get(pid)
        if j is not None:
            mask[j] = False
    return np.flatnonzero(mask)


def _why_no_candidates(ctx: Context, profile: Profile, standing: Standing) -> str:
    """Which of the candidate filters left nothing: a wrong reason sends the operator astray."""
    allowed = set(profile.sources) if profile.sources is not None else None
    mine = [p for p in ctx.listing if from_sources(p, allowed)]
    if not mine:
        return (
            f"none of the {len(ctx.listing)} listing papers comes from {', '.join(allowed or [])}"
        )
    since = standing.last_digest_at
    if since is not None:
        # Named with its day: on a weekend or an arXiv holiday, "no new listing since Friday"
        # is the whole answer.
        stale = ctx.latest is not None and (ctx.today is None or ctx.latest < ctx.today)
        year = (
            ""
            if ctx.today is None or ctx.latest is None or ctx.latest.year == ctx.today.year
            else " %Y"
        )
        newest = f"; no new listing since {ctx.latest:%A %-d %B{year}}" if stale else ""
        return f"no new papers since the last digest ({since:%Y-%m-%d %H:%M} UTC){newest}"
    return f"all {len(mine)} listing papers were sent before or are the profile's own examples"


class _AtPositions(Sequence[Paper]):
    """The listing's papers at these positions, each looked up only when asked for: ranking
    reads only the few a reader gets, of the hundreds of candidates."""

    def __init__(self, listing: list[Paper], at: list[int]) -> None:
        self._listing, self._at = listing, at

    def __len__(self) -> int:
        return len(self._at)

    @overload
    def __getitem__(self, i: int) -> Paper: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Paper]: ...
    def __getitem__(self, i: int | slice) -> Paper | Sequence[Paper]:
        if isinstance(i, slice):
            return [self._listing[j] for j in self._at[i]]
        return self._listing[self._at[i]]


def rank_pool(
    ctx: Context,
    profile: Profile,
    pool: Sequence[Paper],
    complete: bool = False,
    at: np.ndarray | None = None,
    limit: int | None = None,
) -> list[Pick[Paper]]:
    """Rank listing papers for one subscriber with their stored model, examples and feedback.

    ``complete`` returns every paper of the pool in order (bench/eval_ranking.py uses it).
    ``at`` are the pool's positions in the listing when the caller has them.
    """
    key = profile.model_key
    if key not in ctx.models:
        prepare_models(ctx, [profile])
    if at is None:
        at = np.array([ctx.position[p.id] for p in pool], dtype=np.intp)
    row = ctx.scores.get(key)
    return ctx.ranker.rank(
        profile,
        pool,
        ctx.examples[key],
        ctx.feedback[key],
        model=ctx.models[key],
        raw=row[at] if row is not None else None,
        complete=complete,
        at=at,
        limit=limit,
    )


def topic_picks(
    ctx: Context, profile: Profile, pool: Sequence[Paper], at: np.ndarray
) -> list[Pick[Paper]]:
    """A profile's topics, each ranked with its own model, in the profile's order. Papers are
    dealt out best score first: each goes to the topic that scored it highest among those
    with room left, so no topic's pick is lost to another that had no room for it."""
    topics = topics_of(profile)
    if any(t.model_key not in ctx.models for t in topics):
        # All at once, from the profile: each topic's feedback is told apart there.
        prepare_models(ctx, [profile])
    reach = sum(t.max_papers for t in topics)
    ranked = [rank_pool(ctx, t, pool, at=at, limit=reach) for t in topics]
    offers = sorted(
        ((pick.score, -n, k) for n, picks in enumerate(ranked) for k, pick in enumerate(picks)),
        reverse=True,
    )
    taken: set[str] = set()
    kept: list[list[tuple[int, Pick[Paper]]]] = [[] for _ in topics]
    for _, minus_n, k in offers:
        n = -minus_n
        pick = ranked[n][k]
        if pick.paper.id in taken or len(kept[n]) >= topics[n].max_papers:
            continue
        taken.add(pick.paper.id)
        pick.section = topics[n].section
        kept[n].append((k, pick))
    return [pick for mine in kept for _, pick in sorted(mine, key=lambda x: x[0])]


def _why_no_listing(ctx: Context) -> str:
    """Why there is nothing to pick before the first listing. A backfill may have stored
    thousands of papers already: corpus only, never listed, so "no papers" would mislead
    (counted only here, on this rare path, not for every reader of a run)."""
    backfilled = ctx.store.count_papers(BACKFILL)
    if not backfilled:
        return "no papers stored yet (run `digest ingest`)"
    return (
        f"no listing fetched yet (run `digest ingest`); the {backfilled} backfilled papers "
        "are corpus only, never listed"
    )


def pick_papers(
    ctx: Context, profile: Profile, standing: Standing | None = None
) -> tuple[list[Pick[Paper]], str]:
    """The subscriber's picks for today, or none with the reason why. A run hands over what
    the store knows of the reader (`standing`) for a whole batch; one reader's is read here."""
    if standing is None:
        email = profile.email.lower()
        standing = ctx.store.standings({email: date.min})[email]
    if ctx.latest is None:
        return [], _why_no_listing(ctx)
    if profile.trending:
        return trending_picks(ctx, profile, standing)
    at = candidate_positions(ctx, profile, standing)
    if not len(at):
        return [], _why_no_candidates(ctx, profile, standing)
    positions = at.tolist()  # Python ints: numpy ones index slowly
    pool = _AtPositions(ctx.listing, positions)
    if profile.topics:
        picks = topic_picks(ctx, profile, pool, at)
    else:
        picks = rank_pool(ctx, profile, pool, at=at)
    extra = trending_section(ctx, profile, standing, picks)
    if not picks:
        what = "any of its topics" if profile.topics else "the profile"
        why = f"none of {len(pool)} new papers matched {what}"
        # The section alone makes a digest only with papers new since the last one: else the
        # same runners-up would come back every quiet day.
        fresh = set(positions)
        if not any(ctx.position[p.paper.id] in fresh for p in extra):
            return [], why
    return picks + extra, ""


def trending_picks(
    ctx: Context, profile: Profile, standing: Standing
) -> tuple[list[Pick[Paper]], str]:
    """The most upvoted Hugging Face papers of the listing window not yet sent to this reader.

    Unlike personal picks, a paper passed over at an earlier digest (seen, not sent) is offered
    again: upvotes grow through the day and the next, and what trends tomorrow may have been
    quiet today. A paper sent once is never sent again.
    """
    pool = _upvoted(ctx, profile, standing.sent)
    if not pool:
        if any(s.kind == "hf-daily" for s in ctx.cfg.sources):
            # Configured, so either nothing is new or its fetch failed: status tells which.
            return [], "no new Hugging Face papers (`digest status` shows the source's last fetch)"
        return [], "no new Hugging Face papers (is an hf-daily source configured?)"
    loud = [p for p in pool if (p.upvotes or 0) >= profile.min_upvotes]
    if not loud:
        return [], f"none of {len(pool)} Hugging Face papers has {profile.min_upvotes} upvotes"
    return [_trending_pick(p) for p in loud[: profile.max_papers]], ""


def trending_section(
    ctx: Context, profile: Profile, standing: Standing, picked: list[Pick[Paper]]
) -> list[Pick[Paper]]:
    """The `trending_section` of a personal digest: the most upvoted papers not among its own
    picks, nor sent before, nor the reader's examples, nor dropped by their `exclude`."""
    if not profile.trending_section or profile.trending:
        return []
    taken = standing.sent | {p.paper.id for p in picked} | profile.own_papers
    pool = _upvoted(ctx, profile, taken)
    if pool and profile.interests.exclude:
        dropped = ctx.ranker.excluded(profile, pool)
        pool = [p for p, out in zip(pool, dropped, strict=True) if not out]
    return [_trending_pick(p, TRENDING) for p in pool[: profile.trending_section]]


def _upvoted(ctx: Context, profile: Profile, taken: set[str]) -> list[Paper]:
    """The listing's Hugging Face papers from the reader's sources, leaving out ``taken``,
    most upvoted first; among equal upvotes the newer paper (the larger arXiv id) first: the
    same order on every node and every retry."""
    allowed = set(profile.sources) if profile.sources is not None else None
    within = ctx.within(profile)
    listing = ctx.listing
    return [
        listing[j]
        for j in ctx.upvoted
        if within[j] and listing[j].id not in taken and from_sources(listing[j], allowed)
    ]


def _trending_pick(p: Paper, section: str = "") -> Pick[Paper]:
    why = f"{p.upvotes} upvote{'s' if p.upvotes != 1 else ''} on Hugging Face"
    return Pick(p, float(p.upvotes or 0), why, [why], section)


def stored_reasons(picks: list[Pick[Paper]]) -> dict[str, Any]:
    """What a delivery row keeps of the picks beside their ids: reasons, and sections."""
    reasons: dict[str, Any] = {p.paper.id: p.reason for p in picks}
    sections = {p.paper.id: p.section for p in picks if p.section}
    if sections:
        reasons[SECTIONS_KEY] = sections
    return reasons


def picks_of(ctx: Context, delivery: Delivery) -> list[Pick[Paper]]:
    """The picks stored on a planned delivery, so a retry sends the very same digest."""
    papers = ctx.store.papers(delivery.paper_ids)
    sections = delivery.reasons.get(SECTIONS_KEY)
    if not isinstance(sections, dict):
        sections = {}
    return [
        Pick(papers[pid], 0.0, str(delivery.reasons.get(pid, "")), [], str(sections.get(pid, "")))
        for pid in delivery.paper_ids
        if pid in papers
    ]


def find_profile(ctx: Context, email: str) -> Profile:
    for p in ctx.profiles:
        if p.email.lower() == email.lower():
            return p
    broken = f" ({len(ctx.profile_errors)} profile(s) are invalid)" if ctx.profile_errors else ""
    raise NotFound(f"no subscriber with email {email}{broken}")


def render_for(ctx: Context, profile: Profile, picks: list[Pick[Paper]], day: date) -> Rendered:
    # The links name the reader by an opaque ref; `digest web` maps it back through the store
    # (recorded with the batch, before anything is sent).
    ctx.refs[ctx.signer.ref(profile.email)] = profile.email
    return render_digest(ctx.env, ctx.cfg, profile, picks, day, ctx.signer, ctx.blocks, ctx.frames)
