"""One feed item dated in the future must not become everybody's listing."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

from digest.config import load_config
from digest.models import Paper
from digest.pipeline import prepare
from digest.store import Store
from tests.conftest import SmtpServer, digest

ODD_FEED = """<?xml version="1.0"?>
<rss version="2.0"><channel><title>Lab feed</title><link>https://lab.example.org/</link>
<description>x</description>
<item><title>Time-Travelling Transformers</title>
<link>https://lab.example.org/papers/42</link>
<description>A paper from the future about attention.</description>
<pubDate>Fri, 01 Jan 2027 00:00:00 +0000</pubDate></item>
</channel></rss>
"""


def add_odd_source(site: Path) -> None:
    (site / "odd.xml").write_text(ODD_FEED)
    with (site / "digest.toml").open("a") as f:
        f.write(f'[[sources]]\nname = "odd"\nkind = "rss"\nurl = "{(site / "odd.xml").as_uri()}"\n')


def test_an_item_dated_next_year_is_stored_as_today_with_a_warning_naming_the_source(
    site: Path, smtp_server: SmtpServer
) -> None:
    add_odd_source(site)
    ingested = digest("ingest", cwd=site)
    assert ingested.returncode == 0, ingested.stderr
    assert "odd: https://lab.example.org/papers/42 is dated 2027-01-01, in the future" in (
        ingested.stderr
    )
    ran = digest("run", "--no-ingest", cwd=site)
    assert ran.returncode == 0, ran.stderr
    store = Store(f"sqlite:///{site / 'data' / 'digest.db'}")
    try:
        ada = store.delivery("ada@example.org", datetime.now().astimezone().date())
        sent = [d for d in store.deliveries() if d.subscriber == "ada@example.org"]
        assert sent and len(sent[0].paper_ids) >= 5  # her papers, not the one odd item
        assert ada is None or ada.paper_ids == sent[0].paper_ids
    finally:
        store.dispose()


def test_a_future_paper_stored_earlier_does_not_move_the_listing_window(
    site: Path,
) -> None:
    assert digest("ingest", cwd=site).returncode == 0
    cfg = load_config(site / "digest.toml")
    store = Store(cfg.database_url)
    try:
        store.upsert_papers([])
        with store.session() as s:
            s.add(
                Paper(
                    id="https://lab.example.org/papers/42",
                    title="Time-Travelling Transformers",
                    announced=date(2099, 1, 1),
                    sources=["rss:odd"],
                )
            )
            s.commit()
        ctx = prepare(cfg, store, datetime.now().astimezone())
        assert ctx.latest is not None and ctx.latest < date(2099, 1, 1)
        assert len(ctx.listing) > 1
    finally:
        store.dispose()


def test_papers_purge_removes_what_one_source_brought(site: Path) -> None:
    add_odd_source(site)
    assert digest("ingest", cwd=site).returncode == 0
    purged = digest("papers", "purge", "--source", "odd", cwd=site)
    assert purged.returncode == 0, purged.stderr
    assert "odd: 1 paper(s) deleted" in purged.stdout
    again = digest("papers", "purge", "--source", "odd", cwd=site)
    assert (
        again.returncode == 1 and "no stored paper came from a source named 'odd'" in again.stderr
    )
    store = Store(f"sqlite:///{site / 'data' / 'digest.db'}")
    try:
        assert store.papers(["https://lab.example.org/papers/42"]) == {}
        assert store.count_papers() > 20  # the arXiv listing stays
    finally:
        store.dispose()
