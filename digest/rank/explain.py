"""The one-line "why" of a pick, built from what actually raised it.

A reader sees it under every paper, so it says things a person would: the reader's own keywords
("your keyword: KV cache") apart from the terms the model found ("about: speculative decoding"),
then a followed author, a category, or the example or liked paper the pick is closest to. Terms
the model found are only shown when they read as words: never a LaTeX command name, a stop word,
a fragment of one or two letters, research-prose filler, or a case or plural variant of something
already said.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from digest.rank.features import RankPaper, Vocabulary
from digest.rank.match import phrase
from digest.rank.model import SubscriberModel
from digest.rank.terms import STOP_WORDS
from digest.text import fold, plain_latex

REASON_TERMS = 3
REASON_TITLE = 60
# "Because you liked X" is only said when X is at least this close to the pick (in the
# evaluation data, half of the top picks have an example paper at 0.35 or closer; a random
# listing paper's closest example sits at 0.085).
ANCHOR_SIMILARITY = 0.3
# In the sparse term space (small corpora) distinct papers share fewer terms, and the entropy
# weighting fades the shared ones, so cosines run far lower: two random papers meet at 0.002.
ANCHOR_SIMILARITY_SPARSE = 0.06
# Words of research prose that say nothing about a topic. A term holding one of them
# ("challenges introduced", "proposed method") is true of the paper but no reason to read it.
_FILLER_WORDS = """
    able achieve achieved achieves achieving address addressed addresses addressing approach
    approaches based better challenge challenges challenging compared comprehensive conduct
    conducted current demonstrate demonstrated demonstrates effective effectively efficient
    existing experimental extensive finally furthermore given help however important improve
    improved improves improving including introduce introduced introduces introducing
    leverage leverages leveraging like make makes novel outperform outperforms paper present
    presented presents previous propose proposed proposes provide provides recent recently
    remain remains result results several shown shows show significant significantly
    specific use used uses using various
    additionally allow allowed allows continue continued continues describe described
    describes discuss discussed discusses enable enabled enables especially establish
    established establishes examine examined examines explore explored explores firstly hence
    indicate indicated indicates investigate investigated investigates involve involved
    involves lack lacking lacks largely mainly moreover notably obtain obtained obtains
    particularly pertain pertaining pertains prove proved proves proving respectively reveal
    revealed reveals secondly suggest suggested suggests thereby therefore thirdly thus
    typically uniquely
