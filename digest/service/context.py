"""A run's context: the profiles, the corpus and its vocabulary, the listing laid out once,
and every reader's model and scores, made per batch (digest.service.pipeline drives it)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cached_property
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Protocol

import jinja2
import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from digest.config import Config
from digest.errors import ProfileError
from digest.ingest.run import lookup_papers
from digest.mail.blocks import PaperBlocks
from digest.mail.frames import Frames
from digest.mail.links import Signer
from digest.mail.render import environment
from digest.packed import Profiles
from digest.profile_files import LoadResult, cache_file, load_profiles
from digest.profiles import Profile, topics_of
from digest.rank.features import Vocabulary, corpus_version, joined_text
from digest.rank.model import SubscriberModel
from digest.rank.ranker import Ranker, Ratings
from digest.record import BACKFILL, NOT_LISTED
from digest.service.schedule import longest_gap
from digest.store.failures import explain, first_line
from digest.store.feedback import TrainedModel
from digest.store.papers import Entry, Store, source_name
from digest.store.schema import Paper, as_utc_naive
from digest.text import forget_plain

log = logging.getLogger(__name__)
# How long `refresh_apart` waits for the fit's child process.
FIT_TIMEOUT = 1800
# How far back a vote's paper is looked up to find the topic it was shown under.
SECTIONS_DAYS = 120


@dataclass
class Context:
    cfg: Config
    store: Store
    profiles: Profiles
    profile_errors: list[ProfileError]
    ranker: Ranker
    env: jinja2.Environment
    latest: date | None
    # The listing papers of the lookback window, loaded once per run for every subscriber.
    listing: list[Paper]
    # Per model (`Profile.model_key`: the lower-case address, or a lab list's), filled by
    # `prepare_models`: model, examples, feedback, and the model's raw scores of the listing
    # (one product for everyone).
    models: dict[str, SubscriberModel] = field(default_factory=dict)
    examples: dict[str, list[Paper]] = field(default_factory=dict)
    feedback: dict[str, Ratings] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    retrained: int = 0
    position: dict[str, int] = field(init=False)  # listing paper id -> index in `listing`

    # The run's time: whether the newest listing is today's, and which upvotes are current.
    now: datetime | None = None
    # Link refs of the digests rendered in this batch (ref -> email), recorded in one go.
    refs: dict[str, str] = field(default_factory=dict)
    # Each paper's reader-independent part of the template context, made once per run.
    blocks: PaperBlocks = field(default_factory=PaperBlocks)
    # The HTML frame, inlined once per shape (number of papers, trending, day) in a run.
    frames: Frames = field(default_factory=Frames)

    def __post_init__(self) -> None:
        self.position = {p.id: j for j, p in enumerate(self.listing)}
        self.ranker.use_listing(self.listing)
        self.first_seen = np.array([_micros(p.first_seen) for p in self.listing], dtype=np.int64)
        self._by_sources: dict[frozenset[str] | None, np.ndarray] = {}
        # Each listing paper's days before its source's newest (as `listing_of` counts them).
        self.age = np.array(source_ages(self.listing), dtype=np.int64)
        self._within: dict[int, np.ndarray] = {}

    @property
    def today(self) -> date | None:
        return self.now.date() if self.now is not None else None

    @cached_property
    def upvoted(self) -> list[int]:
        """The listing's Hugging Face papers (positions), most upvoted first, among equal
        upvotes the newer (larger id) first: laid out once, not per reader. Only papers whose
        record changed (new upvotes, say) in the last `lookback_days`: while the Hugging Face
        source brings nothing new, its last listing's runners-up must not come out a batch a
        day as "trending"."""
        listing = self.listing
        fresh = None
        if self.now is not None:
            fresh = as_utc_naive(self.now) - timedelta(days=self.cfg.digest.lookback_days)
        found = [
            j
            for j, p in enumerate(listing)
            if p.upvotes is not None and (fresh is None or as_utc_naive(p.updated) >= fresh)
        ]
        return sorted(found, key=lambda j: (listing[j].upvotes or 0, listing[j].id), reverse=True)

    def reach(self, profile: Profile) -> int:
        """How many listing days this reader's digest draws on: `lookback_days`, and as many
        days more as they wait between send days (the listing reaches back for the reader who
        waits longest)."""
        return self.cfg.digest.lookback_days + longest_gap(profile.send_days) - 1

    def within(self, profile: Profile) -> np.ndarray:
        """The listing papers inside this reader's own reach (`reach`)."""
        days = self.reach(profile)
        mask = self._within.get(days)
        if mask is None:
            mask = self._within[days] = self.age < days
        return mask

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
            for key in (t.model_key for t in topics_of(p)):
                own = [e.id for e in self.examples.get(key, ()) if e.id.startswith("library:")]
                if own:  # a reader's library texts: transformed for them alone
                    self.ranker.vocab.forget(own)
                for per_reader in (self.models, self.examples, self.feedback, self.scores):
                    per_reader.pop(key, None)

    @cached_property
    def signer(self) -> Signer:
        """The link keys, read once per run rather than once per digest (lazily: a dry run and
        the evaluation render nothing and need no key)."""
        return Signer(self.cfg)


