"""The project's ranker under the EVAL.md protocol, driven the way `digest run` drives it.

Papers go into a real SQLite store; each simulated subscriber is a `Profile` whose example
papers are arXiv ids; likes and dislikes are written with `Store.set_feedback`; every day the
models come from `pipeline.prepare_models` (trained, persisted, reused unless their inputs
changed, then one product scores the listing for all subscribers) and the order from
`pipeline.rank_pool`, the function behind every digest. Only the candidate filter of a real
run (papers since the last digest) is left out: the protocol fixes each day's listing.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from eval_data import CATEGORIES, Reader, Split
from eval_ranking import K, Result, Tracker
from sqlmodel import Session

from digest.config import Config
from digest.mail.render import environment
from digest.profiles import Interests, Profile
from digest.rank import Ranker
from digest.rank.features import Vocabulary
from digest.rank.params import DEFAULT, RankParams
from digest.service.context import Context, prepare_models
from digest.service.picking import rank_pool
from digest.store import Store
from digest.store.schema import Paper as StoredPaper

# The official arXiv names of the evaluated categories: the keywords a new subscriber
# interested in the area might plausibly type (the cold-start measurement).
CATEGORY_NAMES = {
    "cs.RO": ["robotics"],
    "cs.GR": ["graphics"],
    "cs.IR": ["information retrieval"],
    "cs.HC": ["human-computer interaction"],
    "cs.CR": ["cryptography", "security"],
    "cs.MA": ["multiagent systems"],
    "cs.CY": ["computers and society"],
    "eess.IV": ["image and video processing"],
    "cs.LG": ["machine learning"],
    "cs.SD": ["sound"],
    "cs.IT": ["information theory"],
    "cs.GT": ["game theory"],
    "cs.MM": ["multimedia"],
    "cs.SE": ["software engineering"],
}
assert set(CATEGORY_NAMES) == set(CATEGORIES)


def _stored(p: object) -> StoredPaper:
    return StoredPaper(
        id=p.id,  # type: ignore[attr-defined]
        title=p.title,  # type: ignore[attr-defined]
        abstract=p.abstract,  # type: ignore[attr-defined]
        authors=p.authors,  # type: ignore[attr-defined]
        announced=p.day,  # type: ignore[attr-defined]
        announce_type="new",
    )


class Pipeline:
    """A workspace holding the split: one vocabulary, fitted once on the history (the corpus:
    in the first-week splits, what a new instance holds)."""

    def __init__(self, split: Split, root: Path) -> None:
        self.split = split
        self.root = root
        cfg = Config()
        # A listing reaches back `lookback_days` from its newest paper (Context.within): a
        # weekly listing is read as a week, not as its last three days.
        span = max(((d[-1].day - d[0].day).days + 1 for d in split.days if d), default=1)
        digest = cfg.digest.model_copy(update={"lookback_days": span})
        self.cfg = cfg.model_copy(
            update={"data_dir": root, "subscribers_dir": root / "subs", "digest": digest}
        )
        self.history = [_stored(p) for p in split.history]
        self.days = [[_stored(p) for p in day] for day in split.days]
        t0 = time.perf_counter()
        self.vocab = Vocabulary(self.history)
        self.fit_seconds = time.perf_counter() - t0
        self.n = 0

    @contextmanager
    def store(self) -> Iterator[Store]:
        """A fresh database per method, so no method reuses another's stored models."""
        self.n += 1
        store = Store(f"sqlite:///{self.root / f'eval{self.n}.db'}")
        store.upgrade()
        with Session(store.engine) as s:
            s.add_all(
                [
                    StoredPaper.model_validate(p.model_dump())
                    for p in self.history + [q for day in self.days for q in day]
                ]
            )
            s.commit()
        try:
            yield store
        finally:
            store.dispose()

    def context(
        self,
        store: Store,
        day: list[StoredPaper],
        subs: list[Profile],
        params: RankParams = DEFAULT,
    ) -> Context:
        return Context(
            cfg=self.cfg,
            store=store,
            profiles=subs,
            profile_errors=[],
            ranker=Ranker(self.history, self.vocab, params),
            env=environment(self.cfg),
            latest=None,
            listing=day,
        )


MakeProfile = Callable[[Reader, str, Split], Profile]


def with_examples(reader: Reader, email: str, split: Split) -> Profile:
    ids = [split.history[i].id for i in reader.examples]
    return Profile(email=email, interests=Interests(papers=ids))


def with_keywords(reader: Reader, email: str, split: Split) -> Profile:
    return Profile(email=email, interests=Interests(keywords=CATEGORY_NAMES[reader.group]))


def evaluate(
    pipe: Pipeline,
    make: MakeProfile,
    stats: dict[str, float] | None = None,
    params: RankParams = DEFAULT,
) -> Result:
    """nDCG@10 and MAP without feedback, nDCG@10 with feedback from the split's
    `feedback_from` on; ``params`` are the ranking parameters under test (an ablation)."""
    split = pipe.split
    result = Result()
    track = Tracker(split, result)
    readers = split.readers
    with pipe.store() as store:
        plain = [make(r, f"r{i}@eval.example", split) for i, r in enumerate(readers)]
        rated = [make(r, f"r{i}-fb@eval.example", split) for i, r in enumerate(readers)]
        ranking_seconds: list[float] = []
        retrained = 0
        for d, day in enumerate(pipe.days):
            rel_of = [r.relevant(split.days[d]) for r in readers]
            for group in (plain, rated):
                t0 = time.perf_counter()
                ctx = pipe.context(store, day, group, params)
                prepare_models(ctx, group)
                retrained += ctx.retrained
                orders = [[p.paper.id for p in rank_pool(ctx, prof, day, True)] for prof in group]
                ranking_seconds.append(time.perf_counter() - t0)
                position = ctx.position
                for i, prof in enumerate(group):
                    rel = rel_of[i]
                    ranked = rel[[position[pid] for pid in orders[i]]]
                    if group is plain:
                        track.plain(readers[i], d, ranked)
                        continue
                    track.rated(readers[i], d, ranked)
                    for pid in orders[i][:K]:
                        verdict = "like" if rel[position[pid]] else "dislike"
                        store.set_feedback(prof.email, pid, verdict)
        if stats is not None:
            stats["day_seconds"] = float(np.median(ranking_seconds))
            stats["retrained"] = retrained
    return result


@contextmanager
def workspace(split: Split) -> Iterator[Pipeline]:
    with tempfile.TemporaryDirectory(prefix="digest-eval-") as tmp:
        yield Pipeline(split, Path(tmp))
