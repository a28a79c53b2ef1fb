"""Cheap ways to better retrieval from the same backbone: pooling, whitening, expansion, re-ranking.

All of them are known from instance retrieval (Radenović et al., "Fine-tuning CNN image
retrieval with no human annotation", 2018; Zhong et al., "Re-ranking person re-identification
with k-reciprocal encoding", 2017) and need no training labels:

* generalised-mean pooling lives with the extractors (:mod:`lfhelpers.similarity.features.pooling`);
* :func:`center`: the gallery's mean vector subtracted, then L2 normalisation (what all photos
  share, e.g. "a photo of an object on a plain background", stops counting as similarity);
* :class:`PCAWhitening`: PCA learned on the gallery, components scaled to unit variance (with a
  power ``shrink`` that softens the scaling), then L2 normalisation;
* :func:`database_augmentation` (DBA): each gallery vector replaced by the weighted mean of
  itself and its nearest gallery neighbours;
* :func:`query_expansion` (alpha-QE): each query replaced by the weighted mean of itself and its
  top matches, then searched again;
* :func:`k_reciprocal_distances`: the k-reciprocal re-ranking distance.

:class:`Postprocessor` is the fitted form that a saved gallery keeps: the gallery-side steps
(``center``, ``pcaw``, ``dba``) are learned from the gallery once, the query-side step (``aqe``)
runs on each new query against the stored gallery, so a photo searched later gets exactly what
the benchmark measured. :func:`postprocess` applies a list of steps (names in :data:`STEPS`)
to gallery and query vectors; ``leave_one_out=True`` keeps each gallery photo out of the steps
that would otherwise let it see itself (DBA), so leave-one-out figures stay honest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA

from lfhelpers.errors import ConfigError, DataError
from lfhelpers.similarity.features.base import l2_normalize

#: Post-processing steps of :func:`postprocess`, in the order they are applied.
STEPS = ("center", "pcaw", "dba", "aqe", "krr")


def subtract_mean(vectors: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Unit rows of ``vectors`` minus ``mean`` (a gallery's mean unit vector), re-normalised."""
    return l2_normalize(l2_normalize(np.asarray(vectors, np.float32)) - mean)


def center(gallery: np.ndarray, queries: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray | None]:
    """Subtract the mean of the (unit) gallery vectors from gallery and queries, re-normalise.

    Parameters
    ----------
    gallery : ndarray of shape (n, d)
    queries : ndarray of shape (m, d), optional

    Returns
    -------
    gallery, queries : ndarray
        L2-normalised rows (``queries`` stays ``None`` when not given).
    """
    mean = l2_normalize(np.asarray(gallery, np.float32)).mean(axis=0)
    return (subtract_mean(gallery, mean),
            None if queries is None else subtract_mean(queries, mean))