def profile_cache(cfg: Config) -> Path:
    """Where the last load's profiles are kept, so unchanged files are not parsed again."""
    return cache_file(cfg.data_dir)


def prepare(cfg: Config, store: Store, now: datetime) -> Context:
    loaded = load_site_profiles(cfg)
    for err in loaded.errors:
        log.debug("%s", err)  # reported by the caller: the run report, serve's reload
    # A reader with send days (a weekly digest) ranks what arrived since their last digest:
    # the listing reaches back as far as the longest wait between two of anyone's send days.
    gap = max((longest_gap(p.send_days) for p in loaded.profiles.schedules), default=1)
    lookback = cfg.digest.lookback_days + gap - 1
    listed, ids, examples = _window(cfg, store, now.date(), loaded.example_papers, lookback)
    full = store.papers([e.id for e in listed])
    listing = [full[e.id] for e in listed if e.id in full]
    latest = max((p.announced for p in listing), default=None)
    # The LaTeX of what readers will see, read as text once here (stored at ingest; papers
    # stored before that are converted now, once): forked planners inherit the readings.
    shown = [t for p in listing for t in (p.title, p.abstract)]
    forget_plain()  # the readings of earlier runs and ingests: a `serve` keeps only this run's
    store.plain_texts(shown + list(examples.values()))
    return Context(
        cfg=cfg,
        store=store,
        profiles=loaded.profiles,
        profile_errors=loaded.errors,
        ranker=Ranker([], vocabulary(cfg, store, ids)),
        env=environment(cfg, auto_reload=False),
        latest=latest,
        listing=listing,
        now=now,
    )


def refresh_vocabulary(cfg: Config, store: Store, today: date) -> None:
    """The vocabulary of the corpus window as it stands fitted now, if the window changed; if
    it did not, nothing is read but the stored one's version (a backfill with nothing new
    asks too, and loading all of it takes most of a second for nothing).

    Called once new papers are stored (`digest ingest`, serve's fetches): fitting takes
    seconds at 20,000 papers, and done here it is over before the readers' send time rather
    than inside the run or send slot that needs it. That run finds it on disk (and the
    profiles in their cache). Example papers are not looked up here (a fetch of one feed
    should not wait on arXiv's API): the stored ones count, and a run that finds more, or
    whose profiles name others since, fits again.
    """
    wanted = load_site_profiles(cfg).example_papers  # not the profiles: gone before the fit
    _, ids, _ = _window(cfg, store, today, wanted, look_up=False)
    if Vocabulary.stored_version(_vocabulary_path(cfg)) != corpus_version(ids):
        vocabulary(cfg, store, ids)


def refresh_after_ingest(cfg: Config, store: Store, today: date) -> str | None:
    """`refresh_vocabulary` once an ingest stored new papers. None, or one line saying why
    the vocabulary could not be fitted now: the papers are stored whatever happens here, and
    the next run fits it again (and reports whatever stops it there)."""
    try:
        refresh_vocabulary(cfg, store, today)
    except Exception as exc:  # see above: nothing of the ingest is lost
        log.debug("fitting the vocabulary after the ingest failed", exc_info=True)
        if isinstance(exc, SQLAlchemyError):
            why = str(explain(exc, store.safe_url))  # one line, no SQL or parameters
        elif isinstance(exc, OSError) and exc.filename:
            why = f"{exc.strerror or type(exc).__name__}: {exc.filename}"
        else:
            why = f"{type(exc).__name__}: {first_line(str(exc))}"
        return f"the vocabulary was not fitted now ({why}); the next run fits it"
    return None


