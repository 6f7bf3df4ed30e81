"""The daily cycle wired together: ingest, rank, render, send, for every subscriber due.

Each step is a plain function from the stage modules; this module only decides who is due and
keeps the delivery rows honest. The CLI and (later) the scheduler both call `run`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlsplit

from digest.config import Config
from digest.errors import DigestError, ExitStatus, ProfileError
from digest.ingest.run import IngestReport, ingest_all
from digest.mail.compose import compose
from digest.mail.engine import EngineReport, deliver
from digest.mail.render import (
    Rendered,
    message_id_for,
)
from digest.packed import Profiles
from digest.profiles import Profile
from digest.rank.ranker import Pick
from digest.service.context import Context, prepare, prepare_models
from digest.service.parallel import Claims, Due, plan_claimed, plan_in_processes
from digest.service.picking import (
    find_profile,
    pick_papers,
    picks_of,
    render_for,
    stored_reasons,
)
from digest.service.schedule import cadence, digest_day, due_on, is_send_day, next_send
from digest.states import DUE, SETTLED_OK, Outcome
from digest.states import Delivery as DS
from digest.store.packing import pack_to_send
from digest.store.papers import Store
from digest.store.planning import FinalState, Planned, Standing
from digest.store.schema import Delivery, Paper

log = logging.getLogger(__name__)


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

    def add(self, results: list[SubscriberResult], stages: dict[str, float]) -> None:
        """Fold in what a batch (or a planning process) reported."""
        self.results += results
        for k, v in stages.items():
            self.stages[k] = self.stages.get(k, 0.0) + v

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


def run(
    cfg: Config,
    store: Store,
    *,
    now: datetime | None = None,
    ingest: bool = True,
    dry_run: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    only: set[str] | None = None,
    halt: threading.Event | None = None,
    real_clock_delivery: bool = False,
) -> RunReport:
    """One full cycle. Safe to repeat: a subscriber already sent today gets nothing more.

    ``only`` limits planning to these subscribers (a send slot); the engine still sends
    everything due, so retries of other subscribers are not held back. More than one batch is
    planned in `[planning] workers` forked processes (also in `digest serve`, see there).
    ``progress(stage, done, total)`` hears of each stage as it goes: ingest, preparing (the
    profiles and the vocabulary), planning (readers), sending (digests).
    """

    def tell(stage: str, done: int, total: int) -> None:
        if progress:
            progress(stage, done, total)

    # A given `now` is the engine's clock too (tests, benches moving the clock), unless the
    # caller only fixes the day planned for (`digest serve`'s catch-up): leases must follow
    # real time, or another node reads a long pass's claims as a dead runner's.
    fixed_clock = now is not None and not real_clock_delivery
    now = now or datetime.now(UTC)
    report = RunReport(day=now.date())
    if not dry_run:
        # Secrets are checked before anything is planned: a missing key is one clear error for
        # the operator, not a failed delivery for every subscriber.
        cfg.web.secret_key()
        cfg.smtp.password()
        _warn_plain_http(cfg)
    if ingest:
        tell("ingest", 0, len(cfg.sources))
        with report.timed("ingest"):
            report.ingest = ingest_all(store, cfg, today=now.date())
        tell("ingest", len(cfg.sources), len(cfg.sources))
    tell("preparing", 0, 1)
    with report.timed("vocabulary"):
        ctx = prepare(cfg, store, now)
    tell("preparing", 1, 1)
    report.profile_errors = ctx.profile_errors
    profiles = ctx.profiles if only is None else ctx.profiles.only(only)
    if only is None and not ctx.profile_errors:
        # Every profile loaded: models of subscribers whose files are gone can go too. (With a
        # broken file its owner is unknown, so nothing is dropped until it is fixed.)
        store.prune_rank_models(ctx.profiles.emails)
    size = cfg.planning.batch_size
    batches = [profiles[i : i + size] for i in range(0, len(profiles), size)]
    engine = EngineReport()

    def send_due() -> bool:
        """One pass of the engine over everything due, including digests left over from
        earlier runs; False once delivery is paused or the run is asked to stop."""
        with report.timed("delivery"):
            engine.add(deliver(store, cfg, now if fixed_clock else None, halt=halt))
        return not (engine.paused or (halt is not None and halt.is_set()))

    def plan(
        packed: Sequence[Profile],
    ) -> tuple[list[SubscriberResult], dict[str, float], list[Due]]:
        part = RunReport(day=report.day)
        batch = list(packed)  # unpacked here, by the planner that plans it (digest.packed)
        due = _plan_batch(ctx, batch, now, dry_run, part)
        ctx.forget(batch)
        return part.results, part.stages, due

    def planned_so_far(n: int) -> None:
        tell("planning", min(n * size, len(profiles)), len(profiles))

    due: list[Due] = []
    workers = min(cfg.planning.processes, len(batches))
    # A dry run records nothing, claims included: it plans every batch itself.
    claims = None if dry_run else _claims(cfg, store, report.day, profiles, len(batches))
    t0 = time.perf_counter()
    halted = lambda: halt is not None and halt.is_set()  # noqa: E731
    if workers > 1:
        results, stages, due = plan_in_processes(
            plan,
            batches,
            workers,
            (lambda: True) if dry_run else send_due,
            planned_so_far,
            in_child=lambda: store.engine.dispose(close=False),
            halted=halted,
            claims=claims,
        )
        report.add(results, stages)
    elif claims is not None:
        results, stages, due = plan_claimed(
            plan, batches, claims, send_due, lambda n: planned_so_far(n), halted
        )
        report.add(results, stages)
    else:
        for n, batch in enumerate(batches):
            planned_so_far(n)
            results, stages, keys = plan(batch)
            report.add(results, stages)
            due += keys
    report.stages["planning"] = time.perf_counter() - t0
    tell("planning", len(profiles), len(profiles))
    if dry_run:
        return report
    tell("sending", 0, len(due))
    if not engine.paused:
        send_due()
    tell("sending", len(due), len(due))
    report.delivery = engine
    with report.timed("storing"):
        store.prune_messages(now.date() - timedelta(days=cfg.digest.keep_days))
        store.prune_claims(datetime.now(UTC) - timedelta(days=cfg.digest.keep_days))
    report.results += _final_states(store, due)
    return report


def _claims(cfg: Config, store: Store, day: date, profiles: Profiles, n: int) -> Claims:
    """The run's batches as claims other nodes share: the run is named by its day, the exact
    list of subscribers and how it is cut into batches, so only nodes that would plan the same
    batches share them (a node with another batch_size, or another list, plans its own)."""
    listed = hashlib.sha256(
        f"{cfg.planning.batch_size}:{n}\n".encode()
        + "\n".join(e.lower() for e in profiles.emails).encode()
    )
    return Claims(
        store, f"{day.isoformat()}:{listed.hexdigest()[:32]}", n,
        timedelta(seconds=cfg.planning.lease_seconds),
    )  # fmt: skip


def _final_states(store: Store, due: list[Due]) -> list[SubscriberResult]:
    """Where each digest planned (or found due) in this run ended, read in batches."""
    return [
        SubscriberResult(d.subscriber, d.state, len(d.paper_ids), _detail(d))
        for d in store.outcomes_on(dict(due))
    ]


def _detail(d: Delivery | FinalState) -> str:
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
) -> list[Due]:
    """Plan one batch of subscribers: their models and scores, what the store knows of them,
    each reader's digest; then the new rows in one transaction. Returns the (subscriber, day)
    of each digest due."""
    with report.timed("storing"):
        standings = ctx.store.standings({p.email.lower(): digest_day(p, now) for p in batch})
    # Models and scores only for the readers this run ranks: not those unsubscribed, served
    # today already, not due (a weekly reader on another day) or trending-only.
    ranked = [p for p in batch if _ranks(p, standings[p.email.lower()], now)]
    with report.timed("models"):
        trained = prepare_models(ctx, ranked, save=False)  # stored with the batch, below
    due: list[Due] = []
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
            due.append((outcome.subscriber, outcome.digest_date))
    with report.timed("storing"):
        due += ctx.store.plan_deliveries(ready, trained, ctx.refs)
        ctx.refs.clear()
    return due


def _ranks(profile: Profile, standing: Standing, now: datetime) -> bool:
    """Whether `_plan_one` will rank this reader's papers."""
    if standing.blocked or standing.today is not None or profile.trending:
        return False
    return due_on(profile, now, standing.last_digest_day)


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
    if not due_on(profile, now, standing.last_digest_day):
        when = next_send(profile, now)
        return SubscriberResult(
            email, Outcome.NOT_DUE, detail=f"{cadence(profile)}; next {when:%Y-%m-%d %H:%M} UTC"
        )
    with report.timed("ranking"):
        picks, why_not = pick_papers(ctx, profile, standing)
    if not picks:
        return SubscriberResult(email, Outcome.NOTHING_NEW, detail=why_not)
    if dry_run:
        return SubscriberResult(
            email, Outcome.DRY_RUN, len(picks), f"would send the digest of {day}"
        )
    message_id = message_id_for(email, day, ctx.cfg.smtp.from_address, ctx.signer.signing_key)
    # Rendered once, here: every attempt sends these exact bytes with this Message-ID.
    with report.timed("rendering"):
        rendered = render_for(ctx, profile, picks, day)
        message = compose(ctx.cfg, profile, rendered, message_id, now, ctx.signer)
    with report.timed("storing"):
        packed = pack_to_send(message)  # compressed now rather than with the batch
    return Planned(
        email,
        day,
        message_id,
        [p.paper.id for p in picks],
        stored_reasons(picks),
        packed,
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
    # For a reader not due today (a weekly digest): when theirs goes out.
    note: str = ""


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
        # A reader with send days: the digest is dated the day it would go out.
        for _ in range(7):
            if is_send_day(profile, day):
                break
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
        message_id = message_id_for(
            profile.email, day, cfg.smtp.from_address, ctx.signer.signing_key
        )
    rendered = render_for(ctx, profile, picks, day)
    store.remember_refs(ctx.refs)
    message = compose(cfg, profile, rendered, message_id, now, ctx.signer)
    shown = existing if existing is not None and not next_digest else None
    note = ""
    if shown is None and profile.send_days and day != digest_day(profile, now):
        when = next_send(profile, now)
        note = (
            f"{profile.email} is {cadence(profile)}: the next digest goes out "
            f"{when:%Y-%m-%d %H:%M} UTC; this is what it would hold now"
        )
    return Preview(rendered, message, picks, day, shown, note)
