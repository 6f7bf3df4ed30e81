"""One subscriber's model: an interest direction in the vocabulary's dense space.

Training is closed-form and takes a few milliseconds, which is what lets every profile edit and
every click of feedback retrain at once:
1. positives are the example papers, the liked papers and one pseudo-document per keyword;
   their mean is the first direction;
2. disliked papers pull the direction away from themselves (Rocchio's negative term);
3. the corpus papers closest to that direction are folded back in, down-weighted
   (pseudo-relevance feedback): ten examples cannot show every way a field is written about.
The score of a paper is its cosine with the direction. It is calibrated against the corpus: the
model keeps the quantiles of its own scores over background papers, so "0.95" means "ranks
above 95% of recent papers", and a profile's `min_score` means the same for every subscriber.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from digest.profiles import Interests
from digest.rank.features import Vocabulary
from digest.rank.params import DEFAULT, RankParams

QUANTILES = 101
# Bump when training changes, so stored models are retrained.
MODEL_VERSION = "rocchio-prf-2"


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

    @property
    def trained(self) -> bool:
        return bool(np.any(self.direction))

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Raw cosines to the fraction of background papers scoring lower (0..1)."""
        if not self.trained:
            return np.zeros_like(raw, dtype=np.float64)
        grid = np.linspace(0.0, 1.0, len(self.quantiles))
        return np.asarray(np.interp(raw, self.quantiles, grid))

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, direction=self.direction, quantiles=self.quantiles)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes, fingerprint: str, vocabulary: str) -> SubscriberModel:
        with np.load(io.BytesIO(blob)) as data:
            return cls(data["direction"], data["quantiles"], fingerprint, vocabulary)


def train(
    vocab: Vocabulary,
    inputs: Inputs,
    examples: np.ndarray,
    liked: np.ndarray,
    disliked: np.ndarray,
    seed: int = 0,
    params: RankParams = DEFAULT,
) -> SubscriberModel:
    """Fit one model from the dense rows of the example, liked and disliked papers."""
    fingerprint = inputs.fingerprint(vocab.version, params)
    keywords = [k for k in inputs.interests.keywords if k.strip()]
    parts = [examples, liked]
    if keywords:
        parts.append(vocab.embed_keywords(keywords))
    positives = np.vstack([p for p in parts if p.shape[0]] or [np.zeros((0, vocab.dimensions))])
    positives = positives[np.linalg.norm(positives, axis=1) > 0]
    k = vocab.dimensions
    if positives.shape[0] == 0:
        return SubscriberModel(
            np.zeros(k, np.float32), np.zeros(QUANTILES, np.float32), fingerprint, vocab.version
        )
    direction = positives.mean(axis=0)
    if disliked.shape[0]:
        direction = direction - params.dislike_weight * disliked.mean(axis=0)
    corpus = vocab.dense
    known = set(inputs.example_ids) | set(inputs.liked_ids) | set(inputs.disliked_ids)
    top_n, weight = params.pseudo_positives, params.pseudo_weight
    if corpus.shape[0] > top_n and weight:
        scores = corpus @ direction
        for pid in known:
            row = vocab.index.get(pid)
            if row is not None:
                scores[row] = -np.inf
        top = np.argpartition(-scores, top_n)[:top_n]
        direction = (1 - weight) * direction + weight * corpus[top].mean(axis=0)
    norm = float(np.linalg.norm(direction))
    direction = (direction / norm if norm else direction).astype(np.float32)
    sample = vocab.background(params.background, seed)
    background = sample @ direction if sample.shape[0] else np.zeros(1, np.float32)
    quantiles = np.quantile(background, np.linspace(0.0, 1.0, QUANTILES)).astype(np.float32)
    return SubscriberModel(direction, quantiles, fingerprint, vocab.version)


def score_all(models: Sequence[SubscriberModel], papers: np.ndarray) -> np.ndarray:
    """Raw scores of every paper for every subscriber: one (subscribers x papers) product."""
    if not models:
        return np.zeros((0, papers.shape[0]), np.float32)
    directions = np.vstack([m.direction for m in models])
    return np.asarray(directions @ papers.T)
