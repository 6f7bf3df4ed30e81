"""Stored digests do not grow without bound: messages are kept compressed, bodies older than
`[digest] keep_days` are dropped (their delivery rows stay), and a body stored before
compression still goes out byte for byte."""

from __future__ import annotations

import sqlite3
import zlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from digest.config import Config, DigestConfig
from digest.service.pipeline import run
from digest.store import Store
from digest.store.feedback import TrainedModel
from digest.store.packing import WIRE_MARKER, pack_to_send, unpack, unpack_to_send
from digest.store.schema import utcnow
from tests.conftest import NOW, SmtpServer, digest
from tests.test_postgres import pg_store  # noqa: F401 (fixture)
from tests.test_web import WebServer, delivered, text_links, web  # noqa: F401 (fixture)


def _blobs(store: Store) -> dict[str, bytes]:
    with sqlite3.connect(store.path) as conn:
        rows = conn.execute(
            "SELECT d.subscriber, m.message FROM delivery d "
            "JOIN deliverymessage m ON m.delivery_id = d.id"
        ).fetchall()
    return {who: bytes(blob) for who, blob in rows}


def test_a_digest_is_stored_compressed_and_sent_byte_for_byte(
    workspace: Config, store: Store, smtp_server: SmtpServer
) -> None:
    run(workspace, store, now=NOW)
    blobs = _blobs(store)
    assert set(blobs) == {"ada@example.org", "bob@example.org"}
    for who, blob in blobs.items():
        sent = next(m.data for m in smtp_server.received if m.rcpt_tos == [who])
        assert blob.startswith(WIRE_MARKER) and len(blob) * 2.5 < len(sent)
        assert unpack(blob) == sent
        # Stored as it goes after DATA: the style block's lines start with a dot, doubled.
        assert b"\r\n..card {" in unpack_to_send(blob) and b"\r\n.card {" in sent


@pytest.mark.parametrize(
    "stored_as",
    ["as it was (before compression)", "zlib (before zstandard)"],
)
def test_a_body_stored_by_an_earlier_release_still_goes_out_as_it_was(
    workspace: Config, store: Store, smtp_server: SmtpServer, stored_as: str
) -> None:
    raw = b"From: a@example.org\r\nTo: ada@example.org\r\nSubject: old\r\n\r\nas planned\r\n"
    blob = raw if stored_as.startswith("as it was") else b"\x00dz1" + zlib.compress(raw, 3)
    store.plan_delivery("ada@example.org", NOW.date(), "<old@example.org>", [], {})
    with sqlite3.connect(store.path) as conn:  # as an earlier release stored it
        (did,) = conn.execute("SELECT id FROM delivery").fetchone()
        conn.execute("INSERT INTO deliverymessage VALUES (?, ?)", (did, blob))
    run(workspace, store, now=NOW)
    sent = next(m.data for m in smtp_server.received if m.rcpt_tos == ["ada@example.org"])
    assert sent == raw


DOTTED = [
    b".Subject: lead\r\n\r\nbody\r\n",
    b"Subject: a\r\n\r\n.first\r\nmid\r\n.\r\n..two\r\n...\r\nend\r\n",
    b"Subject: b\r\n\r\nno dots at all\r\n",
    b"Subject: c\r\n\r\nends on a dot line\r\n.\r\n",
]


@pytest.mark.parametrize("message", DOTTED)
def test_a_message_stored_to_be_sent_reads_back_as_planned_and_goes_out_as_planned(
    workspace: Config, store: Store, smtp_server: SmtpServer, message: bytes
) -> None:
    blob = pack_to_send(message)
    assert unpack(blob) == message
    sent_form = unpack_to_send(blob)
    assert b"\r\n.\r\n" not in b"\r\n" + sent_form  # no line that would end DATA early
    store.plan_delivery("ada@example.org", NOW.date(), "<dots@example.org>", [], {})
    with sqlite3.connect(store.path) as conn:  # as the pipeline stores it
        (did,) = conn.execute("SELECT id FROM delivery").fetchone()
        conn.execute("INSERT INTO deliverymessage VALUES (?, ?)", (did, blob))
    run(workspace, store, now=NOW)
    sent = next(m.data for m in smtp_server.received if m.rcpt_tos == ["ada@example.org"])
    assert sent == message


