"""The daily cycle wired together: ingest, rank, render, send, for every subscriber due.

Each step is a plain function from the stage modules; this module only decides who is due and
keeps the delivery rows honest. The CLI and (later) the scheduler both call `run`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from urllib.parse import urlsplit

import jinja2
import numpy as np

from digest.config import Config
from digest.errors import DigestError, ExitStatus, NotFound, ProfileError
from digest.ingest.run import IngestReport, ingest_all, lookup_papers
from digest.mail.compose import compose
from digest.mail.engine import EngineReport, deliver
from digest.mail.links import Signer
from digest.mail.render import (
    PaperBlocks,
    Rendered,
    environment,
    message_id_for,
    render_digest,
)
from digest.profiles import Profile, load_profiles
from digest.rank.features import Vocabulary, corpus_version
from digest.rank.model import SubscriberModel
from digest.rank.ranker import Pick, Ranker, Ratings
from digest.service.parallel import Due, plan_in_processes
from digest.states import DUE, SETTLED_OK, Outcome
from digest.states import Delivery as DS
from digest.store.papers import Store, source_name
from digest.store.planning import Planned, Standing
from digest.store.schema import Delivery, Paper, RankModel, as_utc_naive

log = logging.getLogger(__name__)
# Subscribers planned together: one set of queries, models and scores per batch, so memory
# stays flat at 100,000 subscribers (a batch's scores: 1,000 x the listing, in float32).
BATCH = 1000
# Papers from look-ups and backfill are context for the ranker, not part of a day's listing.
NOT_LISTED = ("api",)


@dataclass
class SubscriberResult:
    email: str
    status: str  # an Outcome, or the DeliveryState of the digest planned in this run
    papers: int = 0
    detail: str = ""


@dataclass
class RunReport:
    day: date
    ingest: list[IngestReport] = field(default_factory=list)
    profile_errors: list[ProfileError] = field(default_factory=list)
    results: list[SubscriberResult] = field(default_factory=list)
    delivery: EngineReport | None = None
    # Seconds per stage (ingest, vocabulary, models, ranking, rendering, delivery): where the
    # time of a run went, for the operator's summary, `--report` and bench/cycle.py.
    stages: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stages[stage] = self.stages.get(stage, 0.0) + time.perf_counter() - t0

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    def exit_status(self) -> ExitStatus:
        """PAUSED over PARTIAL over OK: a paused service is the first thing to fix."""
        if self.delivery is not None and self.delivery.paused:
            return ExitStatus.PAUSED
        waiting = self.delivery is not None and self.delivery.relay_until is not None
        unsent = waiting or any(r.status not in SETTLED_OK for r in self.results)
        failed_sources = any(r.status == "error" for r in self.ingest)
        if unsent or failed_sources or self.profile_errors:
            return ExitStatus.PARTIAL
        return ExitStatus.OK


@dataclass
class Context:
    cfg: Config
    store: Store
    profiles: list[Profile]
    profile_errors: list[ProfileError]
    ranker: Ranker
    env: jinja2.Environment
    latest: date | None
    # The listing papers of the lookback window, loaded once per run for every subscriber.
    listing: list[Paper]
    # Per subscriber (lower-case email), filled by `prepare_models`: model, examples, feedback,
    # and the model's raw scores of the listing (one product for everyone).
    models: dict[str, SubscriberModel] = field(default_factory=dict)
    examples: dict[str, list[Paper]] = field(default_factory=dict)
    feedback: dict[str, Ratings] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    retrained: int = 0
    position: dict[str, int] = field(init=False)  # listing paper id -> index in `listing`

    # Link refs of the digests rendered in this batch (ref -> email), recorded in one go.
    refs: dict[str, str] = field(default_factory=dict)
    # Each paper's reader-independent part of the template context, made once per run.
    blocks: PaperBlocks = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.position = {p.id: j for j, p in enumerate(self.listing)}
        self.ranker.use_listing(self.listing)
        self.first_seen = np.array([_micros(p.first_seen) for p in self.listing], dtype=np.int64)
        self._by_sources: dict[frozenset[str] | None, np.ndarray] = {}

    def from_sources(self, sources: list[str] | None) -> np.ndarray:
        """Which listing papers came through one of these sources (None: any), per run."""
        key = frozenset(sources) if sources is not None else None
        mask = self._by_sources.get(key)
        if mask is None:
            allowed = set(key) if key is not None else None
            mask = np.array([from_sources(p, allowed) for p in self.listing], dtype=bool)
            self._by_sources[key] = mask
        return mask

    def forget(self, profiles: list[Profile]) -> None:
        """Drop a planned batch's models and scores: memory stays flat however many readers."""
        for p in profiles:
            email = p.email.lower()
            for per_reader in (self.models, self.examples, self.feedback, self.scores):
                per_reader.pop(email, None)

    @cached_property
    def signer(self) -> Signer:
        """The link keys, read once per run rather than once per digest (lazily: a dry run and
        the evaluation render nothing and need no key)."""
        return Signer(self.cfg)


