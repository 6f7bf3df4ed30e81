"""One odd entry in a third-party feed costs that entry, never the source or the day's run.

The hostile values are put into the real files from ../shared/data (RELIABILITY.md rows F1, F5:
bad entries are reported and skipped, the rest goes on), and
the parsers are fuzzed with values of the wrong type and size; the cases that found something
are kept as examples.
"""

from __future__ import annotations

import contextlib
import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from digest.config import SourceConfig
from digest.errors import FeedError
from digest.ingest import arxiv_api, hf_daily, ingest_bytes, rss
from digest.store import Store
from tests.conftest import SHARED, digest, write_profile

pytestmark = pytest.mark.shared_data

RSS = SHARED / "arxiv_rss" / "rss_arxiv_all-archives_2024-11-28.xml"
HF = SHARED / "hf_daily_papers" / "hf_daily_papers_2025-06-10.json"
API = SHARED / "arxiv_api" / "q_testing_s0_m10_bc5a6c384fe9.xml"
TODAY = date(2024, 11, 28)
LONG_LINK = "https://journal.example.org/article/" + "x" * 600


def hostile_hf() -> str:
    """The real Hugging Face day with the values that each stopped a run before."""
    entries = json.loads(HF.read_text(encoding="utf-8"))
    entries[0]["publishedAt"] = 1732924800
    entries[0]["paper"]["publishedAt"] = 1732924800
    entries[1]["paper"]["upvotes"] = float("inf")
    entries[2]["paper"]["upvotes"] = 10**25
    entries[3]["paper"]["authors"] = "not a list"
    entries[4]["paper"]["title"] = ["a", "list"]
    entries[5]["paper"]["id"] = 2506.00001
    return json.dumps(entries)  # Infinity is written as JSON's non-standard `Infinity`


def hostile_api() -> str:
    """The real API answer with a pdf link that has no href (a KeyError before)."""
    text = API.read_text(encoding="utf-8")
    return text.replace(
        '<link href="https://arxiv.org/pdf/2202.12139v1" rel="related" type="application/pdf"'
        ' title="pdf"/>',
        '<link rel="related" type="application/pdf" title="pdf"/>',
        1,
    )


def hostile_rss() -> str:
    items = "".join(
        f"<item><title>{title}</title><link>{link}</link><description>d</description></item>"
        for title, link in (
            ("A paper with an absurd link", LONG_LINK),
            ("A paper with a NUL\x00 in its title", "https://journal.example.org/a/1"),
            ("A fine paper", "https://journal.example.org/a/2"),
        )
    ).replace("\x00", "&#0;")
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>J</title>'
        f"<link>https://journal.example.org/</link><description>j</description>{items}"
        "</channel></rss>"
    )


def test_a_run_with_every_bad_value_delivers_the_arxiv_digests_and_names_each_bad_entry(
    site: Path,
) -> None:
    (site / "hf.json").write_text(hostile_hf())
    (site / "api.xml").write_text(hostile_api())
    (site / "journal.xml").write_text(hostile_rss())
    cfg = site / "digest.toml"
    text = re.sub(r'url = "file://[^"]*listing.xml"', f'url = "{RSS.as_uri()}"', cfg.read_text())
    text = re.sub(
        r'url = "file://[^"]*hf_daily.json"', f'url = "{(site / "hf.json").as_uri()}"', text
    )
    text = re.sub(
        r'url = "file://[^"]*examples.xml"', f'url = "{(site / "api.xml").as_uri()}"', text
    )
    text += (
        f'[[sources]]\nname = "journal"\nkind = "rss"\nurl = "{(site / "journal.xml").as_uri()}"\n'
    )
    cfg.write_text(text)
    write_profile(
        site / "subscribers",
        "astro",
        'email = "astro@example.org"\n[interests]\nkeywords = ["galaxies", "black hole"]\n',
    )
    ran = digest("run", cwd=site)
    assert "Traceback" not in ran.stderr
    lines = ran.stderr.splitlines()
    for needle in ("hf: entry 2:", "hf: entry 3:", "hf: entry 4:", "hf: entry 5:", "hf: entry 6:"):
        assert sum(needle in ln for ln in lines) <= 1, needle
    # Each bad entry is one line: skipped with its reason, or kept without the bad value.
    assert any("hf: entry 5:" in ln and "no title" in ln for ln in lines), ran.stderr
    assert any("hf: entry 6: no arXiv id (2506.00001)" in ln for ln in lines), ran.stderr
    assert any("upvotes inf left out" in ln for ln in lines), ran.stderr
    assert any("upvotes 10000000000000000000000000 left out" in ln for ln in lines), ran.stderr
    assert any("journal: entry 1: id longer than 512 characters" in ln for ln in lines)
    astro = next(ln for ln in ran.stdout.splitlines() if "astro@example.org" in ln)
    assert "sent" in astro, ran.stdout
    store = Store(f"sqlite:///{site / 'data' / 'digest.db'}")
    try:
        papers = store.papers_between(date(2000, 1, 1), date(2100, 1, 1))
        by_source = {t.split(":")[-1] for p in papers for t in p.sources}
        assert {"arxiv", "hf", "arxiv-api", "journal"} <= by_source  # every source ingested
        hf_votes = [p.upvotes for p in papers if "hf-daily:hf" in p.sources]
        assert all(v is None or 0 <= v < 2**31 for v in hf_votes)
        assert not any("\x00" in p.title for p in papers)
    finally:
        store.dispose()


