"""Names, titles and reasons on the real arXiv listing, read where a person reads them.

arXiv writes accents in TeX (`Martin G\\"unther`, `Schr\\"odinger`) and maths in titles
(`CeCo$_{0.5}$`). These tests follow readers who write the same names and words the way people
do, through a real run into a real SMTP server, and read what comes out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from digest.config import Config, SmtpConfig, SourceConfig, WebConfig
from digest.ingest import ingest_all
from digest.profiles import load_profile
from digest.rank import Pick
from digest.rank.explain import variant_key
from digest.rank.match import FollowedAuthors
from digest.service.context import prepare
from digest.service.picking import pick_papers
from digest.service.pipeline import run
from digest.store import Store
from digest.text import _FOLD_EXTRA as FOLD_EXTRA
from digest.text import fold, resolve_accents
from tests.conftest import SHARED, SmtpServer, bodies, digest, write_profile

pytestmark = pytest.mark.shared_data

RSS = SHARED / "arxiv_rss" / "rss_arxiv_all-archives_2024-11-28.xml"
NOW = datetime(2024, 11, 28, 12, 0, tzinfo=UTC)
GUENTHER_PAPER = "2411.18147"  # by "Martin G\"unther" in the feed
OTHER_GUENTHER = "Maximilian N. Günther"  # a different person with the same surname
LATEX_WORDS = {"textrm", "mathrm", "downarrow", "uparrow", "mathcal", "mathbf", "frac", "emph"}


def real_config(tmp_path: Path, smtp: SmtpServer | None = None) -> Config:
    key = tmp_path / "key"
    key.write_text("k" * 40)
    return Config(
        data_dir=tmp_path / "data",
        subscribers_dir=tmp_path / "subscribers",
        smtp=SmtpConfig(
            host="127.0.0.1",
            port=smtp.port if smtp else 1,
            from_address="digest@papers.example.org",
        ),
        web=WebConfig(base_url="https://papers.example.org", secret_key_file=key),
        sources=[SourceConfig(name="arxiv", kind="arxiv-rss", url=RSS.as_uri())],
    )


Picker = Callable[[str, int], list[Pick]]


@pytest.fixture
def picks_for(tmp_path: Path, store: Store) -> Picker:
    """The real listing ingested; then a reader's picks for `[interests]` lines and max_papers."""
    cfg = real_config(tmp_path)
    ingest_all(store, cfg, today=NOW.date())

    def picks(interests: str, max_papers: int) -> list[Pick]:
        path = write_profile(
            tmp_path / "p",
            "reader",
            f'email = "reader@example.org"\nmax_papers = {max_papers}\n[interests]\n{interests}',
        )
        found, _ = pick_papers(prepare(cfg, store, NOW), load_profile(path))
        return found

    return picks


@pytest.mark.parametrize("spelling", ["Martin Günther", "Martin Gunther"])
def test_a_followed_author_written_with_or_without_the_umlaut_gets_his_paper_by_name(
    tmp_path: Path, smtp_server: SmtpServer, store: Store, spelling: str
) -> None:
    write_profile(
        tmp_path / "subscribers",
        "reader",
        f'email = "reader@example.org"\nmax_papers = 3\n[interests]\nauthors = ["{spelling}"]\n',
    )
    report = run(real_config(tmp_path, smtp_server), store, now=NOW)
    assert report.count("sent") == 1, report.results
    sent = store.delivery("reader@example.org", NOW.date())
    assert sent is not None and GUENTHER_PAPER in sent.paper_ids
    raw = smtp_server.received[0].data
    text, html = bodies(raw)
    for part in (text, html):
        assert "Martin Günther" in part
        assert 'G\\"unther' not in part and 'G\\"unther' not in part
    assert f"author: {spelling}" in text
    # The other Günther in the listing is not the one this reader follows.
    assert all("Maximilian N. G" not in line for line in text.splitlines() if "Why" in line)


def test_author_names_match_with_initials_and_in_last_first_order_on_the_real_record(
    tmp_path: Path, store: Store
) -> None:
    ingest_all(store, real_config(tmp_path), today=NOW.date())
    paper = store.papers([GUENTHER_PAPER])[GUENTHER_PAPER]
    assert "Martin Günther" in paper.authors  # stored as text, not as TeX
    for spelling in ("M. Günther", "Günther, Martin", "GÜNTHER, M.", "Gunther, Martin"):
        assert FollowedAuthors([spelling]).hits(paper.authors) == [spelling], spelling
    assert FollowedAuthors(["Martin Günther"]).hits([OTHER_GUENTHER]) == []


def test_a_keyword_with_an_umlaut_finds_the_tex_spelling_in_titles(picks_for: Picker) -> None:
    for keyword in ("Schrödinger", "Schrodinger"):
        picks = picks_for(f'keywords = ["{keyword}"]\n', 20)
        ids = {p.paper.id for p in picks}
        # Three new papers have `Schr\"odinger` in the title.
        assert {"2411.17730", "2411.18163", "2411.18458"} <= ids, keyword
        assert all(f"your keyword: {keyword}" in p.reason for p in picks if p.paper.id in ids)


def test_an_excluded_word_with_an_accent_drops_the_tex_spelling(picks_for: Picker) -> None:
    picks = picks_for('keywords = ["well-posedness"]\nexclude = ["Schrödinger"]\n', 50)
    assert picks
    assert not any("odinger" in p.paper.title for p in picks)


