"""Exact nearest neighbours by blocks of matrix products (NumPy), the default backend."""

from __future__ import annotations

import numpy as np

from lfhelpers.errors import DataError


def check_k(k: int, most: int) -> None:
    """Raise :class:`DataError` unless ``1 <= k <= most``."""
    if not 1 <= k <= most:
        raise DataError(f"k={k} neighbours asked for, but only {most} candidates exist; "
                        f"use 1 <= k <= {most}.")


def exact_search(queries: np.ndarray, data: np.ndarray, k: int, metric: str = "cosine",
                 exclude: np.ndarray | None = None, block: int = 256,
                 data_sq: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``k`` nearest rows of ``data`` by blocks of queries (vectors already prepared).

    Parameters
    ----------
    queries : ndarray of shape (m, d)
    data : ndarray of shape (n, d)
        For ``"cosine"`` both must be L2-normalised already.
    k : int
        Neighbours per query (at most ``n``).
    metric : {"cosine", "euclidean"}
    exclude : ndarray of int, shape (m,), optional
        A data row to leave out for each query (``-1``: none).
    block : int
        Queries per matrix product (bounds the memory to ``block × n`` numbers).
    data_sq : ndarray of shape (n,), optional
        Squared norms of ``data`` (euclidean), when already known.

    Returns
    -------
    distances, indices : ndarray of shape (m, k)
        Increasing distance; ties broken by the lower row. Rows left with fewer than ``k``
        candidates are padded with ``inf`` and ``-1``.
    """
    m, n = len(queries), len(data)
    dist_out = np.full((m, k), np.inf, data.dtype)
    idx_out = np.full((m, k), -1, np.int64)
    if metric == "euclidean" and data_sq is None:
        data_sq = np.einsum("ij,ij->i", data, data)
    for start in range(0, m, block):
        q = queries[start:start + block]
        if metric == "cosine":
            dist = 1.0 - q @ data.T
        else:
            dist = np.einsum("ij,ij->i", q, q)[:, None] - 2.0 * (q @ data.T) + data_sq[None, :]
            np.maximum(dist, 0, out=dist)
        if exclude is not None:
            rows = np.arange(len(dist))
            cols = np.asarray(exclude[start:start + block])
            dist[rows[cols >= 0], cols[cols >= 0]] = np.inf
        if k < n:
            part = np.argpartition(dist, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(n), (len(dist), n))
        part_d = np.take_along_axis(dist, part, axis=1)
        order = np.lexsort((part, part_d), axis=1)
        idx = np.take_along_axis(part, order, axis=1)
        d = np.take_along_axis(part_d, order, axis=1)
        idx = np.where(np.isinf(d), -1, idx)
        dist_out[start:start + block] = np.sqrt(d) if metric == "euclidean" else d
        idx_out[start:start + block] = idx
    return dist_out, idx_out


def top_k_similar(queries: np.ndarray, gallery: np.ndarray, k: int,
                  exclude: np.ndarray | None = None,
                  block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by dot product (cosine similarity of unit vectors), highest first.

    Parameters
    ----------
    queries : ndarray of shape (m, d)
    gallery : ndarray of shape (n, d)
    k : int
    exclude : ndarray of int, shape (m,), optional
        A gallery row to leave out for each query (``-1``: none).
    block : int

    Returns
    -------
    scores, indices : ndarray of shape (m, k)
        Similarity (``-inf`` / ``-1`` where fewer than ``k`` candidates are left).
    """
    dist, idx = exact_search(np.asarray(queries, np.float32), np.asarray(gallery, np.float32),
                             k, "cosine", exclude, block)
    return (1.0 - dist).astype(np.float32), idx


def drop_excluded(dist: np.ndarray, idx: np.ndarray, exclude: np.ndarray | None,
                   k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each query's excluded row (and the -1 padding), keep the first ``k``."""
    out_d = np.full((len(idx), k), np.inf, dist.dtype if dist.dtype.kind == "f" else float)
    out_i = np.full((len(idx), k), -1, np.int64)
    for q in range(len(idx)):
        keep = idx[q] >= 0
        if exclude is not None:
            keep &= idx[q] != exclude[q]
        d, i = dist[q][keep][:k], idx[q][keep][:k]
        out_d[q, :len(d)], out_i[q, :len(i)] = d, i
    return out_d, out_i