"""
FILLER = frozenset(_FILLER_WORDS.split())


@lru_cache(maxsize=65536)
def variant_key(term: str) -> str:
    """Case, accent and plural variants share a key: "KV cache" and "kv caches", "LLMs" and
    "llm", "pulsar" and "pulsars". Remembered: a run asks for the same few thousand terms'
    keys for every reader."""
    words = []
    for w in fold(term).replace("-", " ").split():
        if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        words.append(w)
    return " ".join(words)


@lru_cache(maxsize=65536)
def readable_term(term: str) -> bool:
    """A term worth showing a reader: real words, none of them stop words or filler."""
    words = term.split()
    if not words or all(len(w) < 3 for w in words) or (len(words) == 1 and len(words[0]) < 3):
        return False
    return not any(w in STOP_WORDS or w in FILLER for w in words)


@lru_cache(maxsize=4096)
def readable_text(title: str, abstract: str) -> str:
    """Title and abstract as a reader sees them, folded: LaTeX commands are gone, so a term the
    vectorizer took from `\\textrm` or `\\downarrow` is not found in it."""
    return fold(f"{plain_latex(title)}. {plain_latex(abstract)}")


def distinct(terms: Sequence[str], said: Sequence[str] = ()) -> list[str]:
    """Terms in order without repeats: a variant of an earlier term (or of one in ``said``), or
    words an earlier, longer phrase already holds, are dropped; a phrase replaces the single
    words it contains."""
    if not terms:
        return []
    return list(_distinct(tuple(terms), tuple(said)))


@lru_cache(maxsize=65536)
def _distinct(terms: tuple[str, ...], said: tuple[str, ...]) -> tuple[str, ...]:
    """`distinct`, remembered: readers of one paper with like interests are shown the same
    few terms of it, and the comparisons cost a tenth of ranking. Plain loops: over lists of a
    few short strings, generators and list rebuilding cost more than the tests."""
    said_keys = [_padded(t) for t in said]
    kept: list[str] = []
    keys: list[str] = []
    for term in terms:
        padded = _padded(term)
        if _within(padded, said_keys) or _within(padded, keys):
            continue
        if _holds_any(padded, keys):
            pairs = [(t, k) for t, k in zip(kept, keys, strict=True) if k not in padded]
            kept, keys = [t for t, _ in pairs], [k for _, k in pairs]
        kept.append(term)
        keys.append(padded)
    return tuple(kept)


@lru_cache(maxsize=65536)
def _padded(term: str) -> str:
    """The term's variant key with a space on each side, so that "a key holds another" is a
    substring test on whole words."""
    return f" {variant_key(term)} "


# Loops rather than any() over a generator: for the few keys here, twice as fast.
def _within(key: str, keys: list[str]) -> bool:
    for k in keys:  # noqa: SIM110
        if key in k:
            return True
    return False


def _holds_any(key: str, keys: list[str]) -> bool:
    for k in keys:  # noqa: SIM110
        if k in key:
            return True
    return False


class Explainer:
    """Builds the reasons of one subscriber's picks."""

    def __init__(
        self,
        vocab: Vocabulary,
        model: SubscriberModel,
        examples: Sequence[RankPaper],
        liked: Sequence[RankPaper],
    ) -> None:
        self.vocab = vocab
        self.model = model
        self.anchors = [(p, "in your profile") for p in examples] + [
            (p, "you liked") for p in liked
        ]
        self.anchor_rows = vocab.dense_rows([p for p, _ in self.anchors])
        self.trained = model.trained  # asked for every pick

    def signals(
        self,
        terms: tuple[np.ndarray, np.ndarray],
        row: np.ndarray,
        hit_kw: list[str],
        hit_auth: list[str],
        hit_cat: list[str],
        contrib: np.ndarray | None = None,
    ) -> list[str]:
        """The reason's parts for one pick; ``contrib`` is what `contributions` worked out for
        its terms (None for a model that knows nothing)."""
        out = []
        keywords = distinct(hit_kw)
        if keywords:
            label = "your keyword" if len(keywords) == 1 else "your keywords"
            out.append(f"{label}: " + ", ".join(keywords[:REASON_TERMS]))
        if self.trained and contrib is not None:
            found = distinct(self.top_terms(terms, contrib), said=keywords)
            if found:
                out.append("about: " + ", ".join(found[:REASON_TERMS]))
        if hit_auth:
            out.append("author: " + ", ".join(dict.fromkeys(hit_auth)))
        if hit_cat:
            out.append("category: " + ", ".join(dict.fromkeys(hit_cat)))
        anchor = self.anchor(row)
        if anchor:
            out.append(anchor)
        if not out:
            # Papers are only "in your profile" when it names some (or the reader liked some):
            # a keyword-only reader was told of papers they never gave.
            out.append(
                "similar to the papers in your profile"
                if self.anchors
                else "close to the interests in your profile"
            )
        return out

    def anchor(self, row: np.ndarray) -> str:
        if not self.anchors:
            return ""
        sims = self.anchor_rows @ row
        best = int(np.argmax(sims))
        floor = ANCHOR_SIMILARITY if self.vocab.basis is not None else ANCHOR_SIMILARITY_SPARSE
        if sims[best] < floor:
            return ""
        paper, how = self.anchors[best]
        title = " ".join(plain_latex(paper.title).split())
        if len(title) > REASON_TITLE:
            title = title[: REASON_TITLE - 1].rstrip() + "…"
        return f"close to “{title}” ({how})"

    def contributions(
        self, terms: Sequence[tuple[np.ndarray, np.ndarray]]
    ) -> list[np.ndarray] | None:
        """How much each of these papers' readable terms pushed its score up."""
        if not terms or not self.trained:
            return None
        # Only the papers' own terms are weighed: a weight for every term of the vocabulary
        # would cost a (terms x dimensions) product per reader.
        basis = self.vocab.basis
        model = self.model
        direction = model.direction
        if basis is None:
            weights = np.asarray(direction)
            out = [vals * weights[cols] for cols, vals in terms]
        else:
            # A small product per pick: the picks share terms, but finding which (np.unique
            # over all of them) cost more than weighing the shared rows twice.
            out = [vals * (np.take(basis, cols, axis=0) @ direction) for cols, vals in terms]
        if len(model.terms):  # the exact terms the model weighs on their own
            out = [
                c + vals * model.term_weights(cols)
                for c, (cols, vals) in zip(out, terms, strict=True)
            ]
        return out

    def top_terms(self, terms: tuple[np.ndarray, np.ndarray], contrib: np.ndarray) -> list[str]:
        """The paper's readable terms (`shown_terms`) that pushed its score up the most, by
        their ``contrib``utions."""
        cols, _ = terms
        best = np.argsort(-contrib, kind="stable")[: 2 * REASON_TERMS]
        best = best[contrib[best] > 0]  # in descending order: the positive ones lead
        names = self.vocab.terms
        return [str(names[cols[j]]) for j in best.tolist()]


def shown_terms(vocab: Vocabulary, paper: RankPaper) -> tuple[np.ndarray, np.ndarray]:
    """The paper's terms a reason may name, with their weights in the paper's row.

    Only terms that stand in the paper as a reader sees it: the vectorizer also makes bigrams
    across sentence ends, and words out of LaTeX commands, which read as nonsense. The same for
    every reader, so a run works it out once per paper (digest.rank.listing).
    """
    text = readable_text(paper.title, paper.abstract)
    whole = whole_terms(text)
    x = vocab.sparse_rows([paper])
    keep = [
        j
        for j, c in enumerate(x.indices)
        if readable_term(term := str(vocab.terms[c])) and stands_in(term, text, whole)
    ]
    return x.indices[keep], x.data[keep]


_WORD = re.compile(r"[\w-]+")
_SIMPLE_TERM = re.compile(r"[\w-]+( [\w-]+)?")
_PAIR = re.compile(r"([\w-]+) (?=([\w-]+))")


def whole_terms(text: str) -> set[str]:
    """Every word of the folded text, and every two words one space apart: exactly the terms
    of one or two words that `phrase` finds whole in it, found in two passes over the text
    instead of one pattern per term."""
    out = set(_WORD.findall(text))
    # A word, one space, and the next word (looked ahead at, so it starts the next pair).
    out.update(f"{a} {b}" for a, b in _PAIR.findall(text))
    return out


@lru_cache(maxsize=65536)
def _folded_term(term: str) -> str:
    """A vocabulary term, folded: the same terms come up in paper after paper."""
    return fold(term)


def stands_in(term: str, text: str, whole: set[str]) -> bool:
    folded = _folded_term(term)
    if _SIMPLE_TERM.fullmatch(folded):
        return folded in whole
    return phrase(term).search(text) is not None