# -- fuzzing: values of the wrong type and size in each parser's fields --------------------

SRC = {
    "hf-daily": SourceConfig(name="hf", kind="hf-daily", url="https://example.org/hf"),
    "arxiv-api": SourceConfig(name="api", kind="arxiv-api", url="https://example.org/api"),
    "rss": SourceConfig(name="feed", kind="rss", url="https://example.org/feed"),
}
ODD: Any = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.text(alphabet="x", min_size=500, max_size=700),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def _stored(store: Store, src: SourceConfig, content: bytes) -> None:
    with contextlib.suppress(FeedError):  # the whole document refused in one line: allowed
        ingest_bytes(store, src, content, TODAY)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "id": st.one_of(ODD, st.just("2506.08007")),
                "title": ODD,
                "summary": ODD,
                "upvotes": ODD,
                "publishedAt": ODD,
                "submittedOnDailyAt": ODD,
                "authors": st.one_of(
                    ODD, st.lists(st.one_of(ODD, st.fixed_dictionaries({"name": ODD})))
                ),
            },
        ),
        max_size=4,
    )
)
@example([{"id": "2506.08007", "title": "T", "upvotes": float("inf")}])
@example([{"id": "2506.08007", "title": "T", "upvotes": 10**25, "publishedAt": 1732924800}])
def test_no_hugging_face_entry_of_any_shape_escapes_its_entry(
    store: Store, papers: list[Any]
) -> None:
    doc = json.dumps([{"paper": p} for p in papers])
    parsed = hf_daily.parse(doc.encode(), SRC["hf-daily"], TODAY)
    assert len(parsed.records) + len(parsed.problems) <= len(papers)
    _stored(store, SRC["hf-daily"], doc.encode())


XML_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00<&"), max_size=80
) | st.text(alphabet="y", min_size=600, max_size=700)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ident=XML_TEXT,
    title=XML_TEXT,
    link_attrs=st.sampled_from(['title="pdf"', 'href="x" title="pdf"', ""]),
    published=XML_TEXT,
)
@example(
    ident="http://arxiv.org/abs/2202.12139v1",
    title="T",
    link_attrs='title="pdf"',
    published="2024-01-01",
)
def test_no_arxiv_api_entry_of_any_shape_escapes_its_entry(
    store: Store, ident: str, title: str, link_attrs: str, published: str
) -> None:
    from xml.sax.saxutils import escape

    doc = (
        '<feed xmlns="http://www.w3.org/2005/Atom"><entry>'
        f"<id>{escape(ident)}</id><title>{escape(title)}</title>"
        f"<published>{escape(published)}</published><link {link_attrs}/></entry></feed>"
    ).encode()
    with contextlib.suppress(FeedError):
        arxiv_api.parse(doc, SRC["arxiv-api"], TODAY)
    _stored(store, SRC["arxiv-api"], doc)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(link=XML_TEXT, title=XML_TEXT, date_text=XML_TEXT, author=XML_TEXT)
@example(link=LONG_LINK, title="T", date_text="", author="")
def test_no_rss_item_of_any_shape_escapes_its_entry(
    store: Store, link: str, title: str, date_text: str, author: str
) -> None:
    from xml.sax.saxutils import escape

    doc = (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>f</title><item>'
        f"<title>{escape(title)}</title><link>{escape(link)}</link>"
        f"<pubDate>{escape(date_text)}</pubDate><author>{escape(author)}</author>"
        "</item></channel></rss>"
    ).encode()
    with contextlib.suppress(FeedError):
        rss.parse(doc, SRC["rss"], TODAY)
    _stored(store, SRC["rss"], doc)
