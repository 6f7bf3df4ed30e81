from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from digest.config import Config
from digest.ingest import ingest_all
from digest.profiles import Profile, load_profile
from digest.rank import Ranker
from digest.rank.match import FollowedAuthors, author_key
from digest.rank.model import QUANTILES, _quantiles, top_columns
from digest.service.context import Context, prepare, prepare_models
from digest.service.picking import pick_papers, rank_pool
from digest.store import Store
from digest.store.schema import Paper
from tests.conftest import ADA, BOB, NOW, write_profile

ADA_EMAIL = "ada@example.org"


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
                    if kind in ("your keyword", "your keywords", "about"):
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
    followed = FollowedAuthors(["Tri Dao"])
    for spelling in ("Tri Dao", "T. Dao", "Dao, Tri", "TRI DAO"):
        assert followed.hits([spelling]) == ["Tri Dao"], spelling
    assert followed.hits(["Tri Nguyen"]) == followed.hits(["Tom Dao"]) == []
    assert author_key("Dao, Tri") == ("dao", ("tri",))


def test_initials_a_reader_writes_must_all_be_there_but_a_middle_name_left_out_may_be() -> None:
    followed = FollowedAuthors(["Martínez, J. C."])
    assert followed.hits(["Jessica Martinez"]) == []  # no C: another Martinez
    assert followed.hits(["Juan Carlos Mart\\'inez"]) == ["Martínez, J. C."]
    assert FollowedAuthors(["Martin Günther"]).hits(["Martin K. Günther"]) == ["Martin Günther"]
    assert FollowedAuthors(["Jean-Pierre Serre"]).hits(["J.-P. Serre"]) == ["Jean-Pierre Serre"]


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
    assert ranker.vocab.dense_rows([new]).shape[0] == 1


def test_corpora_without_words_or_with_only_a_few_still_rank() -> None:
    from datetime import date

    from digest.profiles import Interests

    def papers(titles: list[str], n: int) -> list[Paper]:
        day = date(2026, 1, 1)
        return [Paper(id=f"w{i}", title=titles[i % len(titles)], announced=day) for i in range(n)]

    wordless = papers(["The", "of it and"], 3)
    profile = Profile(email=ADA_EMAIL, interests=Interests(keywords=["graphs"]))
    # Nothing at all (a first run whose feeds all failed), and only stop words.
    for corpus in ([], wordless):
        assert Ranker(corpus).rank(profile, wordless, complete=True)[0].score == 0.0
    # Enough papers for the projection, but fewer terms than it has dimensions.
    few = papers(["graphs", "trees"], 400)
    picks = Ranker(few).rank(profile, few[:4], few[:1], limit=2)
    assert [p.paper.title for p in picks] == ["graphs", "graphs"]


def _ada_ready(workspace: Config, store: Store) -> tuple[Context, Profile]:
    """The run's context with Ada's model trained and the listing scored, as `digest run`."""
    ctx = prepare(workspace, store, NOW)
    profile = load_profile(workspace.subscribers_dir / "ada.toml")
    prepare_models(ctx, [profile])
    return ctx, profile


def _listing_scores(workspace: Config, store: Store) -> tuple[list[Paper], dict[str, float]]:
    ctx, profile = _ada_ready(workspace, store)
    row = ctx.scores[profile.email]
    return ctx.listing, {p.id: float(row[j]) for j, p in enumerate(ctx.listing)}


def test_stored_feedback_lowers_a_disliked_paper_and_raises_a_liked_one(
    store: Store, workspace: Config
) -> None:
    ingest_all(store, workspace)
    listing, base = _listing_scores(workspace, store)
    target = next(p.id for p in listing if "KV Cache" in p.title)
    other = next(p.id for p in listing if "Galaxies" in p.title)
    store.set_feedback(ADA_EMAIL, target, "dislike", NOW)
    store.set_feedback(ADA_EMAIL, other, "like", NOW)
    _, after = _listing_scores(workspace, store)
    assert after[target] < base[target]
    assert after[other] > base[other]


