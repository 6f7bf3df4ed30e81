"""A model's sparse part: a few exact terms, weighed beside the dense direction.

The projection (digest.rank.features) is what ranks a research area well, but it blurs the
words that tell a narrow theme from its field: in a listing that is all machine learning, "kv
cache" and "speculative decoding" sit in the same few directions as everything else. Two sets
of exact terms go beside it, in the term space itself:
- the terms most of the examples (and liked papers) share, when they share many. How much of
  the examples' weight sits in terms three or more of them hold says how narrow the interest
  is: a narrow theme's examples put 0.03-0.19 of it there (mean 0.08 on EVAL.md's protocol
  2), a research area's 0.005-0.11 (mean 0.03, protocol 1), and the shared terms count in
  proportion between 0.04 and 0.16. On protocol 2 they lifted nDCG@10 from 0.583 to 0.603;
  on protocol 1, where they cost ranking when given to every reader, it stayed within the
  noise (0.380 -> 0.377);
- once there is feedback, a Rocchio vector in the term space: the examples, keywords and liked
  papers in, the disliked out, the 400 largest weights kept. Ten verdicts a day are exact words
  the projection cannot hold apart (protocol 2: 0.607 -> 0.636 with feedback; protocol 1:
  0.400 -> 0.399).
Each set is scaled by its spread over the background sample, like the dense direction, so the
parts add in one unit (bench/README.md has the measurements).

Everything here is in a reader's own columns (the terms of their papers), not the
vocabulary's 100,000: a run trains tens of thousands of these.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import sparse

from digest.profiles import Interests
from digest.rank.features import Vocabulary
from digest.rank.params import RankParams

# The term rows (sparse, unit length) of a reader's example, liked and disliked papers.
TermRows = tuple[sparse.csr_matrix, sparse.csr_matrix, sparse.csr_matrix]

# A term is shared when at least this many examples hold it, and this share of them: a reader
# with a library of 100 papers of a broad area would otherwise look as narrow as a theme (any
# term in 3 of 100 papers), and with 8-10 examples (the protocols) it is 3 either way.
SHARED_BY = 3
SHARED_SHARE = 0.3
# The share of the examples' weight in shared terms at which the shared terms start to count,
# and at which they count fully (linear between).
SHARED_FROM, SHARED_FULL = 0.04, 0.16
# Their weight then, against the dense direction's 1.
SHARED_WEIGHT = 1.0
# Each part's spread over the background is taken as at least this share of the part's own
# length. Measured on the protocols, a part's spread is 0.004-0.015 of its length (1st to 90th
# percentile); a part made of terms one or two background papers hold would otherwise be
# scaled by a spread near zero, and one paper with its rarest term outranks everything (and
# a part no background paper holds would be dropped).
SPREAD_FLOOR = 0.005
# Terms kept in a model's sparse part, the largest weights: a model is stored and held per
# reader (100,000 of them in a run): 3.2 KB at most.
MAX_MODEL_TERMS = 400


def wanted(examples: int, rated: int) -> bool:
    """Whether a reader with this many example and rated papers gets a sparse part at all: the
    caller gathers term rows only for those."""
    return any(_parts(examples, rated))


def _parts(examples: int, rated: int) -> tuple[bool, bool]:
    """Which parts a reader can have: shared terms (enough examples), rated terms. The rated
    terms only beside example papers: a keywords-only reader's rated terms cost their
    feedback 0.378 -> 0.351 nDCG@10 on protocol 1 (0.366 with the keywords' own terms among the
    positives), where beside examples they gained."""
    return examples >= SHARED_BY, examples > 0 and rated > 0


def sparse_part(
    vocab: Vocabulary,
    interests: Interests,
    rows: TermRows,
    sample: sparse.csc_matrix,
    params: RankParams,
) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray] | None:
    """The sparse part ((vocabulary columns, weights)) and its scores of the background
    ``sample`` (its term rows, by column), or None when the reader has none."""
    examples, liked, disliked = (_nonempty(m) for m in rows)
    shared_on, rated_on = _parts(examples.shape[0], liked.shape[0] + disliked.shape[0])
    if not (shared_on or rated_on):
        return None
    keywords = [k for k in interests.keywords if k.strip()] if rated_on else []
    given = _nonempty(vocab.transform(keywords)) if keywords else None
    blocks = [m for m in (examples, given, liked, disliked) if m is not None]
    columns = np.unique(np.concatenate([m.indices for m in blocks]))
    if not len(columns):
        return None
    width = len(columns)

    def summed(m: sparse.csr_matrix) -> np.ndarray:
        return np.bincount(np.searchsorted(columns, m.indices), m.data, minlength=width)

    block = sample[:, columns]
    total = np.zeros(width, np.float64)
    if shared_on:
        # A liked paper is as much a paper of the interest as an example: the terms they share
        # are counted over both (protocol 2 with a first-week corpus: 0.643 -> 0.655 with
        # feedback; its full history 0.636 -> 0.642; the others within the noise).
        pool = sparse.vstack([examples, liked]).tocsr() if liked.shape[0] else examples
        mean = summed(pool) / pool.shape[0]
        # A term is in a row once (the rows are summed), so its count of rows is its papers.
        held = np.bincount(np.searchsorted(columns, pool.indices), minlength=width)
        enough = max(SHARED_BY, math.ceil(SHARED_SHARE * pool.shape[0]))
        shared = np.where(held >= enough, mean, 0.0)
        narrow = float(shared @ shared) / max(float(mean @ mean), 1e-12)
        ramp = (narrow - SHARED_FROM) / (SHARED_FULL - SHARED_FROM)
        weight = SHARED_WEIGHT * min(1.0, max(0.0, ramp))
        if weight > 0:
            _add_scaled(total, shared, block, weight)
    if rated_on:
        positives = [m for m in (examples, given, liked) if m is not None]
        count = sum(m.shape[0] for m in positives)
        rocchio = sum(summed(m) for m in positives) / count
        if disliked.shape[0]:
            rocchio = rocchio - params.term_dislike_weight * summed(disliked) / disliked.shape[0]
        _add_scaled(total, _largest(np.asarray(rocchio)), block, params.term_feedback_weight)
    found = np.flatnonzero(total)
    if not len(found):
        return None
    if len(found) > MAX_MODEL_TERMS:
        found = np.sort(
            found[np.argpartition(-np.abs(total[found]), MAX_MODEL_TERMS)[:MAX_MODEL_TERMS]]
        )
    weights = total[found].astype(np.float32)
    scores = np.asarray(block[:, found] @ weights, np.float32)
    return (columns[found].astype(np.int32), weights), scores


def _largest(weights: np.ndarray) -> np.ndarray:
    """Only the `MAX_MODEL_TERMS` largest weights (by size) kept."""
    nonzero = np.flatnonzero(weights)
    if len(nonzero) <= MAX_MODEL_TERMS:
        return weights
    keep = nonzero[np.argpartition(-np.abs(weights[nonzero]), MAX_MODEL_TERMS)[:MAX_MODEL_TERMS]]
    out = np.zeros_like(weights)
    out[keep] = weights[keep]
    return out


def _add_scaled(
    total: np.ndarray, part: np.ndarray, block: sparse.csc_matrix, weight: float = 1.0
) -> None:
    """Add ``weight`` times ``part`` to ``total``, in units of its spread over the background
    (floored: `SPREAD_FLOOR`)."""
    length = float(np.linalg.norm(part))
    if length > 0:
        spread = max(float(np.std(block @ part)), SPREAD_FLOOR * length)
        total += weight * part / spread


def _nonempty(m: sparse.csr_matrix) -> sparse.csr_matrix:
    """The rows of ``m`` that hold any term: a paper or keyword of only stop words would count
    among the positives and dilute them."""
    keep = np.flatnonzero(np.diff(m.indptr))
    return m if len(keep) == m.shape[0] else m[keep]
