"""Full distance matrices: every pair of a few thousand items, and the nearest ones from it.

:func:`distance_matrix` + :func:`nearest_from_matrix` give the same neighbours as
:class:`~lfhelpers.similarity.search.index.NeighbourIndex` from the whole ``n × n`` matrix,
which is what the heat-map of notebook 05 shows.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import pdist, squareform

from lfhelpers.errors import DataError
from lfhelpers.similarity.search.exact import check_k


def distance_matrix(features: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Return the square matrix of pairwise distances between the rows of ``features``.

    Parameters
    ----------
    features : ndarray of shape (n, d)
        One feature vector per item.
    metric : str
        Any :func:`scipy.spatial.distance.pdist` metric, e.g. ``"cosine"`` or ``"euclidean"``.

    Returns
    -------
    ndarray of shape (n, n)
        ``squareform(pdist(features, metric))``; zeros on the diagonal.
    """
    features = np.asarray(features, dtype=float)
    if features.ndim != 2 or len(features) < 2:
        raise DataError(f"Need at least 2 feature vectors as an (n, d) array, got shape "
                        f"{features.shape}.")
    return squareform(pdist(features, metric=metric))


def nearest_from_matrix(dist: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other items of each item, from a square distance matrix.

    Parameters
    ----------
    dist : ndarray of shape (n, n)
        Distance matrix (:func:`distance_matrix`).
    k : int
        Neighbours per item; at most ``n - 1``.

    Returns
    -------
    distances, indices : ndarray of shape (n, k)
        Sorted by increasing distance; an item is never its own neighbour.
    """
    dist = np.asarray(dist, dtype=float)
    n = len(dist)
    check_k(k, n - 1)
    masked = dist.copy()
    np.fill_diagonal(masked, np.inf)
    order = np.argsort(masked, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, axis=1), order