def digest_day(profile: Profile, now: datetime) -> date:
    """The digest date is the subscriber's local calendar day."""
    return now.astimezone(profile.tz).date()


def prepare(cfg: Config, store: Store, now: datetime) -> Context:
    loaded = load_profiles(cfg.subscribers_dir, [s.name for s in cfg.sources])
    for err in loaded.errors:
        log.debug("%s", err)  # reported by the caller: the run report, serve's reload
    wanted = [pid for p in loaded.profiles for pid in p.interests.papers]
    if wanted:
        lookup_papers(store, cfg, wanted, now.date())
    corpus = corpus_of(cfg, store, now.date())
    listing = listing_of(corpus, cfg.digest.lookback_days)
    latest = max((p.announced for p in listing), default=None)
    known = {p.id for p in corpus}
    corpus += [p for p in store.papers(wanted).values() if p.id not in known]
    return Context(
        cfg=cfg,
        store=store,
        profiles=loaded.profiles,
        profile_errors=loaded.errors,
        ranker=Ranker(corpus, vocabulary(cfg, corpus)),
        env=environment(cfg),
        latest=latest,
        listing=listing,
    )


def corpus_of(cfg: Config, store: Store, today: date) -> list[Paper]:
    """The papers of the last `corpus_days` of each configured source, oldest first.

    Each source counts back from its own newest day: a source ahead of the others (a feed
    dated wrongly, or files of different years) cannot push the others out, and a source
    removed from the config no longer feeds anybody's digest.
    """
    # A date past tomorrow (any time zone's today) is a mistake, stored before ingest checked.
    until = today + timedelta(days=1)
    span = timedelta(days=cfg.digest.corpus_days)
    by_id: dict[str, Paper] = {}
    for src in cfg.sources:
        newest = store.newest_day(src.name, until, exclude_types=NOT_LISTED)
        if newest is not None:
            for p in store.source_papers(src.name, newest - span, newest):
                by_id.setdefault(p.id, p)
    return sorted(by_id.values(), key=lambda p: (p.announced, p.id))


def listing_of(papers: list[Paper], lookback_days: int) -> list[Paper]:
    """The listing papers within `lookback_days` of their own source's newest day.

    Each source keeps its own window: a feed whose items carry a wrong date (or one that is
    ahead of the others) cannot push every other source's papers out of everybody's listing.
    """
    listed = [p for p in papers if p.announce_type not in NOT_LISTED]
    newest: dict[str, date] = {}
    for p in listed:
        for tag in p.sources or [""]:  # a paper stored without a source tag: a group of its own
            if p.announced > newest.get(tag, date.min):
                newest[tag] = p.announced
    span = timedelta(days=lookback_days - 1)
    return [p for p in listed if any(p.announced >= newest[t] - span for t in p.sources or [""])]


def vocabulary(cfg: Config, corpus: list[Paper]) -> Vocabulary:
    """The vocabulary of this corpus window: reused from disk while the window is unchanged."""
    path = cfg.data_dir / "models" / "vocabulary.pkl"
    stored = Vocabulary.load(path)
    if stored is not None and stored.version == corpus_version([p.id for p in corpus]):
        return stored
    fitted = Vocabulary(corpus)
    try:
        fitted.save(path)
    except OSError as exc:
        log.warning("cannot keep the vocabulary in %s (%s); it is fitted again next run", path, exc)
    return fitted


