"""Upgrading keeps every operator's data (issue 13): a database as the release before migrations
left it, full of real rows, goes through `digest db upgrade` and then a real `digest run`, on
SQLite and on PostgreSQL. Every later schema change adds a revision and extends this test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from digest.config import load_config
from digest.ingest import ingest_all
from digest.service.context import prepare, prepare_models
from digest.service.schedule import digest_day
from digest.store import Store, migrate
from tests.conftest import SmtpServer, digest, write_profile

PG_ADMIN = os.environ.get("DIGEST_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ORIGINAL_ID = "<planned-before-the-upgrade@papers.example.org>"


def at_revision(url: str, revision: str) -> None:
    """A database as the release of ``revision`` made it, before migrations existed: that
    revision's tables, and no alembic_version."""
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(migrate._config(conn), revision)
        conn.execute(text("DROP TABLE alembic_version"))
    engine.dispose()


def versioned_at(site: Path, revision: str) -> str:
    """An SQLite database of the site, versioned at ``revision`` (alembic_version kept)."""
    url = f"sqlite:///{site / 'data' / 'digest.db'}"
    (site / "data").mkdir()
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(migrate._config(conn), revision)
    engine.dispose()
    return url


def populate(site: Path) -> dict[str, object]:
    """Real rows of every kind, made through the library as that release would have."""
    cfg = load_config(site / "digest.toml")
    store = Store(cfg.database_url)
    now = datetime.now(UTC)
    ada_day = digest_day(next(p for p in prepare(cfg, store, now).profiles if p.name == "Ada"), now)
    ingest_all(store, cfg, today=now.date())
    ctx = prepare(cfg, store, now)
    prepare_models(ctx, ctx.profiles)  # stored models
    paper = ctx.listing[0].id
    message = (
        "From: digest@papers.example.org\r\nTo: ada@example.org\r\n"
        f"Message-ID: {ORIGINAL_ID}\r\nSubject: planned before the upgrade\r\n\r\nhello\r\n"
    ).encode()
    store.plan_delivery(
        "ada@example.org", ada_day, ORIGINAL_ID, [paper], {paper: "why"}, message=message,
        expire_at=now + timedelta(hours=20),
    )  # fmt: skip
    yesterday = store.plan_delivery(
        "ada@example.org", ada_day - timedelta(days=1), "<yesterday@papers.example.org>",
        [paper], {}, message=b"Subject: y\r\n\r\ny\r\n",
    )  # fmt: skip
    assert yesterday.id is not None
    store.mark_sent([yesterday.id], now - timedelta(days=1))
    store.set_unsubscribed("bob@example.org")
    for _ in range(3):
        store.record_bounce("cy@example.org", True, 3, now.date())
    store.set_feedback("ada@example.org", paper, "dislike")
    store.dispose()
    return {"paper": paper}


@pytest.fixture(params=["sqlite", "postgresql"])
def old_site(request: pytest.FixtureRequest, site: Path) -> Iterator[Path]:
    write_profile(
        site / "subscribers", "cy", 'email = "cy@example.org"\n[interests]\nkeywords = ["x"]\n'
    )
    cfg_path = site / "digest.toml"
    if request.param == "sqlite":
        url = f"sqlite:///{site / 'data' / 'digest.db'}"
        (site / "data").mkdir()
        at_revision(url, "0001")
        yield site
        return
    name = f"digest_upgrade_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    cfg_path.write_text(cfg_path.read_text() + f'\n[database]\nurl = "{url}"\n')
    at_revision(url, "0001")
    try:
        yield site
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def test_a_populated_database_from_before_migrations_upgrades_and_the_cycle_goes_on(
    old_site: Path, smtp_server: SmtpServer
) -> None:
    site = old_site
    rows = populate(site)
    # Every command but `digest db` refuses it as it is, in one line that says what to do.
    refused = digest("run", cwd=site)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert (
        "`digest db upgrade`" in refused.stderr
        and "predates schema versions and matches revision 0001" in refused.stderr
    )
    current = digest("db", "current", cwd=site)
    assert "matches 0001" in current.stdout
    upgraded = digest("db", "upgrade", cwd=site)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "0001 -> 0005" in upgraded.stdout
    # SQLite: a copy is kept beside the file first; PostgreSQL: the operator is told to dump.
    assert "copied" in upgraded.stdout or "pg_dump" in upgraded.stdout
    assert "current" in digest("db", "current", cwd=site).stdout
    ran = digest("run", "--no-ingest", cwd=site)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    # The pending digest goes out with the Message-ID it was planned with, and no one else's.
    assert [m.rcpt_tos for m in smtp_server.received] == [["ada@example.org"]]
    assert f"Message-ID: {ORIGINAL_ID}".encode() in smtp_server.received[0].data
    lines = {ln.split()[1]: ln for ln in ran.stdout.splitlines() if "@example.org" in ln}
    assert "unsubscribed" in lines["bob@example.org"]  # unsubscribed before: still
    assert "unsubscribed" in lines["cy@example.org"]  # disabled after bounces: still
    # Yesterday's digest, the feedback and the state survive.
    listed = digest("feedback", "ada@example.org", cwd=site)
    assert str(rows["paper"]) in listed.stdout and "dislike" in listed.stdout
    shown = digest("deliveries", cwd=site).stdout
    assert shown.count("sent") >= 2
    subscribers = digest("subscribers", "list", "--format", "csv", cwd=site).stdout
    assert "cy@example.org" in subscribers and "disabled" in subscribers


