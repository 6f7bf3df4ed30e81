from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from digest.config import SourceConfig
from digest.ingest import ingest_source
from digest.store import Store
from tests.conftest import DATA, DEMO_DATA, SHARED

HF_FILES = sorted((SHARED / "hf_daily_papers").glob("*.json"))
API = SHARED / "arxiv_api"


def hf(path: Path) -> SourceConfig:
    return SourceConfig(name="hf", kind="hf-daily", url=path.as_uri())


def api(path: Path) -> SourceConfig:
    return SourceConfig(name="arxiv-api", kind="arxiv-api", url=path.as_uri())


@pytest.mark.shared_data
def test_all_seven_hugging_face_days_ingest_with_upvotes(store: Store) -> None:
    assert len(HF_FILES) == 7
    total = 0
    for path in HF_FILES:
        report = ingest_source(store, hf(path))
        assert report.status == "ok", (path.name, report.error)
        assert report.entries > 0 and not report.problems, path.name
        total += report.added
    assert total == store.count_papers() == 109
    p = store.papers(["2405.17247"])["2405.17247"]
    assert p.upvotes is not None and p.upvotes > 0
    assert p.hf_url == "https://huggingface.co/papers/2405.17247"


@pytest.mark.shared_data
def test_the_python_repr_days_decode(store: Store) -> None:
    for name, count in (("2024-12-20", 16), ("2025-01-10", 9)):
        path = next(p for p in HF_FILES if name in p.name)
        report = ingest_source(store, hf(path))
        assert (report.status, report.added) == ("ok", count)


def test_a_paper_in_both_arxiv_and_hugging_face_is_one_record(store: Store) -> None:
    arxiv = SourceConfig(name="arxiv", kind="arxiv-rss", url=(DEMO_DATA / "listing.xml").as_uri())
    # Hugging Face first, then arXiv: the arXiv text wins, the upvotes stay.
    ingest_source(store, hf(DEMO_DATA / "hf_daily.json"))
    ingest_source(store, arxiv)
    p = store.papers(["2611.10001"])["2611.10001"]
    assert p.upvotes == 87
    assert p.categories == ["cs.CL", "cs.LG"]
    assert p.announced == date(2026, 11, 20)
    assert sorted(p.sources) == ["arxiv-rss:arxiv", "hf-daily:hf"]
    assert store.count_papers() == 24
    # And the other way round: upvotes merge into the stored arXiv paper.
    again = ingest_source(store, hf(DEMO_DATA / "hf_daily.json"))
    assert again.added == 0


def test_a_broken_hugging_face_entry_is_reported_and_the_rest_kept(
    store: Store, tmp_path: Path
) -> None:
    doc = (DEMO_DATA / "hf_daily.json").read_text()
    broken = tmp_path / "hf.json"
    broken.write_text(doc.replace("[\n", '["{not python}", 42, {"paper": {"id": "nope"}},\n', 1))
    report = ingest_source(store, hf(broken))
    assert report.added == 3
    assert len(report.problems) == 3
    assert all("entry" in p for p in report.problems)


@pytest.mark.shared_data
def test_arxiv_api_answers_of_both_formats_ingest(store: Store) -> None:
    assert ingest_source(store, api(API / "q_testing_s0_m100_cfe7536492ca.xml")).added == 100
    old = ingest_source(
        store, api(API / "api_old-format_all-electron_2024-12-28_aioarxiv-balconyjh.xml")
    )
    assert old.added == 1
    report = ingest_source(store, api(API / "id_1605.08386_s0_m100_199195aa31ad.xml"))
    p = store.papers(["1605.08386"])["1605.08386"]
    assert report.added == 1 and p.categories[0] == "math.CO"
    assert p.authors == ["Caprice Stanley", "Tobias Windisch"]
    old_style = ingest_source(store, api(API / "id_astro-ph_0601001_s0_m100_3150dca9dc76.xml"))
    assert old_style.added == 1 and store.papers(["astro-ph/0601001"])


@pytest.mark.shared_data
def test_an_arxiv_api_error_is_reported_and_no_result_is_fine(store: Store) -> None:
    bad = ingest_source(store, api(API / "id_abc_s0_m100_b79c8dcf6bc3.xml"))
    assert bad.status == "error" and "incorrect id format for abc" in (bad.error or "")
    empty = ingest_source(store, api(API / "id_0000.0000_s0_m100_8b51d9633a68.xml"))
    assert (empty.status, empty.added) == ("ok", 0)


def test_a_generic_atom_feed_maps_to_arxiv_ids_or_dois(store: Store) -> None:
    src = SourceConfig(name="journal", kind="rss", url=(DATA / "generic.atom").as_uri())
    report = ingest_source(store, src)
    assert report.added == 2
    assert len(report.problems) == 1 and "no link, id or DOI" in report.problems[0]
    mirror = store.papers(["2611.10001"])["2611.10001"]
    assert mirror.version == 2
    article = store.papers(["doi:10.5555/invented.42"])["doi:10.5555/invented.42"]
    assert article.title == "Catalysis &amp; Kinetics of Invented Compounds" or (
        article.title == "Catalysis & Kinetics of Invented Compounds"
    )
    assert (
        "alert" not in article.abstract and article.abstract == "We measure rates. They are fast."
    )
    assert article.authors == ["Ida Noether", "Karl Weiss"]


def test_looking_up_thousands_of_example_papers_reads_the_store_once(store: Store) -> None:
    """Each id used to be checked against a fresh read of all the wanted papers: 2,500 example
    ids (a thousand readers) took ten minutes before a run began."""
    from digest.config import Config
    from digest.ingest.run import lookup_papers
    from digest.record import PaperRecord

    ids = [f"2401.{i:05d}" for i in range(3000)]
    store.upsert_papers(
        PaperRecord(id=i, title=f"Paper {i}", source="s", kind="rss", announced=date(2024, 1, 2))
        for i in ids[:2000]
    )
    reads: list[int] = []
    titles = store.titles  # which are stored: ids and titles, not whole papers
    store.titles = lambda wanted: reads.append(len(wanted)) or titles(wanted)  # type: ignore[method-assign]
    found = lookup_papers(store, Config(), ids + ids[:10])
    assert reads == [3000]
    assert len(found.missing) == 1000 and "no arxiv-api source" in (found.error or "")


def test_words_either_side_of_a_closing_paragraph_tag_stay_apart() -> None:
    from digest.record import html_to_text

    # As Nature's content:encoded writes it: a paragraph of citation, then the abstract.
    text = html_to_text("<p>Nature, Published online: 1 May; doi:10.1038/x</p>We decode speech")
    assert text == "Nature, Published online: 1 May; doi:10.1038/x We decode speech"
