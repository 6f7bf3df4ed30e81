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

    from digest.store.schema import RankModel

    store = pg_store
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def save(n: int) -> None:
        try:
            barrier.wait()
            store.save_rank_models(
                [
                    RankModel(
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