def refresh_apart(cfg: Config, store: Store, today: date) -> str | None:
    """`refresh_after_ingest` in a forked child, for `digest ingest`: the fit is the most
    memory an ingest asks for, and a machine running out of it does not raise MemoryError but
    kills the process (the kernel's OOM killer; OpenBLAS aborts when an allocation fails).
    Then the child ends, not the ingest whose papers are stored and whose exit status a cron
    job reads: one line says so. (Not for `digest serve`: a fork from its threads could
    inherit a lock another thread holds, and it fits under the slot lock in its own process.)
    """
    mp = multiprocessing.get_context("fork")
    recv, send = mp.Pipe(duplex=False)
    child = mp.Process(target=_refresh_child, args=(cfg, store, today, send), daemon=True)
    child.start()
    send.close()  # the child's end only: EOF here once it is gone
    try:
        # Bounded: a child that hangs (a lock inherited in a held state) must not hold a cron
        # job for ever. A fit of 20,000 papers takes seconds.
        if not recv.poll(FIT_TIMEOUT):
            child.kill()
            child.join()
            return (
                f"the vocabulary was not fitted now (the fit took over {FIT_TIMEOUT} s and was "
                "stopped); the next run fits it"
            )
        said: str | None = recv.recv()
    except EOFError:
        child.join()
        code = child.exitcode or 0
        how = f"was killed by signal {-code}" if code < 0 else f"stopped with exit status {code}"
        return (
            f"the vocabulary was not fitted now (the fit {how}, most likely out of memory); "
            "the next run fits it"
        )
    finally:
        recv.close()
    child.join()
    return said


def _refresh_child(cfg: Config, store: Store, today: date, send: Connection) -> None:
    # Ctrl-C reaches the whole process group, and a daemon child is sent SIGTERM when its
    # parent exits (a backfill's handler turns SIGTERM into KeyboardInterrupt, and the fork
    # inherits it): the parent says what an interruption means, and a traceback from here
    # only buried that line. Stopped, the child just ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    store.engine.dispose(close=False)  # the parent's connections stay the parent's
    send.send(refresh_after_ingest(cfg, store, today))
    send.close()


def load_site_profiles(cfg: Config) -> LoadResult:
    """Every profile of the site, unchanged files from the profile cache."""
    return load_profiles(
        cfg.subscribers_dir, [s.name for s in cfg.sources], cache=profile_cache(cfg)
    )


def _window(
    cfg: Config,
    store: Store,
    today: date,
    wanted: list[str],
    lookback: int | None = None,
    look_up: bool = True,
) -> tuple[list[Entry], list[str], dict[str, str]]:
    """The listing's entries (of ``lookback`` days, else `lookback_days`), the ids the
    vocabulary is fitted on (the corpus window and every stored example paper) and the
    example papers' titles. ``look_up``: fetch the example papers the store lacks first."""
    if wanted and look_up:
        lookup_papers(store, cfg, wanted, today)
    corpus = corpus_of(cfg, store, today)
    listed = listing_of(corpus, lookback or cfg.digest.lookback_days)
    ids = [e.id for e in corpus]
    known = set(ids)
    examples = store.titles(wanted)
    # Example papers from outside the window join the vocabulary's corpus.
    ids += [pid for pid in examples if pid not in known]
    return listed, ids, examples


def corpus_of(cfg: Config, store: Store, today: date) -> list[Entry]:
    """The papers of the last `corpus_days` of each configured source, oldest first.

    Each source counts back from its own newest listing day: a source ahead of the others (a
    feed dated wrongly, or files of different years) cannot push the others out, and a source
    removed from the config no longer feeds anybody's digest. A source with a backfill but no
    listing yet (`digest init --backfill`, before the first `digest ingest`) counts back from
    its newest backfilled paper, so the backfill is the vocabulary from the start; the first
    listing then takes over as the anchor (its day is the backfill's last day or later).
    """
    # A date past tomorrow (any time zone's today) is a mistake, stored before ingest checked.
    until = today + timedelta(days=1)
    span = timedelta(days=cfg.digest.corpus_days)
    by_id: dict[str, Entry] = {}
    for src in cfg.sources:
        newest = store.newest_day(src.name, until, exclude_types=NOT_LISTED)
        if newest is None:
            newest = store.newest_day(src.name, until, only_types=(BACKFILL,))
        if newest is not None:
            for e in store.source_entries(src.name, newest - span, newest):
                by_id.setdefault(e.id, e)
    return sorted(by_id.values(), key=lambda e: (e.announced, e.id))


def listing_of(papers: list[Entry], lookback_days: int) -> list[Entry]:
    """The listing papers within `lookback_days` of their own source's newest day.

    Each source keeps its own window: a feed whose items carry a wrong date (or one that is
    ahead of the others) cannot push every other source's papers out of everybody's listing.
    """
    listed = [p for p in papers if p.announce_type not in NOT_LISTED]
    return [p for p, age in zip(listed, source_ages(listed), strict=True) if age < lookback_days]


