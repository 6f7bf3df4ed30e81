from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import date
from pathlib import Path

import pytest

from digest.config import SourceConfig
from digest.ingest import ingest_source
from digest.record import normalise_ws, split_authors
from digest.store import Store
from tests.conftest import DATA, DEMO_DATA, SHARED

RSS_2024 = SHARED / "arxiv_rss" / "rss_arxiv_all-archives_2024-11-28.xml"


def src(path: Path, **kw: object) -> SourceConfig:
    return SourceConfig(name="arxiv", kind="arxiv-rss", url=path.as_uri(), **kw)  # type: ignore[arg-type]


def feed_abstracts(path: Path) -> dict[str, tuple[str, str]]:
    """id -> (announce type, abstract) read with a plain XML parser, the reference text."""
    out = {}
    ns = {"arxiv": "http://arxiv.org/schemas/atom"}
    for item in ET.parse(path).getroot().iter("item"):
        desc = item.findtext("description") or ""
        pid = re.sub(r"v\d+$", "", (item.findtext("guid") or "").rsplit(":", 1)[-1])
        kind = item.findtext("arxiv:announce_type", namespaces=ns) or ""
        out[pid] = (kind, normalise_ws(desc.split("Abstract:", 1)[1]))
    return out


@pytest.mark.shared_data
def test_it_stores_the_935_new_and_cross_listed_papers_with_exact_abstracts(store: Store) -> None:
    report = ingest_source(store, src(RSS_2024))
    assert report.status == "ok"
    assert report.added == 935
    assert report.skipped["replace"] == 569
    expected = {k: v for k, v in feed_abstracts(RSS_2024).items() if v[0] in ("new", "cross")}
    stored = store.papers(list(expected))
    assert len(stored) == 935
    assert {pid: p.abstract for pid, p in stored.items()} == {
        pid: text for pid, (_, text) in expected.items()
    }
    # The maths feedparser's sanitiser would eat, e.g. "$1<p<2$"-like comparisons, survives.
    with_lt = [pid for pid, (_, text) in expected.items() if re.search(r"\$[^$]*<[^$]*\$", text)]
    assert len(with_lt) >= 4
    assert all("<" in stored[pid].abstract for pid in with_lt)


@pytest.mark.shared_data
def test_ingesting_the_same_feed_twice_adds_nothing(store: Store) -> None:
    ingest_source(store, src(RSS_2024))
    again = ingest_source(store, src(RSS_2024))
    assert (again.added, again.updated) == (0, 0)
    assert store.count_papers() == 935


@pytest.mark.shared_data
def test_replacements_are_stored_when_asked_for(store: Store) -> None:
    report = ingest_source(store, src(RSS_2024, include_replacements=True))
    assert report.added == 1504


@pytest.mark.shared_data
def test_a_category_filter_keeps_only_matching_papers(store: Store) -> None:
    report = ingest_source(store, src(RSS_2024, categories=["astro-ph"]))
    papers = store.papers_between(date(2024, 11, 1), date(2024, 12, 1))
    assert report.added == len(papers) > 0
    assert all(any(c.startswith("astro-ph") for c in p.categories) for p in papers)


@pytest.mark.shared_data
def test_the_paper_record_is_normalised(store: Store) -> None:
    ingest_source(store, src(RSS_2024))
    p = store.papers(["2411.17700"])["2411.17700"]
    assert p.version == 1
    assert p.announced == date(2024, 11, 28)
    assert p.abs_url == "https://arxiv.org/abs/2411.17700"
    assert p.pdf_url == "https://arxiv.org/pdf/2411.17700v1"
    assert p.categories == ["cs.CY"]
    assert p.authors == ["Jun Cui"]


@pytest.mark.shared_data
def test_the_old_rdf_format_is_understood(store: Store) -> None:
    path = SHARED / "arxiv_rss" / "rdf_arxiv_hep-ex_2021-07-08_physbiblio_trimmed.xml"
    report = ingest_source(store, src(path, include_replacements=True))
    assert report.added == 3
    p = store.papers(["2106.00550"])["2106.00550"]
    assert p.announce_type == "cross"
    assert p.title == "Potential applications of modular representation theory to quantum mechanics"
    assert p.authors == ["Robert A. Wilson"]
    old = SHARED / "arxiv_rss" / "rdf_arxiv_hep-ex_2018-05-23_physbiblio.xml"
    ingest_source(store, src(old))
    q = store.papers(["1805.08875"])["1805.08875"]
    # "&amp;lt;" in the RDF is an escaped "<" inside escaped HTML: one "<" in the text.
    assert "$2.6<\\eta<4$" in q.abstract
    assert not q.abstract.startswith("<p>")


@pytest.mark.shared_data
def test_an_empty_listing_is_not_an_error(store: Store) -> None:
    report = ingest_source(
        store, src(SHARED / "arxiv_rss" / "rss_arxiv_empty-test-archive_2024-11-28.xml")
    )
    assert (report.status, report.added) == ("ok", 0)


@pytest.mark.shared_data
def test_arxivs_error_feed_is_reported_clearly(store: Store) -> None:
    report = ingest_source(
        store, src(SHARED / "arxiv_rss" / "rss_arxiv_error-bad-archive_2024-11-28.xml")
    )
    assert report.status == "error"
    assert "Bad archive 'astroph'" in (report.error or "")
    state = store.feed_state("arxiv")
    assert state is not None and state.last_status == "error"


def test_a_truncated_feed_keeps_what_parsed_or_fails_clearly(store: Store) -> None:
    report = ingest_source(store, src(DATA / "truncated.xml"))
    if report.status == "error":
        assert "cannot parse feed" in (report.error or "")
    else:
        assert report.problems and "malformed" in report.problems[0]


def test_authors_with_affiliations_split_at_top_level_commas() -> None:
    assert split_authors("Ada Lovelace (Analytical Engines, London), Charles Babbage") == [
        "Ada Lovelace",
        "Charles Babbage",
    ]


def test_the_demo_listing_skips_its_replacement(store: Store) -> None:
    report = ingest_source(store, src(DEMO_DATA / "listing.xml"))
    assert report.added == 24
    assert report.skipped == {"replace": 1}
    assert "2604.01234" not in store.papers(["2604.01234"])