def prepare_models(ctx: Context, profiles: list[Profile]) -> None:
    """Every subscriber's model, retrained only where profile, feedback or vocabulary changed,
    and the listing scored for all of them at once."""
    emails = [p.email.lower() for p in profiles]
    verdicts = ctx.store.feedback_all(emails)
    wanted = {pid for p in profiles for pid in p.interests.papers}
    wanted |= {pid for fb in verdicts.values() for pid in fb}
    papers = ctx.store.papers(sorted(wanted))
    stored = ctx.store.rank_models(emails)
    fresh: list[RankModel] = []
    for profile, email in zip(profiles, emails, strict=True):
        given = verdicts.get(email, {})
        fb = Ratings(
            liked=[papers[i] for i, v in given.items() if v == "like" and i in papers],
            disliked=[papers[i] for i, v in given.items() if v == "dislike" and i in papers],
        )
        examples = [papers[i] for i in profile.interests.papers if i in papers]
        model, retrained = ctx.ranker.model(profile, examples, fb, stored.get(email))
        if retrained:
            fresh.append(
                RankModel(
                    subscriber=email,
                    fingerprint=model.fingerprint,
                    vocabulary=model.vocabulary,
                    blob=model.to_bytes(),
                )
            )
        ctx.models[email], ctx.examples[email], ctx.feedback[email] = model, examples, fb
    ctx.store.save_rank_models(fresh)
    ctx.retrained += len(fresh)
    if ctx.listing:
        matrix = ctx.ranker.score_all([ctx.models[e] for e in emails], ctx.listing)
        for email, row in zip(emails, matrix, strict=True):
            ctx.scores[email] = row


def from_sources(paper: Paper, allowed: set[str] | None) -> bool:
    """Whether the paper came through one of the profile's `sources` (None: any source)."""
    return allowed is None or any(source_name(t) in allowed for t in paper.sources)


def candidates(ctx: Context, profile: Profile, standing: Standing) -> list[Paper]:
    """Listing papers of the last few days that arrived since this subscriber's last digest.

    Papers already considered for an earlier digest and passed over are not offered again the
    next day; papers already sent are never offered again at all.
    """
    return [ctx.listing[i] for i in candidate_positions(ctx, profile, standing)]


def candidate_positions(ctx: Context, profile: Profile, standing: Standing) -> np.ndarray:
    """`candidates` as positions in the listing, from per-run arrays: no loop over the listing
    per reader."""
    mask = ctx.from_sources(profile.sources).copy()
    since = standing.last_digest_at
    if since is not None:
        mask &= ctx.first_seen > _micros(since)
    for pid in standing.sent | set(profile.interests.papers):
        j = ctx.position.get(pid)
        if j is not None:
            mask[j] = False
    return np.flatnonzero(mask)


_EPOCH = datetime(1970, 1, 1)


def _micros(when: datetime) -> int:
    """A time as whole microseconds since 1970 (UTC): exact, unlike a float timestamp."""
    return (as_utc_naive(when) - _EPOCH) // timedelta(microseconds=1)


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
        return f"no new papers since the last digest ({since:%Y-%m-%d %H:%M} UTC)"
    return f"all {len(mine)} listing papers were sent before or are the profile's own examples"