def test_models_are_kept_and_retrained_only_when_their_inputs_change(
    store: Store, workspace: Config
) -> None:
    ingest_all(store, workspace)
    profile = load_profile(workspace.subscribers_dir / "ada.toml")

    def retrained() -> int:
        ctx = prepare(workspace, store, NOW)
        prepare_models(ctx, [profile])
        return ctx.retrained

    # An earlier release's pickled vocabulary (129 MB at 20,000 papers) is not left behind.
    old = workspace.data_dir / "models" / "vocabulary.pkl"
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_bytes(b"\x80\x05old pickle")
    assert retrained() == 1
    assert retrained() == 0
    assert (workspace.data_dir / "models" / "vocabulary.npz").exists()
    assert not old.exists()
    paper = store.papers_between(NOW.date() - timedelta(days=5), NOW.date())[0]
    store.set_feedback(ADA_EMAIL, paper.id, "like", NOW)
    assert retrained() == 1
    assert retrained() == 0
    # Withdrawn feedback is a change too.
    store.set_feedback(ADA_EMAIL, paper.id, None, NOW)
    assert retrained() == 1


def test_a_reason_can_name_the_liked_paper_a_pick_is_closest_to(
    store: Store, workspace: Config, tmp_path: Path
) -> None:
    ingest_all(store, workspace)
    profile = load_profile(workspace.subscribers_dir / "ada.toml")
    examples = store.papers(profile.interests.papers)
    picks = ranked(store, workspace, ADA, tmp_path)
    anchored = [s for p in picks for s in p.signals if s.startswith("close to")]
    assert anchored
    titles = [p.title for p in examples.values()]
    for signal in anchored:
        quoted = signal.split("“", 1)[1].split("”", 1)[0].rstrip("…")
        assert any(t.startswith(quoted) for t in titles), signal


def test_near_duplicates_wait_behind_other_qualifying_papers(
    store: Store, workspace: Config
) -> None:
    ingest_all(store, workspace)
    ctx, profile = _ada_ready(workspace, store)
    best = rank_pool(ctx, profile, ctx.listing, complete=True)[0].paper
    twins = [
        Paper(
            id=f"twin{i}",
            title=best.title,
            abstract=best.abstract,
            announced=best.announced,
        )
        for i in range(3)
    ]
    picks = ctx.ranker.rank(
        profile,
        [*twins, *ctx.listing],
        ctx.examples[profile.email],
        model=ctx.models[profile.email],
    )
    ids = [p.paper.id for p in picks]
    copies = [i for i, pid in enumerate(ids) if pid.startswith("twin") or pid == best.id]
    # One copy leads; the others only come after every distinct paper that qualified.
    assert copies[0] == 0
    assert all(pos >= len(ids) - (len(copies) - 1) for pos in copies[1:])


def test_scores_are_calibrated_as_a_share_of_recent_papers(store: Store, workspace: Config) -> None:
    ingest_all(store, workspace)
    ctx, profile = _ada_ready(workspace, store)
    model = ctx.models[profile.email]
    raw = ctx.ranker.vocab.dense @ model.direction
    share = model.calibrate(raw)
    assert share.min() >= 0.0 and share.max() <= 1.0
    # About a tenth of the corpus ranks at 0.9 or above: min_score = 0.9 means "top 10%".
    assert abs(float(np.mean(share >= 0.9)) - 0.1) < 0.05


def test_trending_weight_lets_upvotes_lift_a_paper(store: Store, workspace: Config) -> None:
    ingest_all(store, workspace)
    ctx, base = _ada_ready(workspace, store)
    pool = [p.model_copy() for p in ctx.listing]
    last = rank_pool(ctx, base, pool, complete=True)[-1].paper
    last.upvotes = 500
    trending = base.model_copy(update={"trending_weight": 0.9})
    order = [
        p.paper.id
        for p in ctx.ranker.rank(
            trending, pool, ctx.examples[base.email], model=ctx.models[base.email], complete=True
        )
    ]
    assert order.index(last.id) < len(order) // 4


def test_a_removed_profile_takes_its_stored_model_with_it(store: Store, workspace: Config) -> None:
    from digest.service.pipeline import run

    run(workspace, store, now=NOW, dry_run=True)
    assert set(store.rank_models()) == {"ada@example.org", "bob@example.org"}
    (workspace.subscribers_dir / "bob.toml").unlink()
    run(workspace, store, now=NOW, dry_run=True, ingest=False)
    assert set(store.rank_models()) == {"ada@example.org"}


def test_research_prose_is_not_a_reason_but_topics_with_common_words_are() -> None:
    from digest.rank.explain import readable_term

    for prose in ("secondly", "pertain", "uniquely", "continue", "lacks", "prove", "thus"):
        assert not readable_term(prose), prose
    for topic in ("large language models", "bounded operators", "water", "speedup"):
        assert readable_term(topic), topic


