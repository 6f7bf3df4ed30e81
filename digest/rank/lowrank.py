"""The truncated SVD of the corpus matrix, and sparse products on both cores.

A randomized range finder with power iterations (Halko, Martinsson and Tropp 2011), written
out rather than taken from `TruncatedSVD` for three reasons measured at 20,000 papers: only the
left side (one vector per paper) is needed, since the right singular vectors follow from it as
X^T U / s, so the 100,000-term side is never orthonormalised (scikit-learn's LU of a
100,000 x 267 block each half-iteration took a third of its 13 s); the sparse products split
over threads (SciPy releases the GIL in them, so two cores take half the time); and everything
stays float32. 13 s became about 4.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import linalg, sparse

OVERSAMPLE = 10
POWER_ITERATIONS = 5
# Terms per block of the term-side products: 10,000 x 267 floats, about 11 MB.
BLOCK = 10_000


# Threads for the products; None: one per core (up to four). A forked planner sets 1: the
# planners already fill the cores.
THREADS: int | None = None


def threads() -> int:
    return THREADS or max(1, min(4, len(os.sched_getaffinity(0))))


def product(a: sparse.csr_matrix, b: np.ndarray) -> np.ndarray:
    """`a @ b` for a sparse `a` and dense `b`, in slices of rows over the cores. Each slice's
    result is about 8 MB before it is copied into place, so the product costs its output and
    little more (two halves would each hold half the output again: 100 MB for the basis)."""
    n = threads()
    if n == 1 or a.shape[0] < 2 * n or a.nnz * b.shape[1] < 10_000_000:
        return np.asarray(a @ b)
    out = np.empty((a.shape[0], b.shape[1]), np.result_type(a.dtype, b.dtype))
    step = max(1, (8 << 20) // max(1, out.itemsize * b.shape[1]))

    def part(start: int) -> None:
        out[start : start + step] = a[start : start + step] @ b

    with ThreadPoolExecutor(n) as pool:
        list(pool.map(part, range(0, a.shape[0], step)))
    return out


def left_singular(
    matrix: sparse.csr_matrix, k: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The `k` largest singular values of `matrix` (descending) and their left singular
    vectors (one row per row of `matrix`), approximately, in float32.

    Every product with the term side goes a block of terms at a time, so nothing
    term-sized (100,000 x 267) is ever held: X X^T Y is the sum over blocks b of
    X_b (X_b^T Y), and the random start X G draws G a block at a time.
    """
    rows, cols = matrix.shape
    width = min(k + OVERSAMPLE, rows, cols)
    xt = matrix.T.tocsr().astype(np.float32, copy=False)
    blocks = [slice(a, min(a + BLOCK, cols)) for a in range(0, cols, BLOCK)]

    def start(i: int, b: slice) -> np.ndarray:
        g = np.random.default_rng([seed, i]).standard_normal((b.stop - b.start, width), np.float32)
        return np.asarray(xt[b].T @ g)

    def power(i: int, b: slice) -> np.ndarray:
        return np.asarray(xt[b].T @ (xt[b] @ y))

    y = _summed(start, blocks)
    for _ in range(POWER_ITERATIONS):
        # Normalised each round (LU: cheaper than QR, and enough to keep the smaller
        # directions from vanishing under the largest in float32).
        y, _ = linalg.lu(y, permute_l=True, check_finite=False)
        y = _summed(power, blocks)
    q, _ = linalg.qr(y, mode="economic", check_finite=False)
    # B = Q^T X; its left singular vectors come from the small Gram matrix B B^T, summed in
    # float64 (the spectrum is squared in it) a block of terms at a time.
    qt = q.astype(np.float32, copy=False)

    def gram(i: int, b: slice) -> np.ndarray:
        part = (xt[b] @ qt).astype(np.float64)
        return np.asarray(part.T @ part)

    values, vectors = np.linalg.eigh(_summed(gram, blocks))
    order = np.argsort(values)[::-1][:k]
    singular = np.sqrt(np.maximum(values[order], 0.0))
    left = (q.astype(np.float64) @ vectors[:, order]).astype(np.float32)
    return singular.astype(np.float32), left


def _summed(f: Callable[[int, slice], np.ndarray], blocks: list[slice]) -> np.ndarray:
    """The sum of `f` over the blocks, the blocks shared out over the cores.

    A round of blocks at a time, added in block order: the same float sum on every run (a
    total shared by threads in whatever order they finish would round differently each time,
    and a refit of the same corpus would rank differently), and one running total rather
    than one per thread (each is paper-sized, 20 MB at 20,000 papers).
    """
    n = threads()
    total: np.ndarray | None = None
    # The first block in the first round too: alone before the others, it left a core idle
    # for a tenth of every product.
    with ThreadPoolExecutor(n) as pool:
        for start in range(0, len(blocks), n):
            for part in pool.map(
                lambda i: f(i, blocks[i]), range(start, min(start + n, len(blocks)))
            ):
                if total is None:
                    total = part
                else:
                    np.add(total, part, out=total)
    assert total is not None  # a matrix has at least one block of terms
    return total