def rank_pool(
    ctx: Context,
    profile: Profile,
    pool: list[Paper],
    complete: bool = False,
    at: np.ndarray | None = None,
) -> list[Pick[Paper]]:
    """Rank listing papers for one subscriber with their stored model, examples and feedback.

    ``complete`` returns every paper of the pool in order (bench/eval_ranking.py uses it).
    ``at`` are the pool's positions in the listing when the caller has them.
    """
    email = profile.email.lower()
    if email not in ctx.models:
        prepare_models(ctx, [profile])
    if at is None:
        at = np.array([ctx.position[p.id] for p in pool], dtype=np.intp)
    row = ctx.scores.get(email)
    return ctx.ranker.rank(
        profile,
        pool,
        ctx.examples[email],
        ctx.feedback[email],
        model=ctx.models[email],
        raw=row[at] if row is not None else None,
        complete=complete,
        at=at,
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
        return [], "no papers stored yet (run `digest ingest`)"
    if profile.trending:
        return trending_picks(ctx, profile, standing)
    at = candidate_positions(ctx, profile, standing)
    if not len(at):
        return [], _why_no_candidates(ctx, profile, standing)
    pool = [ctx.listing[i] for i in at]
    picks = rank_pool(ctx, profile, pool, at=at)
    if not picks:
        return [], f"none of {len(pool)} new papers matched the profile"
    return picks, ""


def trending_picks(
    ctx: Context, profile: Profile, standing: Standing
) -> tuple[list[Pick[Paper]], str]:
    """The most upvoted Hugging Face papers of the listing window not yet sent to this reader.

    Unlike personal picks, a paper passed over at an earlier digest (seen, not sent) is offered
    again: upvotes grow through the day and the next, and what trends tomorrow may have been
    quiet today. A paper sent once is never sent again.
    """
    sent = standing.sent
    allowed = set(profile.sources) if profile.sources is not None else None
    pool = [
        p
        for p in ctx.listing
        if p.upvotes is not None and p.id not in sent and from_sources(p, allowed)
    ]
    if not pool:
        return [], "no new Hugging Face papers (is an hf-daily source configured?)"
    loud = [p for p in pool if (p.upvotes or 0) >= profile.min_upvotes]
    if not loud:
        return [], f"none of {len(pool)} Hugging Face papers has {profile.min_upvotes} upvotes"
    # Among equal upvotes the newer paper (the larger arXiv id) first: the same order on
    # every node and every retry.
    loud.sort(key=lambda p: ((p.upvotes or 0), p.id), reverse=True)
    picks = []
    for p in loud[: profile.max_papers]:
        why = f"{p.upvotes} upvote{'s' if p.upvotes != 1 else ''} on Hugging Face"
        picks.append(Pick(p, float(p.upvotes or 0), why, [why]))
    return picks, ""


def picks_of(ctx: Context, delivery: Delivery) -> list[Pick[Paper]]:
    """The picks stored on a planned delivery, so a retry sends the very same digest."""
    papers = ctx.store.papers(delivery.paper_ids)
    return [
        Pick(papers[pid], 0.0, str(delivery.reasons.get(pid, "")))
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
    return render_digest(ctx.env, ctx.cfg, profile, picks, day, ctx.signer, ctx.blocks)


def run(
    cfg: Config,
    store: Store,
    *,
    now: datetime | None = None,
    ingest: bool = True,
    dry_run: bool = False,
    progress: Callable[[str], None] | None = None,
    only: set[str] | None = None,
    halt: threading.Event | None = None,
) -> RunReport:
    """One full cycle. Safe to repeat: a subscriber already sent today gets nothing more.

    ``only`` limits planning to these subscribers (a send slot); the engine still sends
    everything due, so retries of other subscribers are not held back.
    """
    fixed_clock = now is not None
    now = now or datetime.now(UTC)
    report = RunReport(day=now.date())
    if not dry_run:
        # Secrets are checked before anything is planned: a missing key is one clear error for
        # the operator, not a failed delivery for every subscriber.
        cfg.web.secret_key()
        cfg.smtp.password()
        _warn_plain_http(cfg)
    if ingest:
        with report.timed("ingest"):
            report.ingest = ingest_all(store, cfg, today=now.date())
    with report.timed("vocabulary"):
        ctx = prepare(cfg, store, now)
    report.profile_errors = ctx.profile_errors
    profiles = [p for p in ctx.profiles if only is None or p.email.lower() in only]
    if only is None and not ctx.profile_errors:
        # Every profile loaded: models of subscribers whose files are gone can go too. (With a
        # broken file its owner is unknown, so nothing is dropped until it is fixed.)
        store.prune_rank_models([p.email for p in ctx.profiles])
    batches = [profiles[i : i + BATCH] for i in range(0, len(profiles), BATCH)]
    engine = EngineReport()

    def send_due() -> bool:
        """One pass of the engine over everything due, including digests left over from
        earlier runs; False once delivery is paused or the run is asked to stop."""
        with report.timed("delivery"):
            engine.add(deliver(store, cfg, now if fixed_clock else None, halt=halt))
        return not (engine.paused or (halt is not None and halt.is_set()))

    def plan(batch: list[Profile]) -> tuple[list[SubscriberResult], dict[str, float], list[Due]]:
        part = RunReport(day=report.day)
        due = _plan_batch(ctx, batch, now, dry_run, part)
        ctx.forget(batch)
        return part.results, part.stages, [(d.subscriber, d.digest_date) for d in due]

    def planned_so_far(n: int) -> None:
        if progress:
            progress(f"planning: {min(n * BATCH, len(profiles)):,} of {len(profiles):,} done")

    due: list[Due] = []
    workers = min(cfg.planning.processes, len(batches))
    t0 = time.perf_counter()
    if workers > 1:
        results, stages, due = plan_in_processes(
            plan,
            batches,
            workers,
            (lambda: True) if dry_run else send_due,
            planned_so_far,
            in_child=lambda: store.engine.dispose(close=False),
        )
        report.results += results
        for k, v in stages.items():
            report.stages[k] = report.stages.get(k, 0.0) + v
    else:
        for n, batch in enumerate(batches):
            planned_so_far(n)
            results, stages, keys = plan(batch)
            report.results += results
            due += keys
            for k, v in stages.items():
                report.stages[k] = report.stages.get(k, 0.0) + v
    report.stages["planning"] = time.perf_counter() - t0
    if dry_run:
        return report
    if progress:
        progress(f"sending {len(due):,} digests")
    if not engine.paused:
        send_due()
    report.delivery = engine
    with report.timed("storing"):
        store.prune_messages(now.date() - timedelta(days=cfg.digest.keep_days))
    report.results += _final_states(store, due)
    return report


def _final_states(store: Store, due: list[Due]) -> list[SubscriberResult]:
    """Where each digest planned (or found due) in this run ended, read in batches."""
    out = []
    for start in range(0, len(due), BATCH):
        part = dict(due[start : start + BATCH])
        for standing in store.standings(part).values():
            d = standing.today
            if d is not None:
                out.append(SubscriberResult(d.subscriber, d.state, len(d.paper_ids), _detail(d)))
    return out


def _detail(d: Delivery) -> str:
    """The last error, and for a digest still waiting when it is tried next: a stale error
    alone reads as if nothing will happen."""
    error = d.last_error or ""
    if d.state in (DS.RETRY, DS.AMBIGUOUS) and d.next_attempt_at is not None:
        return f"next try {d.next_attempt_at:%Y-%m-%d %H:%M} UTC; {error}".rstrip("; ")
    return error


def _warn_plain_http(cfg: Config) -> None:
    """RFC 8058 one-click unsubscribe needs an https URL; mail providers ignore http ones."""
    host = urlsplit(cfg.web.base_url).hostname or ""
    if cfg.web.base_url.startswith("http://") and host not in ("localhost", "127.0.0.1", "::1"):
        log.warning(
            "web.base_url %s is not https: mail providers will not offer one-click "
            "unsubscribe for it",
            cfg.web.base_url,
        )


def _plan_batch(
    ctx: Context,
    batch: list[Profile],
    now: datetime,
    dry_run: bool,
    report: RunReport,
) -> list[Delivery]:
    """Plan one batch of subscribers: their models and scores, what the store knows of them,
    each reader's digest; then the new rows in one transaction. Returns what is due."""
    with report.timed("models"):
        prepare_models(ctx, batch)
    with report.timed("storing"):
        standings = ctx.store.standings({p.email.lower(): digest_day(p, now) for p in batch})
    due: list[Delivery] = []
    ready: list[Planned] = []
    for profile in batch:
        standing = standings[profile.email.lower()]
        try:
            outcome = _plan_one(ctx, profile, now, dry_run, report, standing)
        except DigestError as exc:
            report.results.append(SubscriberResult(profile.email, Outcome.ERROR, detail=str(exc)))
            continue
        if isinstance(outcome, SubscriberResult):
            report.results.append(outcome)
        elif isinstance(outcome, Planned):
            ready.append(outcome)
        else:
            due.append(outcome)
    with report.timed("storing"):
        ctx.store.remember_refs(ctx.refs)
        ctx.refs.clear()
        due += ctx.store.plan_deliveries(ready)
    return due


def _plan_one(
    ctx: Context,
    profile: Profile,
    now: datetime,
    dry_run: bool,
    report: RunReport,
    standing: Standing,
) -> SubscriberResult | Delivery | Planned:
    email = profile.email
    if standing.blocked:
        return SubscriberResult(email, Outcome.UNSUBSCRIBED)
    day = digest_day(profile, now)
    existing = standing.today
    if existing is not None:
        if existing.state in DUE:
            return existing  # planned earlier, not (known to be) sent: the engine takes it
        status = Outcome.ALREADY_SENT if existing.state == DS.SENT else existing.state
        return SubscriberResult(email, status, len(existing.paper_ids), f"digest of {day}")
    with report.timed("ranking"):
        picks, why_not = pick_papers(ctx, profile, standing)
    if not picks:
        return SubscriberResult(email, Outcome.NOTHING_NEW, detail=why_not)
    if dry_run:
        return SubscriberResult(
            email, Outcome.DRY_RUN, len(picks), f"would send the digest of {day}"
        )
    message_id = message_id_for(email, day, ctx.cfg.smtp.from_address)
    # Rendered once, here: every attempt sends these exact bytes with this Message-ID.
    with report.timed("rendering"):
        rendered = render_for(ctx, profile, picks, day)
        message = compose(ctx.cfg, profile, rendered, message_id, now, ctx.signer)
    return Planned(
        email,
        day,
        message_id,
        [p.paper.id for p in picks],
        {p.paper.id: p.reason for p in picks},
        message,
        now + timedelta(hours=ctx.cfg.delivery.retry_window_hours),
    )


@dataclass(frozen=True)
class Preview:
    rendered: Rendered
    message: bytes
    picks: list[Pick[Paper]]
    day: date
    # The stored digest shown (sent, or queued to be sent); None for one made up now.
    stored: Delivery | None = None


def preview(
    cfg: Config,
    store: Store,
    email: str,
    now: datetime | None = None,
    *,
    next_digest: bool = False,
) -> Preview:
    """What `email` would receive now (or was sent today), without sending or recording it.

    ``next_digest`` skips today's stored digest and shows what the next run would send if it
    ran now: the papers that arrived since, ranked with the reader's feedback so far.
    """
    now = now or datetime.now(UTC)
    ctx = prepare(cfg, store, now)
    profile = find_profile(ctx, email)
    day = digest_day(profile, now)
    existing = store.delivery(profile.email, day)
    if existing is not None and not next_digest:
        picks = picks_of(ctx, existing)
        message_id = existing.message_id
    else:
        if existing is not None:
            day += timedelta(days=1)
        standing = store.standings({profile.email.lower(): day})[profile.email.lower()]
        picks, why_not = pick_papers(ctx, profile, standing)
        if not picks:
            what = "nothing for the next digest yet" if existing else "nothing to preview"
            hint = (
                "the profile's keywords, examples or min_score decide what matches"
                if "matched" in why_not
                else "`digest ingest` fetches new papers"
            )
            raise DigestError(f"{email}: {what}: {why_not}", hint)
        message_id = message_id_for(profile.email, day, cfg.smtp.from_address)
    rendered = render_for(ctx, profile, picks, day)
    store.remember_refs(ctx.refs)
    message = compose(cfg, profile, rendered, message_id, now, ctx.signer)
    shown = existing if existing is not None and not next_digest else None
    return Preview(rendered, message, picks, day, shown)