class PCAWhitening(TransformerMixin, BaseEstimator):
    """PCA whitening learned on the gallery, then L2 normalisation.

    Parameters
    ----------
    n_components : int or float, optional
        Components kept (a float below 1: that share of the variance); default: all that the
        gallery supports (at most ``n - 1``).
    shrink : float
        Each component is divided by ``std ** shrink``: 1 is full whitening, 0 plain PCA;
        0.5 keeps the noisy small components from dominating on small galleries.

    Attributes
    ----------
    pca_ : sklearn.decomposition.PCA
    """

    def __init__(self, n_components: int | float | None = None, shrink: float = 0.5):
        self.n_components = n_components
        self.shrink = shrink

    def fit(self, X: np.ndarray, y: object = None) -> PCAWhitening:
        """Learn the components from gallery vectors ``X``; returns ``self``."""
        X = l2_normalize(np.asarray(X, np.float32))
        most = min(X.shape[0] - 1, X.shape[1])
        if most < 1:
            raise DataError("PCA whitening needs at least 2 gallery vectors.")
        n = self.n_components if self.n_components is not None else most
        if isinstance(n, int):
            n = min(n, most)
        self.pca_ = PCA(n_components=n, svd_solver="full", random_state=0).fit(X)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Project, scale the components and L2-normalise."""
        z = self.pca_.transform(l2_normalize(np.asarray(X, np.float32)))
        scale = np.sqrt(np.maximum(self.pca_.explained_variance_, 1e-12)) ** self.shrink
        return l2_normalize((z / scale).astype(np.float32))


def _neighbours(x: np.ndarray, g: np.ndarray, n: int,
                exclude_self: bool) -> tuple[np.ndarray, np.ndarray]:
    sims = x @ g.T
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :n]
    return np.take_along_axis(sims, idx, axis=1), idx


def database_augmentation(gallery: np.ndarray, n: int = 3, alpha: float = 3.0) -> np.ndarray:
    """DBA: each gallery vector becomes the weighted mean of itself and its ``n - 1`` nearest.

    Weights are ``max(similarity, 0) ** alpha`` (itself: 1). Returns L2-normalised rows.
    """
    g = l2_normalize(np.asarray(gallery, np.float32))
    if n <= 1:
        return g
    sims, idx = _neighbours(g, g, n - 1, exclude_self=True)
    w = np.maximum(sims, 0) ** alpha
    return l2_normalize(g + np.einsum("ij,ijd->id", w, g[idx]))


def query_expansion(queries: np.ndarray, gallery: np.ndarray, n: int = 2, alpha: float = 3.0,
                    exclude: np.ndarray | None = None) -> np.ndarray:
    """alpha-QE: each query plus its ``n`` top gallery matches, weighted by similarity ** alpha.

    Parameters
    ----------
    queries, gallery : ndarray
        Unit vectors.
    n : int
        Top matches added.
    alpha : float
    exclude : ndarray of int, optional
        One gallery row per query to leave out (the query itself in leave-one-out).

    Returns
    -------
    ndarray
        The expanded, L2-normalised queries.
    """
    q = l2_normalize(np.asarray(queries, np.float32))
    g = l2_normalize(np.asarray(gallery, np.float32))
    sims = q @ g.T
    if exclude is not None:
        rows = np.flatnonzero(np.asarray(exclude) >= 0)
        sims[rows, np.asarray(exclude)[rows]] = -np.inf
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :n]
    w = np.maximum(np.take_along_axis(sims, idx, axis=1), 0) ** alpha
    return l2_normalize(q + np.einsum("ij,ijd->id", w, g[idx]))


def k_reciprocal_distances(queries: np.ndarray, gallery: np.ndarray, k1: int = 20,
                           k2: int = 6, lambda_value: float = 0.3,
                           leave_one_out: bool = False) -> np.ndarray:
    """k-reciprocal re-ranking distances (Zhong et al. 2017) of queries to the gallery.

    Parameters
    ----------
    queries, gallery : ndarray
        Unit vectors (in leave-one-out, pass the gallery as both).
    k1, k2 : int
        Size of the k-reciprocal sets and of the local query expansion.
    lambda_value : float
        Weight of the original distance in the final one.
    leave_one_out : bool
        The queries are the gallery itself: a photo is not its own candidate (distance inf).

    Returns
    -------
    ndarray of shape (m, n)
        Lower is better.
    """
    q = l2_normalize(np.asarray(queries, np.float32))
    g = l2_normalize(np.asarray(gallery, np.float32))
    allv = g if leave_one_out else np.vstack([q, g])
    m = len(q) if not leave_one_out else 0
    total = len(allv)
    original = np.maximum(2.0 - 2.0 * (allv @ allv.T), 0).astype(np.float32)
    original /= np.maximum(original.max(axis=0, keepdims=True), 1e-12)
    rank = np.argsort(original, axis=1, kind="stable")
    k1 = min(k1, total - 1)
    v = np.zeros((total, total), np.float32)
    for i in range(total):
        forward = rank[i, :k1 + 1]
        backward = rank[forward, :k1 + 1]
        recip = forward[np.any(backward == i, axis=1)]
        expanded = recip
        for c in recip:
            cf = rank[c, :int(round(k1 / 2)) + 1]
            cb = rank[cf, :int(round(k1 / 2)) + 1]
            cr = cf[np.any(cb == c, axis=1)]
            if len(np.intersect1d(cr, recip)) > 2 / 3 * len(cr):
                expanded = np.union1d(expanded, cr)
        w = np.exp(-original[i, expanded])
        v[i, expanded] = w / w.sum()
    if k2 > 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(total)])
    gallery_cols = np.arange(m, total)
    query_rows = np.arange(total) if leave_one_out else np.arange(m)
    jaccard = np.empty((len(query_rows), len(gallery_cols)), np.float32)
    vg = v[:, gallery_cols]
    for r, i in enumerate(query_rows):
        mins = np.minimum(v[i][:, None], vg).sum(axis=0)
        jaccard[r] = 1.0 - mins / np.maximum(2.0 - mins, 1e-12)
    final = jaccard * (1 - lambda_value) + original[np.ix_(query_rows, gallery_cols)] * (
        lambda_value)
    if leave_one_out:
        np.fill_diagonal(final, np.inf)
    return final


@dataclass
class Postprocessed:
    """Result of :func:`postprocess`: vectors to search with, or a ready ranking.

    Attributes
    ----------
    gallery, queries : ndarray
        Vectors after the vector steps (``pcaw``, ``dba``, ``aqe``).
    distances : ndarray or None
        Query-to-gallery distances when a re-ranking step (``krr``) produced them, or when
        leave-one-out DBA needed per-query gallery vectors.
    steps : list of str
    """

    gallery: np.ndarray
    queries: np.ndarray
    distances: np.ndarray | None = None
    steps: list[str] = field(default_factory=list)



class Postprocessor(TransformerMixin, BaseEstimator):
    """Post-processing learned from a gallery and applied to later queries.

    Parameters
    ----------
    steps : sequence of str or str
        Vector steps of :data:`STEPS` (``"center+dba+aqe"``); ``krr`` gives scores only and is
        not accepted here.
    pcaw_dim, pcaw_shrink, dba_n, qe_n, alpha
        As in :func:`postprocess`.

    Attributes
    ----------
    steps_ : list of str
    mean_ : ndarray of shape (d,) or None
        The gallery mean (``center``).
    whitening_ : PCAWhitening or None
    gallery_ : ndarray of shape (n, d')
        The gallery as searched (after every gallery-side step).
    """

    def __init__(self, steps: Sequence[str] | str = (), pcaw_dim: int | None = None,
                 pcaw_shrink: float = 0.5, dba_n: int = 3, qe_n: int = 2, alpha: float = 3.0):
        self.steps = steps
        self.pcaw_dim = pcaw_dim
        self.pcaw_shrink = pcaw_shrink
        self.dba_n = dba_n
        self.qe_n = qe_n
        self.alpha = alpha

    def fit(self, X: np.ndarray, y: object = None) -> Postprocessor:
        """Learn the gallery-side steps from gallery vectors ``X``; returns ``self``."""
        self.steps_ = parse_steps(self.steps)
        if "krr" in self.steps_:
            raise ConfigError("'krr' re-ranks scores and cannot be kept with an index; leave it "
                              "out of the gallery's post-processing.")
        g = l2_normalize(np.asarray(X, np.float32))
        self.mean_ = None
        self.whitening_ = None
        if "center" in self.steps_:
            self.mean_ = g.mean(axis=0)
            g = subtract_mean(g, self.mean_)
        if "pcaw" in self.steps_:
            self.whitening_ = PCAWhitening(self.pcaw_dim, self.pcaw_shrink).fit(g)
            g = self.whitening_.transform(g)
        if "dba" in self.steps_:
            g = database_augmentation(g, self.dba_n, self.alpha)
        self.gallery_ = g
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Query vectors as searched: centred, whitened and expanded against the gallery."""
        if not hasattr(self, "gallery_"):
            raise DataError("The post-processing is not fitted: call fit(gallery) first.")
        q = l2_normalize(np.atleast_2d(np.asarray(X, np.float32)))
        if self.mean_ is not None:
            q = subtract_mean(q, self.mean_)
        if self.whitening_ is not None:
            q = self.whitening_.transform(q)
        if "aqe" in self.steps_:
            q = query_expansion(q, self.gallery_, self.qe_n, self.alpha)
        return q


def parse_steps(steps: Sequence[str] | str) -> list[str]:
    """``"pcaw+dba"`` or ``["pcaw", "dba"]`` to a checked list (``""``/``"none"``: empty)."""
    if isinstance(steps, str):
        steps = [s for s in steps.replace(",", "+").split("+")]
    out = [s.strip().lower() for s in steps if s.strip() and s.strip().lower() != "none"]
    unknown = [s for s in out if s not in STEPS]
    if unknown:
        raise ConfigError(f"Unknown post-processing step(s) {unknown}; use some of {STEPS}.")
    return sorted(set(out), key=STEPS.index)


def _dba_leave_one_out(g: np.ndarray, q: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """Distances of query ``i`` (gallery row ``i``) to the DBA gallery built without row ``i``."""
    sims, idx = _neighbours(g, g, n, exclude_self=True)  # n: one spare neighbour
    w = np.maximum(sims, 0) ** alpha
    dba = l2_normalize(g + np.einsum("ij,ijd->id", w[:, :n - 1], g[idx[:, :n - 1]]))
    out = q @ dba.T
    for j in range(len(g)):
        for t in range(n - 1):
            i = idx[j, t]  # query i is among j's neighbours: rebuild j without it
            keep = [u for u in range(n) if u != t]
            vec = g[j] + (w[j, keep][:, None] * g[idx[j, keep]]).sum(axis=0)
            out[i, j] = q[i] @ (vec / max(np.linalg.norm(vec), 1e-12))
    np.fill_diagonal(out, -np.inf)
    return 1.0 - out


def postprocess(gallery: np.ndarray, queries: np.ndarray | None = None,
                steps: Sequence[str] | str = (), *, pcaw_dim: int | None = None,
                pcaw_shrink: float = 0.5, dba_n: int = 3, qe_n: int = 2, alpha: float = 3.0,
                k1: int = 20, k2: int = 6, lambda_value: float = 0.3) -> Postprocessed:
    """Apply post-processing steps to gallery and query vectors.

    Parameters
    ----------
    gallery : ndarray of shape (n, d)
    queries : ndarray of shape (m, d), optional
        ``None``: leave-one-out, each gallery photo queries the others.
    steps : sequence of str or str
        Some of :data:`STEPS` (``"center+dba+aqe"``), applied in the order of :data:`STEPS`.
    pcaw_dim, pcaw_shrink
        :class:`PCAWhitening` parameters.
    dba_n, qe_n, alpha
        Neighbours of DBA (itself included) and of alpha-QE, and their weight exponent.
    k1, k2, lambda_value
        :func:`k_reciprocal_distances` parameters.

    Returns
    -------
    Postprocessed
    """
    steps = parse_steps(steps)
    loo = queries is None
    if not loo and "krr" not in steps:  # the fitted form a saved gallery uses: the same numbers
        fitted = Postprocessor(steps, pcaw_dim, pcaw_shrink, dba_n, qe_n, alpha).fit(gallery)
        return Postprocessed(fitted.gallery_, fitted.transform(queries), None, steps)
    g = l2_normalize(np.asarray(gallery, np.float32))
    q = g if loo else l2_normalize(np.asarray(queries, np.float32))
    distances = None
    if "center" in steps:  # the gallery mean (no labels; queries outside it do not move it)
        g, q_centered = center(g, None if loo else q)
        q = g if loo else q_centered
    if "pcaw" in steps:
        white = PCAWhitening(pcaw_dim, pcaw_shrink).fit(g)
        g = white.transform(g)
        q = g if loo else white.transform(q)
    exclude = np.arange(len(g)) if loo else None
    if "dba" in steps and not loo:
        g = database_augmentation(g, dba_n, alpha)
    if "aqe" in steps:
        q = query_expansion(q, g, qe_n, alpha, exclude)
    if "dba" in steps and loo:
        distances = _dba_leave_one_out(g, q, dba_n, alpha)
    if "krr" in steps:
        distances = k_reciprocal_distances(q, g, k1, k2, lambda_value, leave_one_out=loo)
    return Postprocessed(g, q, distances, steps)
