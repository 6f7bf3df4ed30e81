"""Planning in several processes while the engine sends (digest.service.parallel): each reader
gets exactly one digest, also when a planner dies half-way through its share."""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from digest.config import Config, PlanningConfig
from digest.service import pipeline
from digest.store import Store
from tests.conftest import NOW, SmtpServer, write_profile

READERS = 30


def _readers(cfg: Config) -> set[str]:
    for i in range(READERS):
        write_profile(
            cfg.subscribers_dir,
            f"r{i:02d}",
            f'email = "r{i:02d}@example.org"\n[interests]\nkeywords = ["retrieval", "language"]\n'
            'categories = ["cs.IR"]\n',
        )
    return {f"r{i:02d}@example.org" for i in range(READERS)} | {
        "ada@example.org",
        "bob@example.org",
    }


def test_three_planners_and_the_engine_send_each_reader_one_digest(
    workspace: Config, store: Store, smtp_server: SmtpServer
) -> None:
    everyone = _readers(workspace)
    # Eight batches of four readers, claimed by three planners as they go.
    cfg = workspace.model_copy(update={"planning": PlanningConfig(workers=3, batch_size=4)})
    report = pipeline.run(cfg, store, now=NOW)
    got = Counter(m.rcpt_tos[0] for m in smtp_server.received)
    assert set(got) == everyone and set(got.values()) == {1}
    assert sorted(r.email for r in report.results) == sorted(everyone)
    assert {r.status for r in report.results} == {"sent"}
    assert report.exit_status() == 0 and report.stages["planning"] > 0


