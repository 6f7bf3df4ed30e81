"""Planning on every core while the engine already sends: `digest run` for a large list.

The run's context (vocabulary, listing layout, profiles) is made once in the parent; forked
planners inherit it (the arrays are shared copy-on-write, not loaded again) and each plans every
k-th batch of subscribers, writing its delivery rows to the database as it goes. The parent
meanwhile runs the delivery engine over and over, so sending starts with the first planned
batch and the cycle takes about as long as its slower half. The database is the only channel
between them (rows are claimed as always): a planner that dies leaves no half-planned batch
(one transaction per batch), and the parent plans what it left.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from multiprocessing.connection import Connection, wait
from typing import Any, cast

from threadpoolctl import threadpool_limits

from digest.profiles import Profile

log = logging.getLogger(__name__)
# How long the parent waits between engine passes when nothing was due.
IDLE = 0.3

Due = tuple[str, date]
Plan = Callable[[list[Profile]], tuple[list[Any], dict[str, float], list[Due]]]


def plan_in_processes(
    plan: Plan,
    batches: list[list[Profile]],
    workers: int,
    meanwhile: Callable[[], bool],
    progress: Callable[[int], None] | None = None,
    in_child: Callable[[], None] = lambda: None,
    halted: Callable[[], bool] = lambda: False,
) -> tuple[list[Any], dict[str, float], list[Due]]:
    """Run ``plan`` over the batches in ``workers`` forked processes, calling ``meanwhile``
    in this one until they are done. ``meanwhile`` returns False to stop calling it (delivery
    paused): planning goes on, the digests wait. ``halted`` ends planning (the service is
    stopping): the planners are terminated, a batch in progress rolls back, and what was not
    planned is left for the next run.

    Returns the planners' results, their stage times (summed over processes) and the
    (subscriber, day) of every digest they left due, each batch's as soon as it is committed,
    so a planner that fails later loses none of them. ``in_child`` runs first in each
    planner (to let go of the parent's database connections).
    """
    mp = multiprocessing.get_context("fork")
    planners: dict[Connection, _Planner] = {}
    for share in (batches[k::workers] for k in range(workers)):
        recv, send = mp.Pipe(duplex=False)
        proc = mp.Process(target=_planner, args=(plan, share, send, in_child), daemon=True)
        proc.start()
        send.close()
        planners[recv] = _Planner(proc, share)
    results: list[Any] = []
    stages: dict[str, float] = {}
    due: list[Due] = []
    left: list[list[Profile]] = []
    going = True
    planned = 0

    def take(r: list[Any], s: dict[str, float], d: list[Due]) -> None:
        results.extend(r)
        due.extend(d)
        for k, v in s.items():
            stages[k] = stages.get(k, 0.0) + v

    while planners:
        if halted():
            for planner in planners.values():
                planner.proc.terminate()
                planner.proc.join()
            return results, stages, due
        for ready in wait(list(planners), timeout=0):
            conn = cast(Connection, ready)
            planner = planners[conn]
            try:
                message = conn.recv()
            except EOFError:  # the planner died without a word: its unfinished batches
                message = ("error", f"exit status {planner.proc.exitcode}")
            if message[0] == "batch":
                take(*message[1:])
                planner.finished += 1
                planned += 1
                if progress:
                    progress(planned)
                continue
            if message[0] == "error":
                log.warning(
                    "a planning process failed (%s); its subscribers are planned here",
                    message[1],
                )
                left += planner.share[planner.finished :]
            planner.proc.join()
            del planners[conn]
        if not planners:
            break
        t0 = time.monotonic()
        if going:
            going = meanwhile()
        if time.monotonic() - t0 < IDLE:
            time.sleep(IDLE)
    for batch in left:
        if halted():
            break
        take(*plan(batch))
    return results, stages, due


@dataclass
class _Planner:
    proc: multiprocessing.process.BaseProcess
    share: list[list[Profile]]
    finished: int = 0  # batches it reported planned (committed)


def _planner(
    plan: Plan, share: list[list[Profile]], conn: Connection, in_child: Callable[[], None]
) -> None:
    # One BLAS thread each: the planners already fill the cores, and BLAS threads that spin
    # waiting for a core made the models stage five times slower with two planners.
    limits = threadpool_limits(limits=1)
    try:
        in_child()
        for batch in share:
            conn.send(("batch", *plan(batch)))
        conn.send(("done",))
    except Exception as exc:  # reported to the parent, which plans the rest itself
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        limits.restore_original_limits()
        conn.close()