def test_bodies_past_keep_days_are_dropped_and_the_web_view_says_expired(
    workspace: Config,
    store: Store,
    smtp_server: SmtpServer,
    web: WebServer,  # noqa: F811 (the fixture)
) -> None:
    cfg = workspace.model_copy(update={"digest": DigestConfig(keep_days=7)})
    run(cfg, store, now=NOW)
    (view,) = text_links(delivered(smtp_server, "bob@example.org"), "View in a browser")
    assert web.client.get(web.local(view)).status_code == 200
    run(cfg, store, now=NOW + timedelta(days=7))  # keeps the day 7 days back
    assert set(_blobs(store)) == {"ada@example.org", "bob@example.org"}
    run(cfg, store, now=NOW + timedelta(days=8))
    assert _blobs(store) == {}
    left = {d.digest_date for d in store.deliveries()}
    assert NOW.date() in left  # the rows stay: what was sent is never sent again
    page = web.client.get(web.local(view))
    assert page.status_code == 410 and "expired" in page.text


def test_retrying_a_digest_whose_body_was_pruned_says_so_and_leaves_it_expired(
    site: Path,
) -> None:
    from digest.config import load_config

    store = Store(load_config(site / "digest.toml").database_url)
    store.upgrade()
    old, recent = NOW.date() - timedelta(days=40), NOW.date() - timedelta(days=2)
    for day in (old, recent):
        d = store.plan_delivery(
            "ada@example.org", day, f"<{day}@example.org>", [], {}, message=b"Subject: x\r\n\r\nx"
        )
        assert d.id is not None
        store.mark_expired(d.id, 3, "451 try later")  # its retry window closed undelivered
    store.prune_messages(NOW.date() - timedelta(days=30))
    out = digest("retry", "--state", "expired", cwd=site)
    assert out.returncode == 0, out.stderr
    assert "1 delivery re-queued." in out.stdout
    assert "1 left as it is: older than [digest] keep_days" in out.stdout
    states = {d.digest_date: d.state for d in store.deliveries()}
    assert states == {old: "expired", recent: "retry"}


@pytest.mark.postgres
@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_forgetting_models_of_removed_readers_works_for_100000_profiles(
    db: str, request: pytest.FixtureRequest
) -> None:
    """`NOT IN` 100,000 addresses was more bound parameters than PostgreSQL (65,535) and many
    SQLite builds (32,766) take in one statement."""

    store: Store = request.getfixturevalue("store" if db == "sqlite" else "pg_store")

    keep = [f"r{i:06d}@example.org" for i in range(100_000)]
    store.save_rank_models(
        [
            TrainedModel(subscriber=e, fingerprint="f", vocabulary="v", blob=b"x")
            for e in (keep[0], keep[-1], "gone@example.org", "left@example.org")
        ]
    )
    assert store.prune_rank_models([*keep, "Left@Example.org"]) == 1
    assert set(store.rank_models()) == {keep[0], keep[-1], "left@example.org"}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_latex_is_read_as_text_once_at_ingest_and_never_again_by_a_run(
    workspace: Config,
    store: Store,
    pg_store: Store,  # noqa: F811
    backend: str,
) -> None:
    from digest import text
    from digest.ingest import ingest_all
    from digest.service.context import prepare

    db = store if backend == "sqlite" else pg_store
    ingest_all(db, workspace, today=NOW.date())
    text._KNOWN.clear()  # a new process: nothing converted or read yet
    text._plain_latex.cache_clear()
    ctx = prepare(workspace, db, NOW)
    shown = [t for p in ctx.listing for t in (p.title, p.abstract) if text.needs_latex(t)]
    assert len(shown) >= 3  # the demo listing has LaTeX in titles and abstracts
    readings = [text.plain_latex(t) for t in shown]
    assert text._plain_latex.cache_info().misses == 0  # every one read from the store
    assert all("$" not in r and "\\" not in r for r in readings)
    assert db.plain_texts(shown) == 0  # nothing left to convert