def test_a_database_made_after_link_refs_but_before_versions_is_stamped_then_upgraded(
    site: Path,
) -> None:
    url = f"sqlite:///{site / 'data' / 'digest.db'}"
    (site / "data").mkdir()
    at_revision(url, "0002")
    refused = digest("status", cwd=site)
    assert refused.returncode == 1
    assert "predates schema versions and matches revision 0002" in refused.stderr
    upgraded = digest("db", "upgrade", cwd=site)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "0002 -> 0005" in upgraded.stdout
    again = digest("db", "upgrade", cwd=site)
    assert "nothing to do" in again.stdout
    assert digest("status", cwd=site).returncode == 0


def test_an_unversioned_database_whose_tables_match_the_newest_revision_is_only_stamped(
    site: Path,
) -> None:
    newest = migrate.head()
    url = f"sqlite:///{site / 'data' / 'digest.db'}"
    (site / "data").mkdir()
    at_revision(url, newest)
    refused = digest("status", cwd=site)
    assert refused.returncode == 1
    assert f"has no schema version yet (its tables match {newest}, the newest)" in refused.stderr
    stamped = digest("db", "upgrade", cwd=site)
    assert stamped.returncode == 0, stamped.stderr
    assert f"stamped as {newest}; its tables already matched" in stamped.stdout
    assert f"before-unversioned-{newest}" in stamped.stdout
    again = digest("db", "upgrade", cwd=site)
    assert "nothing to do" in again.stdout


def test_a_versioned_database_at_link_refs_gains_plan_claims_with_its_rows_kept(
    site: Path, smtp_server: SmtpServer
) -> None:
    """0002 -> 0003 on a populated, versioned database: the run after it claims its batches
    in the new table, and the digest planned before the upgrade goes out as planned."""
    url = versioned_at(site, "0002")
    populate(site)
    upgraded = digest("db", "upgrade", cwd=site)
    assert upgraded.returncode == 0 and "0002 -> 0005" in upgraded.stdout, upgraded.stderr
    ran = digest("run", "--no-ingest", cwd=site)
    assert ran.returncode in (0, 2), ran.stdout + ran.stderr
    assert f"Message-ID: {ORIGINAL_ID}".encode() in smtp_server.received[0].data
    engine = create_engine(url)
    with engine.connect() as conn:
        claims = conn.execute(text("SELECT COUNT(*) FROM planclaim WHERE done_at IS NOT NULL"))
        assert claims.scalar() == 1  # one batch, planned and marked done
    engine.dispose()