class _Dated(Protocol):
    @property
    def announced(self) -> date: ...
    @property
    def sources(self) -> list[str]: ...


def source_ages(papers: Sequence[_Dated]) -> list[int]:
    """Each paper's days before its own source's newest day among ``papers`` (of several
    sources, the nearest): what a listing window counts in."""
    newest: dict[str, date] = {}
    for p in papers:
        for tag in p.sources or [""]:  # a paper stored without a source tag: a group of its own
            if p.announced > newest.get(tag, date.min):
                newest[tag] = p.announced
    return [min((newest[t] - p.announced).days for t in p.sources or [""]) for p in papers]


def vocabulary(cfg: Config, store: Store, ids: list[str]) -> Vocabulary:
    """The vocabulary of this corpus window: reused from disk while the window is unchanged.
    The papers' texts are read only to fit it again."""
    path = _vocabulary_path(cfg)
    # The pickled vocabulary of earlier releases: 129 MB at 20,000 papers, never read again.
    with contextlib.suppress(OSError):  # models not a directory: said when saving, below
        (cfg.data_dir / "models" / "vocabulary.pkl").unlink(missing_ok=True)
    version = corpus_version(ids)
    stored = _stored(path, version)
    if stored is not None:
        return stored
    # One fit at a time in a data directory: a cron job's `digest ingest` still fitting when
    # `digest run` starts would otherwise fit the same window beside it, twice the memory.
    # The one that waited reads what the other stored.
    with _fitting(path):
        stored = _stored(path, version)
        if stored is not None:
            return stored
        fitted = Vocabulary.from_texts(ids, (joined_text(*t) for t in store.texts(ids)))
        try:
            fitted.save(path)
        except OSError as exc:
            log.warning(
                "cannot keep the vocabulary in %s (%s); it is fitted again next run", path, exc
            )
    return fitted


def _vocabulary_path(cfg: Config) -> Path:
    return cfg.data_dir / "models" / "vocabulary.npz"


def _stored(path: Path, version: str) -> Vocabulary | None:
    """The stored vocabulary if it is of this window (only its version read otherwise)."""
    if Vocabulary.stored_version(path) != version:
        return None
    stored = Vocabulary.load(path)
    return stored if stored is not None and stored.version == version else None