def test_latex_longer_than_any_abstract_is_not_given_to_the_converter() -> None:
    from digest import text

    text._plain_latex.cache_clear()
    huge = r"Sch\"odinger $\mu$ and $\alpha$-decay. " * 300  # 11,700 characters of TeX
    out = text.plain_latex(huge)
    assert text._plain_latex.cache_info().misses == 0  # pylatexenc was not asked
    assert out.startswith("Schödinger $") and len(out) >= len(huge) - 3000  # accents only


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_planning_a_batch_keeps_a_row_another_runner_made_first_and_stores_the_rest(
    backend: str, store: Store, request: pytest.FixtureRequest
) -> None:
    from digest.store.packing import pack
    from digest.store.planning import Planned

    db: Store = store if backend == "sqlite" else request.getfixturevalue("pg_store")
    day = NOW.date()
    db.plan_delivery("Ann@example.org", day, "<theirs@x>", ["1"], {"1": "first"}, b"theirs")

    def planned(who: str) -> Planned:
        return Planned(
            who, day, f"<{who}>", ["2", "3"], {"2": "why"}, pack(b"ours " + who.encode()), None
        )

    # With the batch go its trained models and link refs: stored even though a row conflicted.
    model = TrainedModel("bob@example.org", "f", "v", b"m")
    assert db.plan_deliveries(
        [planned("ann@example.org"), planned("Bob@example.org")], [model], {"rb": "Bob@x.org"}
    ) == [
        ("ann@example.org", day),
        ("bob@example.org", day),
    ]
    assert db.rank_models(["bob@example.org"])["bob@example.org"].blob == b"m"
    assert db.ref_address("rb") == "bob@x.org"
    ann, bob = db.delivery("ann@example.org", day), db.delivery("bob@example.org", day)
    assert ann is not None and ann.message_id == "<theirs@x>" and ann.paper_ids == ["1"]
    assert bob is not None and (bob.state, bob.attempts, bob.paper_ids) == (
        "pending",
        0,
        ["2", "3"],
    )
    assert bob.reasons == {"2": "why"} and bob.created_at is not None
    assert bob.id is not None and db.message_bytes(bob.id) == b"ours Bob@example.org"
    # A batch with no conflict goes in whole, in one statement each for rows and messages.
    # A model as a run trains it (a plain TrainedModel, not a row object) replaces the one
    # stored, with the time it was written.
    again = TrainedModel("bob@example.org", "g", "v", b"n")
    assert db.plan_deliveries([planned("cy@example.org")], [again], {"rc": "cy@x.org"}) == [
        ("cy@example.org", day)
    ]
    stored = db.rank_models(["bob@example.org"])["bob@example.org"]
    assert (stored.fingerprint, stored.blob) == ("g", b"n")
    assert stored.trained_at is not None and abs(stored.trained_at - utcnow()).total_seconds() < 60
    assert db.ref_address("rc") == "cy@x.org"
    cy = db.delivery("cy@example.org", day)
    assert (
        cy is not None and cy.id is not None and db.message_bytes(cy.id) == b"ours cy@example.org"
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_link_refs_are_recorded_once_whoever_recorded_some_first(
    backend: str, store: Store, request: pytest.FixtureRequest
) -> None:
    db: Store = store if backend == "sqlite" else request.getfixturevalue("pg_store")
    db.remember_ref("r1", "Ann@example.org")  # recorded earlier, or by another node
    db.remember_refs({"r1": "ann@example.org", "r2": "Bob@example.org"})
    db.remember_refs({"r2": "bob@example.org", "r3": "cy@example.org"})
    assert [db.ref_address(r) for r in ("r1", "r2", "r3", "r4")] == [
        "ann@example.org",
        "bob@example.org",
        "cy@example.org",
        None,
    ]


def test_planning_finds_each_readers_digests_through_an_index_not_a_scan(store: Store) -> None:
    """A run asks for a batch's deliveries before planning it and for every reader's at its
    end: read as SQLite plans them, each query must search an index. (A row-value IN of the
    (subscriber, day) pairs, or the states in the query, made SQLite scan every digest ever
    made, a batch at a time: quadratic over a run.)"""
    from sqlalchemy import event

    day = NOW.date()
    readers = [f"reader{i}@example.org" for i in range(40)]
    for i, who in enumerate(readers):
        store.plan_delivery(who, day - timedelta(days=i % 3), f"<{i}@x>", ["p1"], {}, b"m")
    asked: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        asked.append((sql, params))

    event.listen(store.engine, "before_cursor_execute", grab)
    try:
        days = {who: day for who in readers}
        standings = store.standings(days)
        outcomes = list(store.outcomes_on(days))
    finally:
        event.remove(store.engine, "before_cursor_execute", grab)
    assert sum(1 for s in standings.values() if s.today is not None) == 14
    assert sum(1 for s in standings.values() if s.sent == {"p1"}) == 40
    assert len(outcomes) == 14
    read = [(sql, params) for sql, params in asked if "FROM delivery" in sql]
    assert len(read) >= 3
    with sqlite3.connect(store.path) as db:
        for sql, params in read:
            plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params)]
            assert not any(step.startswith("SCAN delivery") for step in plan), (sql, plan)