def test_a_versioned_database_at_plan_claims_gains_plain_texts_filled_by_the_next_run(
    site: Path, smtp_server: SmtpServer
) -> None:
    """0003 -> 0004 on a populated, versioned database: the upgrade converts nothing (it stays
    instant); the first run reads the listing's LaTeX once and keeps it, and the digest planned
    before the upgrade goes out as planned."""
    url = versioned_at(site, "0003")
    populate(site)  # the papers are stored with no plain texts: the table did not exist
    upgraded = digest("db", "upgrade", cwd=site)
    assert upgraded.returncode == 0 and "0003 -> 0005" in upgraded.stdout, upgraded.stderr
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM plaintext")).scalar() == 0
    ran = digest("run", "--no-ingest", cwd=site)
    assert ran.returncode in (0, 2), ran.stdout + ran.stderr
    assert f"Message-ID: {ORIGINAL_ID}".encode() in smtp_server.received[0].data
    with engine.connect() as conn:
        stored = dict(conn.execute(text("SELECT key, plain FROM plaintext")).all())
        papers = conn.execute(text("SELECT title, abstract FROM paper")).all()
    engine.dispose()
    with_latex = [t for row in papers for t in row if "$" in t or "\\" in t]
    assert with_latex and stored  # the demo listing has LaTeX, and its readings were kept
    assert all("$" not in plain for plain in stored.values())


def test_a_versioned_database_at_plain_texts_gains_the_day_states_index_with_its_rows_kept(
    site: Path, smtp_server: SmtpServer
) -> None:
    """0004 -> 0005 on a populated, versioned database: `digest status` then reads today's
    states from the new index alone (SQLite's own query plan says so), the old one-column
    index is gone, and the digest planned before the upgrade goes out as planned."""
    url = versioned_at(site, "0004")
    populate(site)
    upgraded = digest("db", "upgrade", cwd=site)
    assert upgraded.returncode == 0 and "0004 -> 0005" in upgraded.stdout, upgraded.stderr
    engine = create_engine(url)
    with engine.connect() as conn:
        names = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master"))}
        plan = conn.execute(
            text(
                "EXPLAIN QUERY PLAN SELECT subscriber, digest_date, state, ambiguous_count "
                "FROM delivery WHERE digest_date IN ('2026-01-01', '2026-01-02')"
            )
        ).all()
        assert conn.execute(text("SELECT COUNT(*) FROM delivery")).scalar() == 2
    assert "ix_delivery_day_states" in names and "ix_delivery_digest_date" not in names
    assert "COVERING INDEX ix_delivery_day_states" in " ".join(str(r[-1]) for r in plan)
    status = digest("status", cwd=site)
    assert status.returncode == 0 and "1 pending" in status.stdout, status.stdout + status.stderr
    ran = digest("run", "--no-ingest", cwd=site)
    assert ran.returncode in (0, 2), ran.stdout + ran.stderr
    assert f"Message-ID: {ORIGINAL_ID}".encode() in smtp_server.received[0].data
    assert "1 sent" in digest("status", cwd=site).stdout
    engine.dispose()


def test_an_unversioned_database_without_the_index_is_recognised_as_the_revision_before_it(
    site: Path,
) -> None:
    """0005 only adds an index, so 0004's tables are 0005's: a database without the index
    is stamped as 0004 and upgraded, not stamped as 0005 and left without it."""
    url = f"sqlite:///{site / 'data' / 'digest.db'}"
    (site / "data").mkdir()
    at_revision(url, "0004")
    refused = digest("status", cwd=site)
    assert "predates schema versions and matches revision 0004" in refused.stderr
    upgraded = digest("db", "upgrade", cwd=site)
    assert upgraded.returncode == 0 and "0004 -> 0005" in upgraded.stdout, upgraded.stderr
    engine = create_engine(url)
    with engine.connect() as conn:
        names = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master"))}
    engine.dispose()
    assert "ix_delivery_day_states" in names


def test_the_newest_revision_written_in_the_code_is_the_head_alembic_finds() -> None:
    # Written out so a current database opens without importing Alembic; a new revision must
    # move it, or every database would look out of date (or this fails first).
    assert migrate._scripts().get_current_head() == migrate.HEAD


def test_a_digest_command_on_a_current_database_does_not_import_alembic(site: Path) -> None:
    import subprocess
    import sys

    assert digest("status", cwd=site).returncode == 0  # makes the database, at the newest
    probe = (
        "import sys; from digest.cli.app import main; sys.argv = ['digest', 'status'];\n"
        "try:\n main()\nexcept SystemExit:\n pass\n"
        "print('alembic' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=site, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "False"
