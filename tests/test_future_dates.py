"""One feed item dated in the future must not become everybody's listing."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from digest.config import Config, SourceConfig, load_config
from digest.ingest import ingest_source
from digest.service.context import prepare
from digest.service.picking import pick_papers
from digest.store import Store
from digest.store.schema import Paper
from tests.conftest import SHARED, SmtpServer, digest, write_profile

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


@pytest.mark.shared_data
def test_a_source_two_years_ahead_of_the_others_does_not_push_them_out_of_the_digest(
    tmp_path: Path,
) -> None:
    """The real arXiv RSS of 2024-11-28 beside the real Hugging Face file of 2026-08-21."""
    rss = SHARED / "arxiv_rss" / "rss_arxiv_all-archives_2024-11-28.xml"
    hf = SHARED / "hf_daily_papers" / "hf_daily_papers_2026-08-21.json"
    cfg = Config(
        data_dir=tmp_path / "data",
        subscribers_dir=tmp_path / "subscribers",
        sources=[
            SourceConfig(name="arxiv", kind="arxiv-rss", url=rss.as_uri()),
            SourceConfig(name="hf", kind="hf-daily", url=hf.as_uri()),
        ],
    )
    write_profile(
        cfg.subscribers_dir,
        "astro",
        'email = "astro@example.org"\n[interests]\nkeywords = ["galaxy", "black hole"]\n',
    )
    store = Store(f"sqlite:///{tmp_path / 'digest.db'}")
    store.upgrade()
    try:
        for src in cfg.sources:
            ingest_source(store, src, today=date(2026, 8, 21))
        ctx = prepare(cfg, store, datetime(2026, 8, 21, 8, tzinfo=UTC))
        from_arxiv = [p for p in ctx.listing if "arxiv-rss:arxiv" in p.sources]
        assert len(from_arxiv) > 900  # the whole listing of its own day, not dropped
        picks, why = pick_papers(ctx, ctx.profiles[0])
        assert picks, why
        assert all("arxiv-rss:arxiv" in p.paper.sources for p in picks)
    finally:
        store.dispose()


def test_papers_of_a_source_removed_from_the_config_no_longer_reach_any_digest(
    site: Path,
) -> None:
    add_odd_source(site)
    assert digest("ingest", cwd=site).returncode == 0
    cfg = load_config(site / "digest.toml")
    store = Store(cfg.database_url)
    try:
        now = datetime.now().astimezone()
        assert any("rss:odd" in p.sources for p in prepare(cfg, store, now).listing)
        kept = cfg.model_copy(update={"sources": [s for s in cfg.sources if s.name != "odd"]})
        assert not any("rss:odd" in p.sources for p in prepare(kept, store, now).listing)
    finally:
        store.dispose()