def test_a_planner_that_dies_leaves_its_readers_to_the_parent(
    workspace: Config,
    store: Store,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("WARNING", logger="digest.service.parallel")
    everyone = _readers(workspace)

    def die() -> None:
        os._exit(9)  # killed mid-share, before this batch was committed

    report = _run_with_a_planner_breaking(workspace, store, monkeypatch, "r05@example.org", die)
    got = Counter(m.rcpt_tos[0] for m in smtp_server.received)
    assert set(got) == everyone and set(got.values()) == {1}
    assert sorted(r.email for r in report.results) == sorted(everyone)
    assert "a planning process failed (exit status 9)" in caplog.text


def test_a_planner_that_fails_later_keeps_the_batches_it_finished_in_the_report(
    workspace: Config,
    store: Store,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    everyone = _readers(workspace)

    def fail() -> None:
        raise RuntimeError("disk on fire")

    # Batches of four, claimed in order by two planners: r13 sits in batch 3, which the planner
    # that claims it reaches after committing an earlier one.
    report = _run_with_a_planner_breaking(workspace, store, monkeypatch, "r13@example.org", fail)
    got = Counter(m.rcpt_tos[0] for m in smtp_server.received)
    assert set(got) == everyone and set(got.values()) == {1}
    assert sorted(r.email for r in report.results) == sorted(everyone)
    assert {r.status for r in report.results} == {"sent"}


def _run_with_a_planner_breaking(
    cfg: Config,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    reader: str,
    breaking: Callable[[], None],
) -> pipeline.RunReport:
    """A run with two planners, the one that comes to ``reader``'s batch breaking there."""
    parent = os.getpid()
    plan_batch = pipeline._plan_batch

    def breaks(ctx, batch, *args):  # type: ignore[no-untyped-def]
        if os.getpid() != parent and any(p.email == reader for p in batch):
            breaking()
        return plan_batch(ctx, batch, *args)

    monkeypatch.setattr(pipeline, "_plan_batch", breaks)
    two = cfg.model_copy(update={"planning": PlanningConfig(workers=2, batch_size=4)})
    return pipeline.run(two, store, now=NOW)


def test_nodes_firing_one_slot_share_a_generation_and_a_later_run_plans_everyone_again(
    store: Store,
) -> None:
    from datetime import UTC, datetime, timedelta

    lease, now = timedelta(minutes=5), datetime.now(UTC)
    gen = store.plan_generation("day:list", 3)
    assert gen == 0
    a = [store.claim_plan_batch("day:list", gen, 3, "a", now, lease) for _ in range(2)]
    # A second node firing the same slot joins while batches are open, and gets the rest.
    assert store.plan_generation("day:list", 3) == gen
    b = store.claim_plan_batch("day:list", gen, 3, "b", now, lease)
    assert (a, b) == ([0, 1], 2)
    assert store.claim_plan_batch("day:list", gen, 3, "b", now, lease) is None
    for batch, owner in ((0, "a"), (1, "a"), (2, "b")):
        store.finish_plan_batch("day:list", gen, batch, owner, now)
    assert store.batches_in_progress("day:list", gen, now, lease) == 0
    # Once every batch is done, a run later in the day starts the next generation: all of
    # its batches are free again, whatever the clocks say.
    later = store.plan_generation("day:list", 3)
    assert later == gen + 1
    assert store.claim_plan_batch("day:list", later, 3, "c", now - timedelta(hours=1), lease) == 0


def test_a_claim_past_its_lease_is_taken_over_by_exactly_one_node(store: Store) -> None:
    from datetime import UTC, datetime, timedelta

    lease, now = timedelta(seconds=30), datetime.now(UTC)
    assert store.claim_plan_batch("r", 0, 1, "dead", now - timedelta(minutes=1), lease) == 0
    assert store.claim_plan_batch("r", 0, 1, "b", now - timedelta(seconds=40), lease) is None
    assert store.claim_plan_batch("r", 0, 1, "b", now, lease) == 0  # the lease ran out
    assert store.claim_plan_batch("r", 0, 1, "c", now, lease) is None  # b holds it now
    assert store.claim_plan_batch("r", 0, 1, "b", now, lease, take_own=True) == 0


def test_a_batch_that_outlasts_the_lease_keeps_its_claim_while_it_is_planned(
    store: Store,
) -> None:
    import time
    from datetime import UTC, datetime, timedelta

    from digest.service.parallel import Claims

    mine = Claims(store, "slow-run", 1, timedelta(seconds=0.6))
    other = Claims(store, "slow-run", 1, timedelta(seconds=0.6))
    batch = mine.next()
    assert batch == 0
    with mine.holding(batch):
        time.sleep(1.5)  # two and a half leases
        assert other.next() is None  # still held: renewed
    # Once planning stops renewing it, an unfinished claim runs out as before.
    time.sleep(0.8)
    assert other.next() == 0
    assert not store.renew_plan_batch("slow-run", 0, 0, mine.owner, datetime.now(UTC))


def test_a_planner_that_goes_silent_is_stopped_and_its_share_planned_by_the_parent() -> None:
    """A planner stuck for good (a lock inherited from another thread of `digest serve`) must
    not hold the run: after `silent_after` it is stopped, and the parent plans its batches."""
    import time

    from digest.service.parallel import plan_in_processes

    parent = os.getpid()
    batches = [[f"b{i}"] for i in range(6)]

    def plan(batch: object) -> tuple[list[object], dict[str, float], list[tuple[str, object]]]:
        name = next(iter(batch))  # type: ignore[call-overload]
        if name == "b1" and os.getpid() != parent:
            time.sleep(3600)  # stuck
        return [name], {}, []

    t0 = time.monotonic()
    results, _, _ = plan_in_processes(
        plan,
        batches,
        2,
        lambda: True,
        silent_after=2.0,  # type: ignore[arg-type]
    )
    assert sorted(results) == [f"b{i}" for i in range(6)]  # b1 by the parent, b3 and b5 too
    assert time.monotonic() - t0 < 30


class _RunsOutBetweenLooks:
    """Claims as a node sees them when another node's claim on batch 1 runs out just after
    this node asked for a batch and just before it asked whether anyone is still planning."""

    def __init__(self) -> None:
        self.asked = 0
        self.finished: list[int] = []

    def next(self, take_own: bool = False) -> int | None:
        self.asked += 1
        return {1: 0, 3: 1}.get(self.asked)  # batch 0; none yet; ran out, so batch 1

    def others_planning(self) -> bool:
        return False  # the other node's claim has run out: nobody is planning

    @contextlib.contextmanager
    def holding(self, batch: int) -> Iterator[None]:
        yield

    def done(self, batch: int) -> None:
        self.finished.append(batch)


def test_a_batch_whose_claim_runs_out_between_two_looks_is_still_planned() -> None:
    from digest.service.parallel import plan_claimed

    claims = _RunsOutBetweenLooks()
    planned: list[object] = []

    def plan(batch: object) -> tuple[list[object], dict[str, float], list[object]]:
        planned.append(batch)
        return [], {}, []

    plan_claimed(plan, [["a"], ["b"]], claims, lambda: True)  # type: ignore[arg-type]
    assert planned == [["a"], ["b"]] and claims.finished == [0, 1]
