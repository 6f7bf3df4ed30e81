"""The models' sparse part (digest.rank.model): the exact terms a narrow interest's examples
share, and the rated papers' own terms once there is feedback. On real Hugging Face papers,
where nearly everything is machine learning and a theme is told apart by its words."""

from __future__ import annotations

import functools
import gzip
import json
from dataclasses import dataclass, field

import numpy as np
import pytest

from digest.profiles import Interests, Profile
from digest.rank import Ranker
from digest.rank.model import SubscriberModel
from digest.rank.ranker import Ratings
from tests.conftest import SHARED

pytestmark = pytest.mark.shared_data

HF = SHARED / "hf_daily_papers" / "hf_daily_papers_2024-05-27_to_2026-08-21_flat.jsonl.gz"


@dataclass
class P:
    id: str
    title: str
    abstract: str
    authors: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    upvotes: int | None = None


@functools.lru_cache(maxsize=1)
def papers() -> list[P]:
    out: dict[str, P] = {}
    with gzip.open(HF, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["id"] not in out and r.get("summary"):
                out[r["id"]] = P(
                    r["id"], " ".join(r["title"].split()), " ".join(r["summary"].split())
                )
            if len(out) == 2500:
                break
    return list(out.values())


@functools.lru_cache(maxsize=1)
def ranker() -> Ranker:
    return Ranker(papers())


def about(phrase: str, n: int = 8) -> list[P]:
    found = [p for p in papers() if phrase in f"{p.title} {p.abstract}".lower()]
    assert len(found) >= n, phrase
    return found[:n]


def model_of(examples: list[P], fb: Ratings | None = None) -> SubscriberModel:
    profile = Profile(email="r@example.org", interests=Interests(papers=[p.id for p in examples]))
    return ranker().model(profile, examples, fb)[0]


def term_weight(model: SubscriberModel, term: str) -> float:
    column = ranker().vocab.terms_.index[term]
    return float(model.term_weights(np.array([column]))[0])


def test_a_narrow_interest_weighs_the_exact_terms_its_examples_share() -> None:
    model = model_of(about("speculative decoding"))
    assert len(model.terms) > 0
    assert term_weight(model, "speculative decoding") > 0
    # The shared terms are the examples' own words, not the field's.
    assert term_weight(model, "galaxy") == 0


def test_examples_of_many_subjects_share_no_terms_and_the_model_has_no_sparse_part() -> None:
    spread = papers()[::300][:8]
    assert len(model_of(spread).terms) == 0


def test_feedback_weighs_the_rated_papers_terms_a_dislike_against() -> None:
    examples = papers()[::300][:8]  # no shared terms: only feedback makes a sparse part
    liked, disliked = about("speculative decoding", 3), about("mixture-of-experts", 3)
    model = model_of(examples, Ratings(liked=liked, disliked=disliked))
    assert term_weight(model, "speculative decoding") > 0
    assert term_weight(model, "mixture-of-experts") < 0


def test_liked_papers_count_toward_the_shared_terms_exactly_as_examples_do() -> None:
    spread, narrow = papers()[::300][:8], about("speculative decoding")
    disliked = about("mixture-of-experts", 1)
    as_likes = model_of(spread, Ratings(liked=narrow, disliked=disliked))
    as_examples = model_of(spread + narrow, Ratings(disliked=disliked))
    assert term_weight(as_likes, "speculative decoding") > 0
    assert np.array_equal(as_likes.terms, as_examples.terms)
    assert np.allclose(as_likes.weights, as_examples.weights, rtol=1e-5)


def test_a_model_with_terms_survives_storage_and_a_blob_without_them_still_reads() -> None:
    model = model_of(about("speculative decoding"))
    back = SubscriberModel.from_bytes(model.to_bytes(), model.fingerprint, model.vocabulary)
    assert np.array_equal(back.terms, model.terms) and np.array_equal(back.weights, model.weights)
    assert np.array_equal(back.direction, model.direction)
    plain = SubscriberModel(model.direction, model.quantiles, "f", "v")
    again = SubscriberModel.from_bytes(plain.to_bytes(), "f", "v")
    assert len(again.terms) == 0 and np.array_equal(again.quantiles, model.quantiles)
    with pytest.raises(ValueError):
        SubscriberModel.from_bytes(model.to_bytes()[:-3], "f", "v")


def test_the_batched_scores_and_a_single_readers_ranking_agree_with_a_sparse_part() -> None:
    examples = about("speculative decoding")
    model = model_of(examples)
    profile = Profile(email="r@example.org", interests=Interests(papers=[p.id for p in examples]))
    listing = papers()[-400:]
    r = ranker()
    raw = r.score_all([model], listing)[0]
    alone = r.rank(profile, listing, examples, model=model, complete=True)
    batched = r.rank(profile, listing, examples, model=model, raw=raw, complete=True)
    assert [p.paper.id for p in alone] == [p.paper.id for p in batched]
    # The sparse part moves the order: the dense direction alone ranks otherwise.
    dense_only = r.vocab.dense_rows(listing) @ model.direction
    assert not np.allclose(raw, dense_only)


def test_a_narrow_interests_picks_say_what_they_share_with_the_examples() -> None:
    examples = about("speculative decoding")
    profile = Profile(email="r@example.org", interests=Interests(papers=[p.id for p in examples]))
    listing = [p for p in papers()[-1500:] if p not in examples]
    picks = ranker().rank(profile, listing, examples, model=model_of(examples))
    assert picks and "speculative decoding" in picks[0].reason.lower()


def test_a_stored_model_cut_short_or_corrupt_is_refused_not_read_wrong() -> None:
    model = model_of(about("speculative decoding"))
    blob = model.to_bytes()
    head = 5 + 4 + 4 * (len(model.direction) + len(model.quantiles))
    for cut in (blob[:head], blob[: head + 4], blob[:-1], b"", b"PK\x03\x04 not a zip"):
        with pytest.raises(ValueError):
            SubscriberModel.from_bytes(cut, "f", "v")


def test_a_large_library_of_one_broad_area_is_not_taken_for_a_narrow_theme() -> None:
    # A term in 3 of 100 papers is no theme: shared means a share of the examples too.
    broad = papers()[:100]
    assert len(model_of(broad).terms) == 0
    narrow = about("speculative decoding")
    assert len(model_of(narrow).terms) > 0


def test_examples_and_keywords_of_only_stop_words_leave_the_model_working() -> None:
    empty = P("2699.00001", "The and of", "It is what it is, and so on.")
    examples = [*about("speculative decoding", 4), empty]
    profile = Profile(
        email="r@example.org",
        interests=Interests(papers=[p.id for p in examples], keywords=["the of and"]),
    )
    liked = about("speculative decoding", 6)[4:]
    model, _ = ranker().model(profile, examples, Ratings(liked=liked))
    assert np.all(np.isfinite(model.weights)) and np.all(np.isfinite(model.quantiles))
    assert term_weight(model, "speculative decoding") > 0


def test_scores_of_models_with_terms_cannot_be_asked_for_without_the_papers_terms() -> None:
    from digest.rank.model import score_all

    model = model_of(about("speculative decoding"))
    with pytest.raises(ValueError):
        score_all([model], ranker().vocab.dense_rows(papers()[:5]))


def test_a_part_made_of_terms_hardly_any_background_paper_holds_stays_bounded() -> None:
    # Four examples share a made-up word two corpus papers hold: its spread over the
    # background is near zero, and unfloored a paper with the word scored 330 spreads (the
    # next best 3.7); floored, it still leads, at 181.
    word = "zyxqvortification"
    twins = [
        P(f"2699.1000{i}", f"{word} of {p.title}", f"{p.abstract} {word} {word}")
        for i, p in enumerate(papers()[1000:1004])
    ]
    holders = [
        P(f"2699.3000{i}", f"On {p.title}", f"{p.abstract} {word}")
        for i, p in enumerate(papers()[1100:1102])
    ]
    r = Ranker([*papers()[:2500], *holders])
    profile = Profile(email="r@example.org", interests=Interests(papers=[t.id for t in twins]))
    model, _ = r.model(profile, twins)
    other = P("2699.20000", f"A study of {word}", f"We revisit {word} in depth.")
    raw = r.score_all([model], [other, *papers()[-200:]])[0]
    assert raw[0] == raw.max() and raw[0] < 250