@contextmanager
def _fitting(path: Path) -> Iterator[None]:
    """An exclusive lock on a file beside the vocabulary, held while it is fitted; without
    one (a read-only directory) the fit goes ahead alone, as before."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # lets the lock go


def prepare_models(ctx: Context, profiles: list[Profile], save: bool = True) -> list[TrainedModel]:
    """Every subscriber's model, retrained only where profile, feedback or vocabulary changed,
    and the listing scored for all of them at once. Returns the models (re)trained, which are
    stored here unless ``save`` is False (a run stores them with the batch's digests)."""
    # A lab list's recipients share one model: made once, under the list's key. A profile
    # with topics has one per topic.
    each = [t for p in profiles for t in topics_of(p)]
    keys = list(dict.fromkeys(p.model_key for p in each))
    one_each = {p.model_key: p for p in each}
    members = {k: one_each[k].members for k in keys}
    verdicts = ctx.store.feedback_all(sorted({m for ms in members.values() for m in ms}))
    wanted = {pid for p in one_each.values() for pid in p.interests.papers}
    wanted |= {e.arxiv_id for p in one_each.values() for e in p.library if e.arxiv_id}
    wanted |= {pid for fb in verdicts.values() for pid in fb}
    papers = ctx.store.papers(sorted(wanted))
    stored = ctx.store.rank_models(keys)
    topical = {m for p in profiles if p.topics for m in p.members if m in verdicts}
    # Votes on papers of the last months' digests are told apart by topic; older ones (rare,
    # and costly to look up: every digest's reasons) train every topic.
    since = (ctx.today or date.today()) - timedelta(days=SECTIONS_DAYS)
    shown = ctx.store.shown_sections(sorted(topical), since) if topical else {}
    sections = {p.model_key: {f"topic:{t.name}" for t in p.topics} for p in profiles}
    readers = []
    for key in keys:
        profile = one_each[key]
        given = _pooled([verdicts.get(m, {}) for m in members[key]])
        if profile.section:
            given = _under(given, profile, members[key], shown, sections)
        fb = Ratings(
            liked=[papers[i] for i, v in given.items() if v == "like" and i in papers],
            disliked=[papers[i] for i, v in given.items() if v == "dislike" and i in papers],
        )
        examples = [papers[i] for i in profile.interests.papers if i in papers]
        if profile.library:
            examples += _library_examples(profile, papers, {p.id for p in examples})
        readers.append((profile, examples, fb, stored.get(key)))
        ctx.examples[key], ctx.feedback[key] = examples, fb
    fresh: list[TrainedModel] = []
    for key, (model, retrained) in zip(keys, ctx.ranker.models(readers), strict=True):
        if retrained:
            fresh.append(TrainedModel(key, model.fingerprint, model.vocabulary, model.to_bytes()))
        ctx.models[key] = model
    if save:
        ctx.store.save_rank_models(fresh)
    ctx.retrained += len(fresh)
    if ctx.listing:
        _score(ctx, keys, one_each)
    return fresh


def _score(ctx: Context, keys: list[str], one_each: dict[str, Profile]) -> None:
    """Every model's raw scores of the listing, one product per reach of listing: a daily
    reader's digest draws only on the last `lookback_days`, so where weekly readers made the
    listing longer, the others are scored on their own days alone (the rest of the row, never
    read, left at zero)."""
    by_reach: dict[int, list[str]] = {}
    for key in keys:
        by_reach.setdefault(ctx.reach(one_each[key]), []).append(key)
    for days, group in by_reach.items():
        models = [ctx.models[k] for k in group]
        cols = np.flatnonzero(ctx.age < days)
        if len(cols) == len(ctx.listing):
            matrix = ctx.ranker.score_all(models, ctx.listing)
        else:
            part = ctx.ranker.score_all(models, [ctx.listing[j] for j in cols])
            matrix = np.zeros((len(group), len(ctx.listing)), dtype=part.dtype)
            matrix[:, cols] = part
        for key, row in zip(group, matrix, strict=True):
            ctx.scores[key] = row


def _library_examples(profile: Profile, papers: dict[str, Paper], have: set[str]) -> list[Paper]:
    """The `papers_file` entries as example papers: the stored paper where the entry has an
    arXiv id the store knows (looked up like `papers`), else the entry's own title and
    abstract, as a paper that is never stored (its id a hash of its text)."""
    out = []
    for entry in profile.library:
        found = papers.get(entry.arxiv_id) if entry.arxiv_id else None
        if found is not None:
            if found.id not in have:
                have.add(found.id)
                out.append(found)
            continue
        if not entry.title:
            continue  # an arXiv id the look-up did not find, and no text of its own
        digest = hashlib.sha256(f"{entry.title}\0{entry.abstract}".encode()).hexdigest()[:24]
        pid = f"library:{digest}"
        if pid not in have:
            have.add(pid)
            out.append(
                Paper(id=pid, title=entry.title, abstract=entry.abstract, announced=date.min)
            )
    return out


def _under(
    given: dict[str, str],
    topic: Profile,
    members: tuple[str, ...],
    shown: dict[str, dict[str, str]],
    sections: dict[str, set[str]],
) -> dict[str, str]:
    """The verdicts that train this topic: on papers shown under it, and on papers shown under
    no topic the profile has now (a trending section, a topic renamed since, a verdict given
    with `digest feedback`), which train every topic."""
    owner = topic.model_key.rsplit(":", 1)[0]
    current = sections.get(owner, set())
    where = {pid: sec for m in members for pid, sec in shown.get(m, {}).items()}
    return {
        pid: v
        for pid, v in given.items()
        if where.get(pid) not in current or where[pid] == topic.section
    }


def _pooled(each: list[dict[str, str]]) -> dict[str, str]:
    """One reader's verdicts as they are; a lab list's pooled: a paper one recipient liked and
    another disliked counts as neither."""
    if len(each) == 1:
        return each[0]
    out: dict[str, str] = {}
    split: set[str] = set()
    for given in each:
        for pid, verdict in given.items():
            if out.setdefault(pid, verdict) != verdict:
                split.add(pid)
    return {pid: v for pid, v in out.items() if pid not in split}


def from_sources(paper: Paper, allowed: set[str] | None) -> bool:
    """Whether the paper came through one of the profile's `sources` (None: any source)."""
    return allowed is None or any(source_name(t) in allowed for t in paper.sources)


_EPOCH = datetime(1970, 1, 1)


def _micros(when: datetime) -> int:
    """A time as whole microseconds since 1970 (UTC): exact, unlike a float timestamp."""
    return (as_utc_naive(when) - _EPOCH) // timedelta(microseconds=1)
