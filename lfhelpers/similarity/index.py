"""Nearest-neighbour search over feature vectors: distance matrices and an index.

Two ways to the same answer:

* :func:`distance_matrix` + :func:`nearest_from_matrix`: the full ``n × n`` matrix from
  :func:`scipy.spatial.distance.pdist` and :func:`~scipy.spatial.distance.squareform`, then an
  ``argsort`` of each row. Simple and good for a few thousand items; it is what the heat-map
  shows.
* :class:`NeighbourIndex`: a scikit-learn :class:`~sklearn.neighbors.NearestNeighbors` index
  for large galleries and for queries from outside the gallery. Its memory grows with ``n``,
  not ``n²``.

Both exclude an item from its own neighbours when the gallery is queried against itself (the
"one lost photo against the other n−1" set-up) and give the same neighbours (up to ties).
The features are whatever describes an image: haralick texture, CNN embeddings, ...
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from scipy.spatial.distance import pdist, squareform
from sklearn.neighbors import NearestNeighbors

from lfhelpers.errors import DataError


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
    _check_k(k, n - 1)
    masked = dist.copy()
    np.fill_diagonal(masked, np.inf)
    order = np.argsort(masked, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, axis=1), order


class NeighbourIndex:
    """A nearest-neighbour index over feature vectors (scikit-learn ``NearestNeighbors``).

    Parameters
    ----------
    metric : str
        ``"cosine"``, ``"euclidean"`` or any metric :class:`sklearn.neighbors.NearestNeighbors`
        accepts.
    algorithm : str
        ``"brute"`` (exact, fine up to about 10⁵ items of a few hundred numbers), or
        ``"auto"``, ``"ball_tree"``, ``"kd_tree"`` for metrics that support them.
    n_jobs : int, optional
        Workers for the queries.

    Attributes
    ----------
    n_items_ : int
        Items in the index.
    nn_ : sklearn.neighbors.NearestNeighbors
        The fitted index.
    """

    def __init__(self, metric: str = "cosine", algorithm: str = "brute",
                 n_jobs: int | None = None):
        self.metric = metric
        self.algorithm = algorithm
        self.n_jobs = n_jobs

    def fit(self, features: np.ndarray) -> NeighbourIndex:
        """Index the rows of ``features``; returns ``self``."""
        features = np.asarray(features, dtype=float)
        if features.ndim != 2 or len(features) < 2:
            raise DataError(f"Need at least 2 feature vectors as an (n, d) array, got shape "
                            f"{features.shape}.")
        self.nn_ = NearestNeighbors(metric=self.metric, algorithm=self.algorithm,
                                    n_jobs=self.n_jobs).fit(features)
        self.n_items_ = len(features)
        return self

    def kneighbors(self, queries: np.ndarray | None = None,
                   k: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """Find the ``k`` nearest indexed items.

        Parameters
        ----------
        queries : ndarray of shape (m, d), optional
            Feature vectors from outside the index. ``None`` queries every indexed item
            against the others (an item is not its own neighbour).
        k : int
            Neighbours per query.

        Returns
        -------
        distances, indices : ndarray of shape (m, k)
            Sorted by increasing distance; ``indices`` are rows of the fitted features.
        """
        if not hasattr(self, "nn_"):
            raise DataError("The index is empty: call fit(features) first.")
        if queries is None:
            _check_k(k, self.n_items_ - 1)
            return self.nn_.kneighbors(None, n_neighbors=k)
        _check_k(k, self.n_items_)
        queries = np.atleast_2d(np.asarray(queries, dtype=float))
        return self.nn_.kneighbors(queries, n_neighbors=k)


def _check_k(k: int, most: int) -> None:
    if not 1 <= k <= most:
        raise DataError(f"k={k} neighbours asked for, but only {most} candidates exist; "
                        f"use 1 <= k <= {most}.")


def class_order(labels: Sequence[str]) -> np.ndarray:
    """Positions that sort items by label (stable within a label)."""
    return np.argsort(np.asarray(labels, dtype=str), kind="stable")


def plot_distance_heatmap(
    dist: np.ndarray,
    labels: Sequence[str],
    title: str = "Pairwise distances, ordered by class",
    metric: str = "distance",
    ax: plt.Axes | None = None,
) -> plt.Axes:
    """Heat-map of a distance matrix with items grouped by class and class blocks outlined.

    A good feature shows darker (closer) squares on the diagonal blocks than off them.

    Parameters
    ----------
    dist : ndarray of shape (n, n)
        Distance matrix.
    labels : sequence of str
        Class of each item.
    title : str
        Axes title.
    metric : str
        Name of the distance for the color bar.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    matplotlib.axes.Axes
    """
    labels = np.asarray(labels, dtype=str)
    order = class_order(labels)
    ordered = np.asarray(dist)[np.ix_(order, order)]
    sorted_labels = labels[order]
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 6.5))
    image = ax.imshow(ordered, cmap="viridis", interpolation="nearest")
    ax.figure.colorbar(image, ax=ax, label=f"{metric} distance")
    names, starts, counts = np.unique(sorted_labels, return_index=True, return_counts=True)
    for start in starts[1:]:
        ax.axhline(start - 0.5, color="white", linewidth=0.8)
        ax.axvline(start - 0.5, color="white", linewidth=0.8)
    centres = starts + counts / 2 - 0.5
    ax.set_xticks(centres, names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(centres, names, fontsize=8)
    ax.set_xlabel("image (grouped by class)")
    ax.set_ylabel("image (grouped by class)")
    ax.set_title(title)
    ax.figure.tight_layout()
    return ax
