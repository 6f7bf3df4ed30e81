from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from digest.config import Config
from digest.ingest import ingest_all
from digest.models import Paper
from digest.pipeline import pick_papers, prepare
from digest.profiles import load_profile
from digest.rank import Ranker, _author_key
from digest.store import Store
from tests.conftest import ADA, BOB, NOW, write_profile


def ranked(store: Store, cfg: Config, profile_text: str, tmp_path: Path) -> list:  # type: ignore[type-arg]
    ingest_all(store, cfg)
    profile = load_profile(write_profile(tmp_path / "p", "x", profile_text))
    ctx = prepare(cfg, store, NOW)
    picks, _ = pick_papers(ctx, profile)
    return picks


def test_examples_and_keywords_put_the_relevant_papers_first(
    store: Store, workspace: Config, tmp_path: Path
) -> None:
    picks = ranked(store, workspace, ADA, tmp_path)
    titles = [p.paper.title for p in picks]
    # Up to max_papers: the ranker leaves a slot empty rather than fill it with noise.
    assert 5 <= len(picks) <= 8
    assert all(
        re.search(r"State Space|Long Context|Linear Recurrences|KV Cache", t) for t in titles[:5]
    )
    assert not any("Galaxies" in t or "Triangulations" in t for t in titles)


def test_every_reason_names_a_real_matching_term_author_or_category(
    store: Store, workspace: Config, tmp_path: Path
) -> None:
    for text in (ADA, BOB):
        for pick in ranked(store, workspace, text, tmp_path):
            p = pick.paper
            body = f"{p.title}. {p.abstract}".lower()
            assert pick.reason
            for signal in pick.signals:
                kind, _, values = signal.partition(": ")
                for value in values.split(", "):
                    if kind == "matches":
                        assert value.lower() in body, (value, p.title)
                    elif kind == "author":
                        assert value in p.authors
                    elif kind == "category":
                        assert value in p.categories


def test_excluded_keywords_remove_a_paper(store: Store, workspace: Config, tmp_path: Path) -> None:
    titles = [p.paper.title for p in ranked(store, workspace, BOB, tmp_path)]
    assert any("Retrieval-Augmented" in t for t in titles)
    assert not any("Prompt Injection" in t for t in titles)


def test_a_followed_author_is_always_picked(
    store: Store, workspace: Config, tmp_path: Path
) -> None:
    text = (
        'email = "c@example.org"\nmax_papers = 3\n'
        '[interests]\nauthors = ["Okafor, Mira"]\nkeywords = ["galaxies"]\n'
    )
    picks = ranked(store, workspace, text, tmp_path)
    okafor = [p for p in picks if "Mira Okafor" in p.paper.authors]
    assert okafor and all("author: Okafor, Mira" in p.reason for p in okafor)


def test_keywords_alone_give_a_sensible_cold_start(
    store: Store, workspace: Config, tmp_path: Path
) -> None:
    text = (
        'email = "d@example.org"\nmax_papers = 3\n'
        '[interests]\nkeywords = ["galaxies", "dark matter"]\n'
    )
    picks = ranked(store, workspace, text, tmp_path)
    assert picks and "Galaxies" in picks[0].paper.title


def test_a_profile_with_no_interests_gets_nothing_rather_than_noise(
    store: Store, workspace: Config, tmp_path: Path
) -> None:
    assert ranked(store, workspace, 'email = "e@example.org"\n', tmp_path) == []


def test_author_names_match_in_their_common_spellings() -> None:
    assert _author_key("Tri Dao") == _author_key("T. Dao") == _author_key("Dao, Tri")
    assert _author_key("Tri Dao") != _author_key("Tri Nguyen")


def test_the_ranker_handles_papers_it_was_not_fitted_on() -> None:
    from datetime import date

    corpus = [
        Paper(
            id=f"p{i}",
            title=f"topic {i} graphs",
            abstract="graphs and more graphs",
            announced=date(2026, 1, 1),
        )
        for i in range(5)
    ]
    ranker = Ranker(corpus)
    new = Paper(id="n", title="spectral graphs", abstract="new graphs", announced=date(2026, 1, 2))
    assert ranker.vectors([new]).shape[0] == 1


def test_a_dislike_lowers_that_paper_and_a_like_raises_it(store: Store, workspace: Config) -> None:
    ingest_all(store, workspace)
    ctx = prepare(workspace, store, NOW)
    profile = load_profile(workspace.subscribers_dir / "ada.toml")
    examples = list(store.papers(profile.interests.papers).values())
    listing = store.papers_between(NOW.date() - timedelta(days=5), NOW.date())
    X = ctx.ranker.vectors(listing)
    base, _ = ctx.ranker._model_scores(profile, examples, X)
    target = next(i for i, p in enumerate(listing) if "KV Cache" in p.title)
    other = next(i for i, p in enumerate(listing) if "Galaxies" in p.title)
    disliked, _ = ctx.ranker._model_scores(profile, examples, X, dislikes=X[[target]])
    liked, _ = ctx.ranker._model_scores(profile, examples, X, likes=X[[other]])
    assert base is not None and disliked is not None and liked is not None
    assert disliked[target] < base[target]
    assert liked[other] > base[other]
