"""The vocabulary tree of the visual words: a two-level k-means codebook, and word assignment.

A vocabulary tree of depth 2 (Nistér & Stewénius 2006): ``n_top`` coarse centroids, each with
``n_top`` fine centroids learned from the descriptors of its cell, so that ``n_top**2`` words
cost two small nearest-neighbour searches per descriptor instead of one large one, and train
in seconds. Both levels are k-means of faiss. :class:`~lfhelpers.similarity.search.words.
VisualWords` keeps the centroids and builds its inverted file on the word ids given here.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np

from lfhelpers.images import thread_map

#: faiss calls with less work than this (distance computations times dimensions) run on one
#: thread: a same-item query makes a hundred small searches to assign its words and one per
#: verified candidate to match descriptors, and starting OpenMP's threads for each costs more
#: than it saves (notebook 06's matcher evaluation, 233 queries on 2 cores: 22 s on faiss'
#: default threads, 9 s on one). The results are the same (each row is searched by one thread).
SINGLE_THREAD_WORK = 2_000_000_000


@contextlib.contextmanager
def faiss_threads(work: float) -> Iterator[None]:
    """faiss on one thread while the block runs when ``work`` is below
    :data:`SINGLE_THREAD_WORK`, else on its default threads."""
    import faiss

    if work >= SINGLE_THREAD_WORK:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def nearest_centroids(x: np.ndarray, centroids: np.ndarray, k: int) -> np.ndarray:
    """Rows of ``centroids`` nearest to each row of ``x`` (L2, faiss), shape ``(len(x), k)``."""
    import faiss

    with faiss_threads(float(len(x)) * len(centroids) * x.shape[1]):
        return faiss.knn(np.ascontiguousarray(x, np.float32),
                         np.ascontiguousarray(centroids, np.float32), k)[1]


def kmeans(x: np.ndarray, k: int, seed: int, niter: int) -> np.ndarray:
    """k centroids of the rows of x (x itself when it has at most k rows)."""
    import faiss

    if len(x) <= k:
        return np.ascontiguousarray(x, np.float32)
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, max_points_per_centroid=256,
                      verbose=False)
    with faiss_threads(float(min(len(x), 256 * k)) * k * x.shape[1] * niter):
        km.train(np.ascontiguousarray(x, np.float32))
    return np.asarray(km.centroids, np.float32)


def train_tree(x: np.ndarray, n_words: int, seed: int, niter: int
               ) -> tuple[np.ndarray, np.ndarray, int]:
    """Learn the two levels of centroids from descriptors ``x``.

    Parameters
    ----------
    x : ndarray of float32, shape (n, d)
        RootSIFT descriptors (a sample).
    n_words : int
        Words wanted; rounded up to a square, ``n_top**2``.
    seed : int
        Seed of the coarse k-means (cell ``c`` uses ``seed + c + 1``).
    niter : int
        k-means iterations per level.

    Returns
    -------
    coarse : ndarray of float32, shape (n_coarse, d)
    fine : ndarray of float32, shape (n_coarse, n_top, d)
        Fine centroids per coarse cell; unused slots are far away.
    n_top : int
    """
    n_top = max(2, math.isqrt(int(n_words) - 1) + 1)
    coarse = kmeans(x, min(n_top, len(x)), seed, niter)
    cell = nearest_centroids(x, coarse, 1)[:, 0]
    fine = np.full((len(coarse), n_top, x.shape[1]), 1e3, np.float32)  # far = unused

    def cell_words(c: int) -> np.ndarray:
        members = x[cell == c]
        return kmeans(members if len(members) else coarse[c:c + 1], n_top, seed + c + 1, niter)

    # each cell's k-means is small (one faiss thread) and seeded on its own: one per core
    for c, cents in enumerate(thread_map(cell_words, range(len(coarse)))):
        fine[c, :len(cents)] = cents
    return coarse, fine, n_top


def assign_words(x: np.ndarray, coarse: np.ndarray, fine: np.ndarray, n_top: int,
                 k: int) -> np.ndarray:
    """The ``k`` nearest words of each descriptor: its coarse cell, then fine words in it.

    Returns
    -------
    ndarray of int64, shape (len(x), k)
        Word ids ``cell * n_top + fine``.
    """
    out = np.zeros((len(x), k), np.int64)
    if not len(x):
        return out
    cell = nearest_centroids(x, coarse, 1)[:, 0]
    for c in np.unique(cell):
        rows = np.nonzero(cell == c)[0]
        out[rows] = c * n_top + nearest_centroids(x[rows], fine[c], k)
    return out