def test_ranking_parameters_are_passed_in_and_a_changed_one_retrains_the_model() -> None:
    import dataclasses

    from digest.profiles import Interests
    from digest.rank.model import Inputs
    from digest.rank.params import DEFAULT

    inputs = Inputs(Interests(keywords=["graphs"]), ["2401.00001"], [], [])
    # The defaults leave stored models valid; an ablation's parameters make them retrain.
    assert inputs.fingerprint("v1") == inputs.fingerprint("v1", DEFAULT)
    changed = dataclasses.replace(DEFAULT, pseudo_weight=0.0)
    assert inputs.fingerprint("v1", changed) != inputs.fingerprint("v1")
    # Ranking-only parameters (boosts) do not touch the model.
    boosted = dataclasses.replace(DEFAULT, author_boost=3.0)
    assert inputs.fingerprint("v1", boosted) == inputs.fingerprint("v1")


@pytest.mark.parametrize("n", [1, 2, 3, 7, 2000])
def test_calibration_quantiles_are_numpys_to_the_bit(n: int) -> None:
    rng = np.random.default_rng(n)
    rows = rng.standard_normal((64, n)).astype(np.float32)
    rows[::4] = np.round(rows[::4], 1)  # ties
    grid = np.linspace(0.0, 1.0, QUANTILES)
    expected = np.quantile(rows, grid, axis=1).T.astype(np.float32)
    assert np.array_equal(_quantiles(rows, grid), expected)


@pytest.mark.parametrize("n", [150, 799, 800, 5000, 20000])
def test_the_pseudo_relevance_top_columns_are_those_a_full_selection_finds(n: int) -> None:
    rng = np.random.default_rng(n)
    scores = rng.standard_normal((40, n)).astype(np.float32)
    scores[1::5] = np.round(scores[1::5], 1)  # ties, at the boundary too
    scores[2, : n // 2] = -np.inf  # a reader's own papers, left out
    scores[3, ::3] = -np.inf
    scores[4] = np.linspace(-1, 1, n)[::-1]  # the best in the columns the sample skips
    for k in (1, 100):
        found = top_columns(scores, k)
        assert found.shape == (40, k)
        assert (np.diff(found, axis=1) > 0).all()  # distinct columns, ascending
        kth = -np.sort(-scores, axis=1)[:, k - 1 : k]
        # Every column taken is at least the row's k-th largest, so it is a true top k
        # (which of several tied columns is taken may differ).
        assert (np.take_along_axis(scores, found, axis=1) >= kth).all()
    assert top_columns(scores, 0).shape == (40, 0)


@pytest.mark.parametrize("n", [300, 5000])
def test_a_nan_score_is_never_among_the_pseudo_relevance_top_columns(n: int) -> None:
    scores = np.random.default_rng(n).standard_normal((4, n)).astype(np.float32)
    scores[:, ::7] = np.nan  # in the sampled columns too
    for k in (1, 20):
        found = top_columns(scores, k)
        assert not np.isnan(np.take_along_axis(scores, found, axis=1)).any()


def test_a_reader_who_named_no_papers_is_never_told_of_papers_in_their_profile() -> None:
    from datetime import date

    from digest.rank.explain import Explainer
    from digest.rank.model import SubscriberModel

    corpus = [
        Paper(id=f"p{i}", title=f"topic {i} graphs", abstract="graphs", announced=date(2026, 1, 1))
        for i in range(5)
    ]
    vocab = Ranker(corpus).vocab
    model = SubscriberModel(
        np.ones(vocab.dimensions, np.float32), np.linspace(0, 1, QUANTILES), "f", vocab.version
    )
    row = vocab.dense_rows([corpus[0]])[0]
    nothing: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.intp), np.zeros(0, np.float32))
    # A pick with no keyword, author or category of the reader's and no readable term: the
    # last resort names what the reader did give.
    keywords_only = Explainer(vocab, model, [], [])
    assert keywords_only.signals(nothing, row, [], [], []) == [
        "close to the interests in your profile"
    ]
    # With example papers (far from this pick) it may say so.
    far = Paper(id="far", title="orbital mechanics", abstract="orbits", announced=date(2026, 1, 1))
    with_papers = Explainer(vocab, model, [far], [])
    assert with_papers.signals(nothing, np.zeros_like(row), [], [], []) == [
        "similar to the papers in your profile"
    ]
