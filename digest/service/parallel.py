"""Planning on every core while the engine already sends: `digest run` for a large list.

The run's context (vocabulary, listing layout, profiles) is made once in the parent; forked
planners inherit it (the arrays are shared copy-on-write, not loaded again) and each plans every
k-th batch of subscribers, writing its delivery rows to the database as it goes. The parent
meanwhile runs the delivery engine over and over, so sending starts with the first planned
batch and the cycle takes about as long as its slower half. The database is the only channel
between them (rows are claimed as always): a planner that dies leaves no half-planned batch
(one transaction per batch), and the parent plans what it left.

With `claims` (every real run), batches are not dealt out in advance: each planner, and each
node on the same database, claims the next batch nobody has (digest.store.claims), so two
nodes split a run between them, and a batch a dead node held is taken over once its lease
runs out. A node with nothing left to claim keeps sending while others still plan, then ends.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from multiprocessing.connection import Connection, wait
from typing import Any, cast

from threadpoolctl import threadpool_limits

from digest.profiles import Profile
from digest.rank import lowrank
from digest.store.papers import Store

log = logging.getLogger(__name__)
# How long the parent waits between engine passes when nothing was due.
IDLE = 0.3

Due = tuple[str, date]
Plan = Callable[[Sequence[Profile]], tuple[list[Any], dict[str, float], list[Due]]]


@dataclass
class Claims:
    """A run's batches as claims in the database, shared by every node planning that run."""

    store: Store
    run: str
    batches: int
    lease: timedelta
    owner: str = field(
        default_factory=lambda: f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"
    )
    generation: int = field(init=False)

    def __post_init__(self) -> None:
        self.generation = self.store.plan_generation(self.run, self.batches)

    def next(self, take_own: bool = False) -> int | None:
        return self.store.claim_plan_batch(
            self.run,
            self.generation,
            self.batches,
            self.owner,
            datetime.now(UTC),
            self.lease,
            take_own,
        )

    def done(self, batch: int) -> None:
        self.store.finish_plan_batch(
            self.run, self.generation, batch, self.owner, datetime.now(UTC)
        )

    @contextmanager
    def holding(self, batch: int) -> Iterator[None]:
        """While planning `batch`, renew its claim every third of the lease, so a batch that
        takes longer than the lease is not taken over (and planned twice) by another node."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.lease.total_seconds() / 3):
                try:
                    self.store.renew_plan_batch(
                        self.run, self.generation, batch, self.owner, datetime.now(UTC)
                    )
                except Exception as exc:  # a lost renewal costs duplicate work, never a digest
                    log.debug("could not renew the claim of batch %s: %s", batch, exc)

        keeper = threading.Thread(target=renew, daemon=True, name="claim-lease")
        keeper.start()
        try:
            yield
        finally:
            stop.set()
            keeper.join()

    def others_planning(self) -> bool:
        now = datetime.now(UTC)
        return self.store.batches_in_progress(self.run, self.generation, now, self.lease) > 0


@dataclass
class _Gathered:
    """What planned batches reported: results, stage times summed, digests left due."""

    results: list[Any] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    due: list[Due] = field(default_factory=list)

    def take(self, results: list[Any], stages: dict[str, float], due: list[Due]) -> None:
        self.results += results
        self.due += due
        for k, v in stages.items():
            self.stages[k] = self.stages.get(k, 0.0) + v

    def out(self) -> tuple[list[Any], dict[str, float], list[Due]]:
        return self.results, self.stages, self.due


def plan_claimed(
    plan: Plan,
    batches: Sequence[Sequence[Profile]],
    claims: Claims,
    meanwhile: Callable[[], bool],
    progress: Callable[[int], None] | None = None,
    halted: Callable[[], bool] = lambda: False,
) -> tuple[list[Any], dict[str, float], list[Due]]:
    """Plan in this process every batch it can claim (its own unfinished ones too: whoever
    held them here is gone), then keep calling ``meanwhile`` while other nodes still plan,
    taking over any batch whose claim runs out."""
    got = _Gathered()
    going, planned = True, 0
    while not halted():
        batch = claims.next(take_own=True)
        if batch is None and not claims.others_planning():
            # Another node's claim may have run out between the two looks: free to take now,
            # and no longer "in progress". Leaving here would leave its batch unplanned.
            batch = claims.next(take_own=True)
            if batch is None:
                break
        if batch is None:
            t0 = time.monotonic()
            if going:
                going = meanwhile()
            time.sleep(max(0.0, IDLE - (time.monotonic() - t0)))
            continue
        with claims.holding(batch):
            got.take(*plan(batches[batch]))
        claims.done(batch)
        planned += 1
        if progress:
            progress(planned)
    return got.out()


def plan_in_processes(
    plan: Plan,
    batches: Sequence[Sequence[Profile]],
    workers: int,
    meanwhile: Callable[[], bool],
    progress: Callable[[int], None] | None = None,
    in_child: Callable[[], None] = lambda: None,
    halted: Callable[[], bool] = lambda: False,
    claims: Claims | None = None,
    silent_after: float = 600.0,
) -> tuple[list[Any], dict[str, float], list[Due]]:
    """Run ``plan`` over the batches in ``workers`` forked processes, calling ``meanwhile``
    in this one until they are done. ``meanwhile`` returns False to stop calling it (delivery
    paused): planning goes on, the digests wait. ``halted`` ends planning (the service is
    stopping): the planners are terminated, a batch in progress rolls back, and what was not
    planned is left for the next run.

    Returns the planners' results, their stage times (summed over processes) and the
    (subscriber, day) of every digest they left due, each batch's as soon as it is committed,
    so a planner that fails later loses none of them. ``in_child`` runs first in each
    planner (to let go of the parent's database connections). With ``claims`` the planners
    claim batches as they go (shared with other nodes), and what they leave unfinished, this
    process plans after them (`plan_claimed`); without, each plans every k-th batch. A
    planner that reports nothing for ``silent_after`` seconds is stopped and its share
    planned here.
    """
    mp = multiprocessing.get_context("fork")
    planners: dict[Connection, _Planner] = {}
    # Everything made so far (100,000 profiles, the listing's papers) moves out of the
    # collector's reach before the fork: a collection in a planner writes to every object it
    # walks, and each page written is copied, so the planners' memory grew toward a full copy
    # of the parent's (1.7 GB summed at 100,000 readers).
    gc.freeze()
    for k in range(workers):
        share = list(range(k, len(batches), workers))
        recv, send = mp.Pipe(duplex=False)
        proc = mp.Process(
            target=_planner, args=(plan, batches, share, claims, send, in_child), daemon=True
        )
        proc.start()
        send.close()
        planners[recv] = _Planner(proc, share)
    got = _Gathered()
    left: list[int] = []
    going = True
    planned = 0

    while planners:
        if halted():
            for conn, planner in planners.items():
                _stop(planner.proc, conn)
            gc.unfreeze()
            return got.out()
        for conn, planner in list(planners.items()):
            if time.monotonic() - planner.heard > silent_after:
                # Stuck (a fork from a threaded `digest serve` can inherit a lock another
                # thread held): stopped, and what it left is planned here. Its batch's claim
                # is ours too (the same owner), so it is taken over at once.
                log.warning(
                    "a planning process said nothing for %.0f s; its subscribers are planned here",
                    silent_after,
                )
                _stop(planner.proc, conn)
                if claims is None:
                    left += [i for i in planner.share if i not in planner.finished]
                del planners[conn]
        for ready in wait(list(planners), timeout=0):
            conn = cast(Connection, ready)
            planner = planners[conn]
            planner.heard = time.monotonic()
            try:
                message = conn.recv()
            except EOFError:  # the planner died without a word: its unfinished batches
                message = ("error", f"exit status {planner.proc.exitcode}")
            if message[0] == "batch":
                got.take(*message[2:])
                planner.finished.add(message[1])
                if claims is not None:
                    # Marked here, once its results are in hand: a planner that dies between
                    # committing a batch and reporting it leaves the claim open, and the batch
                    # is planned again below (its rows stand; its readers get reported).
                    claims.done(message[1])
                planned += 1
                if progress:
                    progress(planned)
                continue
            if message[0] == "error":
                log.warning(
                    "a planning process failed (%s); its subscribers are planned here",
                    message[1],
                )
                if claims is None:  # with claims, its unfinished batch is reclaimed below
                    left += [i for i in planner.share if i not in planner.finished]
            planner.proc.join()
            del planners[conn]
        if not planners:
            break
        t0 = time.monotonic()
        if going:
            going = meanwhile()
        if time.monotonic() - t0 < IDLE:
            time.sleep(IDLE)
    gc.unfreeze()  # the planners are gone: the parent's own garbage is collected again
    if claims is not None:
        got.take(
            *plan_claimed(
                plan, batches, claims, meanwhile if going else lambda: False, None, halted
            )
        )
    for i in left:
        if halted():
            break
        got.take(*plan(batches[i]))
    return got.out()


@dataclass
class _Planner:
    proc: multiprocessing.process.BaseProcess
    share: list[int]  # the batches dealt to it (without claims)
    finished: set[int] = field(default_factory=set)  # batches it reported planned (committed)
    heard: float = field(default_factory=time.monotonic)  # when it last reported


def _stop(proc: multiprocessing.process.BaseProcess, conn: Connection) -> None:
    """End a planner: its batch in progress rolls back. Killed if it does not end at once (a
    planner blocked writing a report to the pipe nobody reads any more would not)."""
    proc.terminate()
    conn.close()
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()


def _planner(
    plan: Plan,
    batches: Sequence[Sequence[Profile]],
    share: list[int],
    claims: Claims | None,
    conn: Connection,
    in_child: Callable[[], None],
) -> None:
    # One BLAS thread each: the planners already fill the cores, and BLAS threads that spin
    # waiting for a core made the models stage five times slower with two planners.
    # The parent's signal handling is not the planner's: `digest serve` wakes its event loop
    # through a file descriptor the planner shares, and ignores SIGTERM for its own shutdown;
    # a planner ends when told (`_stop`), its batch rolled back.
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    limits = threadpool_limits(limits=1)
    lowrank.THREADS = 1
    try:
        in_child()
        dealt = iter(share)
        while (i := claims.next() if claims else next(dealt, None)) is not None:
            with claims.holding(i) if claims else nullcontext():
                result = plan(batches[i])
            conn.send(("batch", i, *result))
            # What outlives a batch (the run's caches: paper blocks, reasons, wrapped text)
            # leaves the collector's reach, as before the fork: each full collection walked
            # all of it again, 6 % of a planner's time. The batch's garbage cycles are
            # collected first (a full collection walks only what is not frozen yet), so none
            # is kept for good; refcounting still frees what is frozen.
            gc.collect()
            gc.freeze()
        conn.send(("done",))
    except Exception as exc:  # reported to the parent, which plans the rest itself
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        limits.restore_original_limits()
        conn.close()
