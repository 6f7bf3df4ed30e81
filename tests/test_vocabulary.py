"""The vocabulary's own counting, SVD and file, held against the real papers and the library
code they replace (scikit-learn's CountVectorizer, NumPy's exact SVD)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer

from digest.rank.features import Vocabulary, paper_text
from digest.rank.lowrank import left_singular
from digest.rank.terms import TOKEN, Terms
from digest.store.schema import Paper
from tests.profile_mix import corpus_rows

HOSTILE = [
    "",
    "the of and",  # stop words only
    r"Bounds for $\mathcal{O}(n^{2})$ via \emph{G\"unther}'s lemma and \textbf{BERT}-style models",
    "Détection d'anomalies: Gödel, naïve Bayes, Œuvre, straße, İstanbul, ǅ",
    "<b>HTML</b> &amp; markup <script>alert(1)</script> x-ray x-ray x-ray",
    "word " * 5000,  # one word, a huge count
    "a1 b2 3d 42 self-supervised self-supervised--learning -dash dash- ü",
]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [f"{r['title']}. {r['abstract']}" for r in corpus_rows(1500)] + HOSTILE


def vectorizer(min_df: int, max_df: float) -> CountVectorizer:
    return CountVectorizer(
        ngram_range=(1, 2),
        stop_words="english",
        min_df=min_df,
        max_df=max_df,
        token_pattern=TOKEN.pattern,
        dtype=np.float32,
    )


@pytest.mark.parametrize(("min_df", "max_df"), [(1, 1.0), (2, 0.5), (3, 0.05)])
def test_terms_and_counts_are_scikit_learns_on_real_and_hostile_texts(
    texts: list[str], min_df: int, max_df: float
) -> None:
    terms, counts = Terms.fit(texts, min_df=min_df, max_df=max_df, max_terms=10**9)
    cv = vectorizer(min_df, max_df)
    expected = cv.fit_transform(texts).tocsr()
    assert terms.terms == list(cv.get_feature_names_out())
    assert counts.dtype == np.float32
    assert (counts != expected).nnz == 0
    # New texts: terms outside the vocabulary dropped, the rest counted as the vectorizer does.
    fresh = [*HOSTILE, "Speculative decoding of large language models, speculative again"]
    assert (terms.transform(fresh) != cv.transform(fresh)).nnz == 0


def test_the_term_limit_keeps_the_most_frequent_with_ties_in_alphabetical_order(
    texts: list[str],
) -> None:
    everything, counts = Terms.fit(texts, min_df=2, max_df=0.5, max_terms=10**9)
    limited, _ = Terms.fit(texts, min_df=2, max_df=0.5, max_terms=3000)
    total = dict(zip(everything.terms, np.asarray(counts.sum(axis=0)).ravel(), strict=True))
    assert len(limited.terms) == 3000 and limited.terms == sorted(limited.terms)
    cut = min(total[t] for t in limited.terms)
    kept = set(limited.terms)
    assert all(total[t] <= cut for t in everything.terms if t not in kept)
    tied = sorted(t for t in everything.terms if total[t] == cut)
    assert [t for t in tied if t in kept] == tied[: len([t for t in tied if t in kept])]


def test_texts_without_a_single_term_fit_an_empty_vocabulary() -> None:
    terms, counts = Terms.fit(["the of", "", "x y z"], min_df=1, max_df=1.0, max_terms=10)
    assert terms.terms == [] and counts.shape == (3, 0)
    none, nothing = Terms.fit([], min_df=1, max_df=1.0, max_terms=10)
    assert none.terms == [] and nothing.shape == (0, 0)


def test_the_singular_values_and_vectors_match_an_exact_svd() -> None:
    rng = np.random.default_rng(3)
    # Low rank plus noise, sparse, with a spectrum that decays as real term matrices do.
    dense = (rng.standard_normal((400, 30)) * np.linspace(10, 1, 30)) @ rng.standard_normal(
        (30, 900)
    ) + 0.05 * rng.standard_normal((400, 900))
    dense[rng.random(dense.shape) < 0.6] = 0
    matrix = sparse.csr_matrix(dense.astype(np.float32))
    values, left = left_singular(matrix, 20)
    u, s, _ = np.linalg.svd(dense, full_matrices=False)
    # Randomized: exact at the top, close in the tail (as scikit-learn's TruncatedSVD is).
    np.testing.assert_allclose(values[:15], s[:15], rtol=1e-4)
    np.testing.assert_allclose(values, s[:20], rtol=5e-3)
    # The same directions (up to sign).
    agreement = np.abs(np.sum(left[:, :15] * u[:, :15], axis=0))
    assert agreement.min() > 0.99
    again_values, again_left = left_singular(matrix, 20)
    assert np.array_equal(values, again_values) and np.array_equal(left, again_left)


def _papers(n: int) -> list[Paper]:
    return [
        Paper(id=r["id"], title=r["title"], abstract=r["abstract"], announced=date(2026, 1, 1))
        for r in corpus_rows(n)
    ]


def test_a_saved_vocabulary_is_plain_arrays_and_loads_as_it_was_fitted(tmp_path: Path) -> None:
    papers = _papers(1200)
    fitted = Vocabulary(papers)
    assert fitted.basis is not None and fitted.dimensions == 256
    path = tmp_path / "models" / "vocabulary.npz"
    fitted.save(path)
    with np.load(path, allow_pickle=False) as f:  # nothing in it needs pickle
        assert {"terms", "ids", "data", "coefficients"} <= set(f.files)
    loaded = Vocabulary.load(path)
    assert loaded is not None
    assert loaded.version == fitted.version and loaded.terms == fitted.terms
    assert np.array_equal(loaded.dense, fitted.dense)
    assert np.array_equal(loaded.basis, fitted.basis)
    text = [paper_text(papers[0]), "diffusion models for protein design"]
    assert np.array_equal(loaded.embed_text(text), fitted.embed_text(text))
    # Fitting twice on the same corpus gives the same vocabulary, bit for bit.
    assert np.array_equal(Vocabulary(papers).dense, fitted.dense)


@pytest.mark.parametrize(
    "damage",
    [b"", b"not a zip file", b"PK\x03\x04 truncated", "pickle"],
)
def test_a_damaged_or_foreign_vocabulary_file_is_fitted_again(
    tmp_path: Path, damage: bytes | str
) -> None:
    path = tmp_path / "vocabulary.npz"
    if damage == "pickle":
        with path.open("wb") as f:
            np.savez(f, format=np.array([object()], dtype=object))
    else:
        assert isinstance(damage, bytes)
        path.write_bytes(damage)
    assert Vocabulary.load(path) is None


def test_a_corpus_of_few_distinct_texts_still_projects_new_papers_sensibly() -> None:
    """600 papers that are 150 texts four times over: fewer distinct texts than directions.
    The directions past the corpus's rank are rounding noise, and must not swamp the
    projection of a paper outside the corpus (they took 90% of its weight before)."""
    rows = corpus_rows(400)
    papers = [
        Paper(id=f"{r['id']}-{k}", title=r["title"], abstract=r["abstract"],
              announced=date(2026, 1, 1))
        for k in range(4) for r in rows[-150:]
    ]  # fmt: skip
    vocab = Vocabulary(papers)
    assert vocab.basis is not None
    new = vocab.transform([f"{r['title']}. {r['abstract']}" for r in rows[:200]]) @ vocab.basis
    weight = np.sum(new**2, axis=1)
    noise = np.sum(new[:, 150:] ** 2, axis=1)  # the corpus spans at most 149 real directions
    assert np.median(noise / np.maximum(weight, 1e-30)) < 0.01
