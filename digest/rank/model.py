"""One subscriber's model: an interest direction in the vocabulary's dense space.

Training is closed-form and takes a few milliseconds, which is what lets every profile edit and
every click of feedback retrain at once:
1. positives are the example papers, the liked papers and one pseudo-document per keyword;
   their mean is the first direction;
2. disliked papers pull the direction away from themselves (Rocchio's negative term);
3. the corpus papers closest to that direction are folded back in, down-weighted
   (pseudo-relevance feedback): ten examples cannot show every way a field is written about;
4. a few exact terms beside it, in the sparse term space (digest.rank.sparse_part): the terms
   a narrow interest's examples share, and once there is feedback the rated papers' own terms.
   The dense direction and each set of terms are scaled by their spread over background papers,
   so they add in one unit.
The score of a paper is the dense direction's product with its projected row plus the sparse
part's with its term row. It is calibrated against the corpus: the
model keeps the quantiles of its own scores over background papers, so "0.95" means "ranks
above 95% of recent papers", and a profile's `min_score` means the same for every subscriber.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import sparse

from digest.profiles import Interests
from digest.rank.features import Vocabulary
from digest.rank.params import DEFAULT, RankParams
from digest.rank.sparse_part import SPREAD_FLOOR, TermRows, sparse_part

QUANTILES = 101
_RAW = b"\x00dsm1"  # never the start of an .npz (a zip file starts with "PK")
_RAW_TERMS = b"\x00dsm2"  # the same, then the sparse part
_NO_TERMS = np.zeros(0, np.int32)
_NO_WEIGHTS = np.zeros(0, np.float32)
# Bump when training changes, so stored models are retrained.
MODEL_VERSION = "rocchio-prf-terms-4"


@dataclass
class Inputs:
    """Everything a model is trained from, with the paper ids that identify it."""

    interests: Interests
    example_ids: Sequence[str]
    liked_ids: Sequence[str]
    disliked_ids: Sequence[str]

    def fingerprint(self, vocabulary_version: str, params: RankParams = DEFAULT) -> str:
        """Changes exactly when the model would: profile, feedback, vocabulary or parameters."""
        payload = json.dumps(
            [
                MODEL_VERSION,
                vocabulary_version,
                # Only parameters other than the defaults: stored models stay valid.
                *([params.key()] if params.key() != DEFAULT.key() else []),
                self.interests.keywords,
                sorted(self.example_ids),
                sorted(self.liked_ids),
                sorted(self.disliked_ids),
            ]
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:24]


@dataclass
class SubscriberModel:
    direction: np.ndarray  # float32, the vocabulary's dense dimensions; zero when untrained
    quantiles: np.ndarray  # float32, QUANTILES background scores, ascending
    fingerprint: str
    vocabulary: str
    # The sparse part: vocabulary term columns (int32, ascending) and their weights (float32).
    terms: np.ndarray = field(default_factory=lambda: _NO_TERMS)
    weights: np.ndarray = field(default_factory=lambda: _NO_WEIGHTS)

    def term_weights(self, columns: np.ndarray) -> np.ndarray:
        """The sparse part's weight of each of these term columns (0 for the others)."""
        if not len(self.terms):
            return np.zeros(len(columns), np.float32)
        at = np.minimum(np.searchsorted(self.terms, columns), len(self.terms) - 1)
        return np.where(self.terms[at] == columns, self.weights[at], 0.0).astype(np.float32)

    @property
    def trained(self) -> bool:
        return bool(np.any(self.direction))

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Raw cosines to the fraction of background papers scoring lower (0..1)."""
        if not self.trained:
            return np.zeros_like(raw, dtype=np.float64)
        return np.asarray(np.interp(raw, self.quantiles, _grid(len(self.quantiles))))

    def to_bytes(self) -> bytes:
        """A marker, the number of dimensions, both arrays as little-endian float32, then (if
        any) the number of sparse terms, their columns and weights: read back in microseconds
        (the .npz of earlier releases took 160 per model, and a run reads every reader's)."""
        body = self.direction.astype("<f4").tobytes() + self.quantiles.astype("<f4").tobytes()
        head = len(self.direction).to_bytes(4, "little")
        if not len(self.terms):
            return _RAW + head + body
        tail = (
            len(self.terms).to_bytes(4, "little")
            + self.terms.astype("<i4").tobytes()
            + self.weights.astype("<f4").tobytes()
        )
        return _RAW_TERMS + head + body + tail

    @classmethod
    def from_bytes(cls, blob: bytes, fingerprint: str, vocabulary: str) -> SubscriberModel:
        """The model `to_bytes` wrote; ValueError for anything else (cut short, corrupt)."""
        if blob.startswith((_RAW, _RAW_TERMS)):
            start = len(_RAW)
            k = int.from_bytes(blob[start : start + 4], "little")
            end = start + 4 + 4 * (k + QUANTILES)
            values = np.frombuffer(blob[start + 4 : end], "<f4").astype(np.float32)
            if len(values) != k + QUANTILES:
                raise ValueError("a stored model of the wrong size")
            model = cls(values[:k], values[k:], fingerprint, vocabulary)
            if blob.startswith(_RAW_TERMS):
                n = int.from_bytes(blob[end : end + 4], "little")
                rest = blob[end + 4 :]
                # `to_bytes` writes this marker only with terms: none means cut short.
                if len(blob) < end + 4 or n == 0 or len(rest) != 8 * n:
                    raise ValueError("a stored model of the wrong size")
                terms = np.frombuffer(rest[: 4 * n], "<i4").astype(np.int32)
                if terms[0] < 0 or np.any(np.diff(terms) <= 0):
                    raise ValueError("a stored model's terms out of order")
                model.terms = terms
                model.weights = np.frombuffer(rest[4 * n :], "<f4").astype(np.float32)
            elif len(blob) != end:
                raise ValueError("a stored model of the wrong size")
            return model
        try:
            with np.load(io.BytesIO(blob)) as data:  # stored by an earlier release
                return cls(data["direction"], data["quantiles"], fingerprint, vocabulary)
        except (OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise ValueError(f"an unreadable stored model: {exc}") from None


def train(
    vocab: Vocabulary,
    inputs: Inputs,
    examples: np.ndarray,
    liked: np.ndarray,
    disliked: np.ndarray,
    seed: int = 0,
    params: RankParams = DEFAULT,
    terms: TermRows | None = None,
) -> SubscriberModel:
    """Fit one model from the dense rows of the example, liked and disliked papers (and their
    term rows, for the sparse part)."""
    rows = [terms] if terms is not None else None
    return train_many(vocab, [(inputs, examples, liked, disliked)], seed, params, rows)[0]


# Readers per product in `train_many`: a (readers x corpus) block of scores, 20 MB at 20,000
# papers.
TRAIN_BATCH = 256


def train_many(
    vocab: Vocabulary,
    batch: Sequence[tuple[Inputs, np.ndarray, np.ndarray, np.ndarray]],
    seed: int = 0,
    params: RankParams = DEFAULT,
    term_rows: Sequence[TermRows] | None = None,
) -> list[SubscriberModel]:
    """`train` for many readers at once: (inputs, examples, liked, disliked) each, and each
    one's `TermRows` in ``term_rows`` (None: no sparse parts).

    The corpus is scored for all of them in one matrix product, and their background scores
    in another: one reader at a time, each was a pass over the whole projected corpus (2 ms
    of memory traffic a reader, most of a first run's training time).
    """
    first: list[np.ndarray | None] = [
        _first_direction(vocab, inputs, examples, liked, disliked, params)
        for inputs, examples, liked, disliked in batch
    ]
    sample = vocab.background(params.background, seed)
    # By column: each reader's sparse part reads only the columns of its own terms.
    sample_terms = vocab.background_terms(params.background, seed) if term_rows else None
    out: list[SubscriberModel] = []
    for start in range(0, len(batch), TRAIN_BATCH):
        part = range(start, min(start + TRAIN_BATCH, len(batch)))
        trained = [i for i in part if first[i] is not None]
        directions = np.zeros((len(trained), vocab.dimensions), np.float32)
        for row, i in enumerate(trained):
            directions[row] = first[i]
        directions = _pseudo_relevance(vocab, [batch[i][0] for i in trained], directions, params)
        norms = np.linalg.norm(directions, axis=1, keepdims=True)
        directions = (directions / np.where(norms > 0, norms, 1)).astype(np.float32)
        if sample.shape[0]:
            background = directions @ sample.T
        else:
            background = np.zeros((len(trained), 1), np.float32)
        parts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if term_rows is not None and sample_terms is not None and sample.shape[0] > 1:
            # Each part in units of its own spread over the background (see the module's
            # docstring); the dense direction too, so the parts add up in one scale.
            # Floored as the sparse parts' are (the directions are of unit length): without a
            # projection a direction's background can be all but empty.
            spread = np.maximum(background.std(axis=1, keepdims=True), SPREAD_FLOOR)
            directions /= spread
            background /= spread
            for row, i in enumerate(trained):
                found = sparse_part(
                    vocab, batch[i][0].interests, term_rows[i], sample_terms, params
                )
                if found is not None:
                    parts[i], scores = found
                    background[row] += scores
        quantiles = _quantiles(background, _grid(QUANTILES))
        at = {i: row for row, i in enumerate(trained)}
        for i in part:
            fingerprint = batch[i][0].fingerprint(vocab.version, params)
            if i in at:
                direction, q = directions[at[i]].copy(), quantiles[at[i]].copy()
            else:
                direction = np.zeros(vocab.dimensions, np.float32)
                q = np.zeros(QUANTILES, np.float32)
            model = SubscriberModel(direction, q, fingerprint, vocab.version)
            if i in parts:
                model.terms, model.weights = parts[i]
            out.append(model)
    return out


@lru_cache(maxsize=4)
def _grid(n: int) -> np.ndarray:
    """The quantiles' levels, 0 to 1: made once, not for every reader's calibration."""
    grid = np.linspace(0.0, 1.0, n)
    grid.flags.writeable = False
    return grid


def _quantiles(rows: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """`np.quantile(rows, grid, axis=1).T` as float32, to the bit, from one sort per row:
    numpy selects each of the 101 quantiles apart, which took a fifth of the models stage.
    Its default ("linear") interpolation, including how it rounds past the midpoint."""
    ordered = np.sort(rows, axis=1)
    n = ordered.shape[1]
    at = grid * (n - 1)
    below = np.floor(at).astype(np.intp)
    above = np.minimum(below + 1, n - 1)
    frac = at - below
    low, high = ordered[:, below], ordered[:, above]
    step = high - low
    out: np.ndarray = np.where(frac >= 0.5, high - step * (1 - frac), low + step * frac)
    return out.astype(np.float32)


def _first_direction(
    vocab: Vocabulary,
    inputs: Inputs,
    examples: np.ndarray,
    liked: np.ndarray,
    disliked: np.ndarray,
    params: RankParams,
) -> np.ndarray | None:
    """The mean of the positives, pulled away from the disliked papers; None without any."""
    keywords = [k for k in inputs.interests.keywords if k.strip()]
    parts = [examples, liked]
    if keywords:
        parts.append(vocab.embed_keywords(keywords))
    positives = np.vstack([p for p in parts if p.shape[0]] or [np.zeros((0, vocab.dimensions))])
    positives = positives[np.linalg.norm(positives, axis=1) > 0]
    if positives.shape[0] == 0:
        return None
    direction = positives.mean(axis=0)
    if disliked.shape[0]:
        direction = direction - params.dislike_weight * disliked.mean(axis=0)
    return np.asarray(direction, np.float32)


def _pseudo_relevance(
    vocab: Vocabulary, inputs: Sequence[Inputs], directions: np.ndarray, params: RankParams
) -> np.ndarray:
    """Each direction moved toward the mean of the corpus papers it scores highest, the
    reader's own examples and rated papers left out."""
    corpus = vocab.dense
    top_n, weight = params.pseudo_positives, params.pseudo_weight
    if not (corpus.shape[0] > top_n and weight) or not len(directions):
        return directions
    scores = directions @ corpus.T
    for row, given in enumerate(inputs):
        known = {*given.example_ids, *given.liked_ids, *given.disliked_ids}
        rows = [r for pid in known if (r := vocab.index.get(pid)) is not None]
        scores[row, rows] = -np.inf
    top = top_columns(scores, top_n)
    del scores
    pseudo = corpus[top].mean(axis=1)
    out: np.ndarray = (1 - weight) * directions + weight * pseudo
    return out


# One column in this many is sampled for a lower bound of each row's k-th largest score.
_SAMPLE_STRIDE = 8


def top_columns(scores: np.ndarray, k: int) -> np.ndarray:
    """The columns of each row's k largest values, in ascending column order.

    A selection over the whole corpus for each reader took a fifth of the models stage.
    The k-th largest of every eighth column is no larger than the row's own k-th largest, so
    the columns at or above it hold the whole top k; only those few hundred are selected from.
    Sorted, so that what is taken from them (a mean) is summed in one order, however found.
    """
    rows, n = scores.shape
    if k <= 0:
        return np.zeros((rows, 0), np.intp)
    if n // _SAMPLE_STRIDE < k:
        # Of the negated scores the k smallest: a NaN sorts last either way, so it is taken
        # only when a row has fewer than k other scores.
        return np.sort(np.argpartition(-scores, k - 1, axis=1)[:, :k], axis=1)
    floor = np.partition(scores[:, ::_SAMPLE_STRIDE], -k, axis=1)[:, -k]
    out = np.empty((rows, k), np.intp)
    for r in range(rows):
        row = scores[r]
        candidates = np.flatnonzero(row >= floor[r])
        if len(candidates) < k:  # a NaN among the sampled scores (NaN compares false)
            candidates = np.arange(n)
        best = np.argpartition(-row[candidates], k - 1)[:k]
        out[r] = np.sort(candidates[best])
    return out


# Readers per block of the sparse parts' product: its result is nearly dense (a 400-term part
# meets most papers), 2,048 x 1,500 papers is 12 MB, and a whole run at once was gigabytes.
SCORE_BLOCK = 2048


def score_all(
    models: Sequence[SubscriberModel],
    papers: np.ndarray,
    terms: sparse.csr_matrix | None = None,
) -> np.ndarray:
    """Raw scores of every paper for every subscriber: one (subscribers x papers) product for
    the dense directions, and blocks of one for the sparse parts (``terms``: the papers' term
    rows, required when a model has a sparse part)."""
    if not models:
        return np.zeros((0, papers.shape[0]), np.float32)
    directions = np.vstack([m.direction for m in models])
    out = np.asarray(directions @ papers.T)
    with_terms = [r for r, m in enumerate(models) if len(m.terms)]
    if not with_terms:
        return out
    if terms is None:
        raise ValueError("models with a sparse part need the papers' term rows")
    by_term = terms.T.tocsr()  # (terms x papers): each block's product is then row-major
    for start in range(0, len(with_terms), SCORE_BLOCK):
        rows = with_terms[start : start + SCORE_BLOCK]
        parts = sparse.csr_matrix(
            (
                np.concatenate([models[r].weights for r in rows]),
                np.concatenate([models[r].terms for r in rows]),
                np.cumsum([0] + [len(models[r].terms) for r in rows]),
            ),
            shape=(len(rows), terms.shape[1]),
        )
        out[rows] += (parts @ by_term).toarray()
    return out