def test_preview_prints_titles_as_text_not_latex(tmp_path: Path) -> None:
    (tmp_path / "digest.toml").write_text(
        '[web]\nbase_url = "https://papers.example.org"\nsecret_key_file = "key"\n'
        f'[[sources]]\nname = "arxiv"\nkind = "arxiv-rss"\nurl = "{RSS.as_uri()}"\n'
    )
    (tmp_path / "key").write_text("k" * 40)
    write_profile(
        tmp_path / "subscribers",
        "mat",
        'email = "mat@example.org"\n[interests]\nkeywords = ["superconducting", "magnetism"]\n',
    )
    assert digest("ingest", cwd=tmp_path).returncode == 0
    shown = digest("preview", "mat@example.org", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "CeCo₀.₅Rh₀.₅In₅" in shown.stdout
    titles = [ln for ln in shown.stdout.splitlines() if re.match(r"\s*\d+\. ", ln)]
    assert titles and not any("$" in t or "\\" in t for t in titles)


# Words a trial run found in "about:" on this listing: prose, not topics.
PROSE = {"secondly", "pertain", "uniquely", "continue", "lacks", "prove", "moreover", "thus"}


def test_the_why_line_has_no_latex_no_stop_words_and_no_repeats(picks_for: Picker) -> None:
    profiles = {
        "llm": '["KV cache", "LLMs", "speculative decoding", "LLM"]',
        "astro": '["pulsars", "pulsar", "neutron stars"]',
        "maths": '["Schrödinger", "well-posedness", "operator"]',
    }
    seen_about = 0
    for name, keywords in profiles.items():
        picks = picks_for(f"keywords = {keywords}\n", 25)
        assert picks, name
        for pick in picks:
            said: list[str] = []
            for signal in pick.signals:
                kind, _, values = signal.partition(": ")
                if kind not in ("your keyword", "your keywords", "about"):
                    continue
                seen_about += kind == "about"
                for term in values.split(", "):
                    words = term.lower().split()
                    assert not set(words) & LATEX_WORDS, (term, pick.reason)
                    assert not set(words) <= ENGLISH_STOP_WORDS, (term, pick.reason)
                    assert not (len(words) == 1 and len(words[0]) < 3), (term, pick.reason)
                    if kind == "about":  # research prose, true of any paper, says nothing
                        assert not set(words) & PROSE, (term, pick.reason)
                    said.append(variant_key(term))
            assert len(said) == len(set(said)), pick.reason
    assert seen_about  # the model's own terms are shown, apart from the keywords


def test_a_category_is_a_prior_not_a_trump_over_keywords_and_examples(
    picks_for: Picker,
) -> None:
    picks = picks_for(
        'keywords = ["KV cache", "speculative decoding"]\ncategories = ["cs.CL"]\n'
        'papers = ["2411.18462", "2411.18077"]\n',
        15,
    )
    ids = [p.paper.id for p in picks]
    # FastSwitch (cs.LG, cs.DC): "KV cache" in its abstract, close to the KV-cache example,
    # and not in cs.CL. It must not sit behind papers whose only merit is the category.
    assert "2411.18424" in ids[:3], [(p.paper.id, p.reason) for p in picks[:5]]
    only_category = [
        i for i, p in enumerate(picks) if not any(s.startswith("your keyword") for s in p.signals)
    ]
    with_keyword = [i for i, p in enumerate(picks) if i not in only_category]
    assert max(with_keyword) < min(only_category, default=len(picks))


def test_a_followed_authors_paper_is_picked_even_when_keyword_matches_fill_the_digest(
    picks_for: Picker,
) -> None:
    picks = picks_for('keywords = ["galaxy"]\nauthors = ["Martínez, J. C."]\n', 10)
    ids = [p.paper.id for p in picks]
    assert "2411.17791" in ids, ids  # by "J. C Martínez"; ten galaxy papers compete for 10 slots
    assert len(picks) == 10 and ids[0] == "2411.17791"


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Schrödinger", "schrodinger"),
        ('Schr\\"odinger', "schrodinger"),
        ("SCHRODINGER", "schrodinger"),
        ("naïve café Ångström", "naive cafe angstrom"),
        ("ﬁnance", "finance"),  # a ligature, split by compatibility decomposition
        ("Straße", "strasse"),
        ("αβγ", "αβγ"),  # letters without accents stay what they are
        ("Ǆ", "dz"),
    ],
)
def test_folding_drops_accents_case_and_tex_whatever_the_text(text: str, folded: str) -> None:
    assert fold(text) == folded


def test_folding_equals_decomposing_and_dropping_each_combining_mark() -> None:
    """The quick paths (ASCII as it is, one translate table) give what the plain recipe gives,
    over every kind of character."""
    import random
    import sys
    import unicodedata

    def plain(text: str) -> str:
        decomposed = unicodedata.normalize("NFKD", resolve_accents(text))
        bare = "".join(c for c in decomposed if not unicodedata.combining(c))
        return bare.casefold().translate(FOLD_EXTRA)

    rng = random.Random(7)
    texts = ["".join(chr(rng.randrange(sys.maxunicode)) for _ in range(40)) for _ in range(2000)]
    texts += ["".join(chr(rng.randrange(0x300)) for _ in range(40)) for _ in range(2000)]
    assert [fold(t) for t in texts] == [plain(t) for t in texts]
