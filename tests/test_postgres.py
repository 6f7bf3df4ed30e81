"""The same schema and pipeline on PostgreSQL (127.0.0.1:5432, user postgres, trust auth).

Each test gets a database of its own, created and dropped here.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text

from digest.config import Config
from digest.pipeline import run
from digest.store import Store
from tests.conftest import NOW, SmtpServer

pytestmark = pytest.mark.postgres
ADMIN_URL = os.environ.get("DIGEST_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_store() -> Iterator[Store]:
    name = f"digest_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    store = Store(ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
    store.create_all()
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
    claimed = pg_store.claim_next(NOW, timedelta(minutes=5))
    assert claimed is not None and claimed.id == d.id and claimed.state == "sending"
    assert pg_store.claim_next(NOW, timedelta(minutes=5)) is None
