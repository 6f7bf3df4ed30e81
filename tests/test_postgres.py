"""The same schema and pipeline on PostgreSQL (127.0.0.1:5432, user postgres, trust auth).

Each test gets a database of its own, created and dropped here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from digest.config import Config
from digest.service.pipeline import run
from digest.store import Store
from tests.conftest import NOW, SmtpServer
from tests.sites import write_site
from tests.smtp_fault import FaultServer

pytestmark = pytest.mark.postgres
ADMIN_URL = os.environ.get("DIGEST_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_store() -> Iterator[Store]:
    name = f"digest_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    store = Store(ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
    store.upgrade()
    try:
        yield store
    finally:
        store.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def test_the_daily_cycle_runs_on_postgresql(
    pg_store: Store, workspace: Config, smtp_server: SmtpServer
) -> None:
    report = run(workspace, pg_store, now=NOW)
    assert sorted(r.status for r in report.results) == ["sent", "sent"]
    again = run(workspace, pg_store, now=NOW + timedelta(hours=1))
    assert {r.status for r in again.results} == {"already-sent"}
    assert len(smtp_server.received) == 2
    p = pg_store.papers(["2611.10001"])["2611.10001"]
    assert p.upvotes == 87 and p.categories == ["cs.CL", "cs.LG"]


def test_only_one_claim_wins_on_postgresql(pg_store: Store) -> None:
    from datetime import date

    d = pg_store.plan_delivery("ada@example.org", date(2026, 11, 23), "<m1@x>", ["a"], {})
    twin = pg_store.plan_delivery("ada@example.org", date(2026, 11, 23), "<m2@x>", ["b"], {})
    assert twin.id == d.id and twin.message_id == "<m1@x>"
    first = pg_store.claim_batch(NOW, timedelta(minutes=5), 10, "node-a")
    second = pg_store.claim_batch(NOW, timedelta(minutes=5), 10, "node-b")
    assert [c.id for c in first] == [d.id] and second == []


def _pg_site(tmp_path: Path, url: str, port: int, n: int) -> Path:
    write_site(tmp_path, port, n, extra=f'[database]\nurl = "{url}"\n[delivery]\nconnections = 2')
    return tmp_path


def test_A6_two_processes_firing_the_same_slot_send_each_digest_once(
    pg_store: Store, tmp_path: Path
) -> None:
    fault = FaultServer().start()
    try:
        fault.default = "stall-final:0.02"  # long enough for the two runs to overlap
        site = _pg_site(tmp_path, pg_store.url, fault.port, 30)
        cfg = ["--config", str(site / "digest.toml")]
        env = {k: v for k, v in os.environ.items() if k != "DIGEST_CONFIG"}
        # Both nodes ingest and send at once, as two schedulers firing the same slot would.
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "digest", *cfg, "run"],
                cwd=site,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outs = [p.communicate(timeout=240) for p in procs]
        for p, (out, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err + out
        rcpts = [s.rcpt for s in fault.stored]
        assert sorted(rcpts) == [f"r{i:02d}@example.org" for i in range(30)]  # once each
        assert {d.state for d in pg_store.deliveries()} == {"sent"}
        assert len(pg_store.deliveries()) == 30
    finally:
        fault.stop()


def test_two_runners_saving_the_same_model_at_once_do_not_fail(pg_store: Store) -> None:
    """Both processes of a slot train the same subscriber; the second insert must not fail."""
    import threading

    from digest.store.feedback import TrainedModel

    store = pg_store
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def save(n: int) -> None:
        try:
            barrier.wait()
            store.save_rank_models(
                [
                    TrainedModel(
                        subscriber="race@example.org",
                        fingerprint=f"f{n}",
                        vocabulary="v",
                        blob=b"x",
                    )
                ]
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert "race@example.org" in store.rank_models()


def test_an_rss_item_too_long_or_with_a_nul_for_postgresql_costs_only_that_item(
    pg_store: Store,
) -> None:
    from datetime import date

    from digest.config import SourceConfig
    from digest.ingest import ingest_bytes
    from tests.test_hostile_entries import hostile_rss

    src = SourceConfig(name="journal", kind="rss", url="https://journal.example.org/feed")
    report = ingest_bytes(pg_store, src, hostile_rss().encode(), date(2024, 11, 28))
    assert report.added >= 1
    assert any("id longer than 512 characters" in p for p in report.problems)
    stored = pg_store.papers(["https://journal.example.org/a/2"])
    assert stored["https://journal.example.org/a/2"].title == "A fine paper"
    from digest.record import PaperRecord

    nul = PaperRecord(
        id="2411.00001", title="Zero\x00Day", abstract="a\x00b", source="j", kind="rss",
        announced=date(2024, 11, 28), authors=["Ada\x00 Lovelace"],
    )  # fmt: skip
    assert pg_store.upsert_papers([nul]) == (1, 0)
    assert pg_store.papers(["2411.00001"])["2411.00001"].title == "ZeroDay"


def _node(site: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "DIGEST_CONFIG"}
    return subprocess.Popen(
        [sys.executable, "-m", "digest", "--config", str(site / "digest.toml"), "run"],
        cwd=site,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _claims(store: Store) -> list[tuple[int, str, bool]]:
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT batch, owner, done_at IS NOT NULL FROM planclaim"))
        return sorted((int(b), str(o), bool(d)) for b, o, d in rows)


def _planning(lease: float = 300) -> str:
    # Batches of five, one planner per node: 60 readers are twelve batches to share.
    return f"[planning]\nworkers = 1\nbatch_size = 5\nlease_seconds = {lease}\n"


def test_two_nodes_on_one_database_split_the_batches_and_send_each_reader_once(
    pg_store: Store, tmp_path: Path
) -> None:
    fault = FaultServer().start()
    try:
        fault.default = "stall-final:0.02"
        site = _pg_site(tmp_path, pg_store.url, fault.port, 60)
        with (site / "digest.toml").open("a") as f:
            f.write(_planning())
        nodes = [_node(site) for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in nodes]
        for p, (out, err) in zip(nodes, outs, strict=True):
            assert p.returncode == 0, err + out
        assert sorted(s.rcpt for s in fault.stored) == [f"r{i:02d}@example.org" for i in range(60)]
        claims = _claims(pg_store)
        # Every batch claimed once and finished; whichever node got there first planned it.
        assert [b for b, _, _ in claims] == list(range(12))
        assert all(done for _, _, done in claims)
    finally:
        fault.stop()


def test_a_batch_a_dead_node_held_is_taken_over_once_its_lease_runs_out(
    pg_store: Store, tmp_path: Path
) -> None:
    import time

    fault = FaultServer().start()
    try:
        site = _pg_site(tmp_path, pg_store.url, fault.port, 60)
        with (site / "digest.toml").open("a") as f:
            f.write(_planning(lease=3))
        node = _node(site)
        started = time.monotonic()
        while not _claims(pg_store):  # the node's run has begun: it claimed batch 0
            assert node.poll() is None and time.monotonic() - started < 120
            time.sleep(0.01)
        # Meanwhile another node claims the last batch and dies with it unfinished.
        with pg_store.engine.begin() as conn:
            run, generation = conn.execute(text("SELECT run, generation FROM planclaim")).one()
            conn.execute(
                text(
                    "INSERT INTO planclaim (run, generation, batch, owner, claimed_at)"
                    " VALUES (:run, :generation, 11, 'dead-node:1:0', now())"
                ),
                {"run": run, "generation": generation},
            )
        taken = time.monotonic()
        out, err = node.communicate(timeout=300)
        assert node.returncode == 0, err + out
        # It waited for the lease, then planned the batch itself.
        assert time.monotonic() - taken >= 3
        assert sorted(s.rcpt for s in fault.stored) == [f"r{i:02d}@example.org" for i in range(60)]
        claims = _claims(pg_store)
        assert [b for b, _, _ in claims] == list(range(12)) and all(d for _, _, d in claims)
        assert "dead-node:1:0" not in {o for _, o, _ in claims}
    finally:
        fault.stop()


def test_a_node_killed_mid_run_leaves_every_reader_one_digest(
    pg_store: Store, tmp_path: Path
) -> None:
    import signal
    import time

    fault = FaultServer().start()
    try:
        fault.default = "stall-final:0.05"
        site = _pg_site(tmp_path, pg_store.url, fault.port, 60)
        with (site / "digest.toml").open("a") as f:
            f.write(_planning(lease=3))
        first, second = _node(site), _node(site)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(_claims(pg_store)) < 2:
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)  # wherever it is: planning, sending or between
        first.communicate(timeout=60)
        out, err = second.communicate(timeout=300)
        assert second.returncode in (0, 2), err + out
        # What the killed node left (claims, planned rows, a message it was sending) a later
        # run finishes, as cron's next run would.
        again = _node(site)
        out, err = again.communicate(timeout=300)
        assert again.returncode == 0, err + out
        got = sorted(s.rcpt for s in fault.stored)
        everyone = [f"r{i:02d}@example.org" for i in range(60)]
        assert sorted(set(got)) == everyone
        # A message the killed node had sent but not yet recorded may go twice (RELIABILITY.md
        # allows those, one per kill); nothing else may.
        assert len(got) - len(everyone) <= 1
    finally:
        fault.stop()


def test_two_nodes_recording_a_new_sources_first_fetch_at_once_both_succeed(
    pg_store: Store,
) -> None:
    """Both nodes of a slot ingest: each reads no fetch state for a new source and inserts one;
    the second must update the first's row, not stop its node's run."""
    import threading

    from digest.store.schema import FeedState

    errors: list[Exception] = []
    for n in range(20):
        barrier = threading.Barrier(2)

        def fetch(i: int, source: str = f"feed{n}", barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                pg_store.save_feed_state(FeedState(source=source, url="https://x", last_count=i))
            except Exception as exc:  # collected for the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=fetch, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert len(pg_store.feed_states()) == 20
