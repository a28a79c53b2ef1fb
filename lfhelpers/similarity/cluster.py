"""Clustering photos by their embeddings.

For a pile of unlabelled found items: do the photos fall into groups that match the
categories? The CNN-clustering tutorial this follows ran K-means on ImageNet features of
several backbones, estimated the number of clusters when it is unknown, and looked at the
result with t-SNE. This module does that and scores it against the known labels:

* :func:`fit_clusters`: K-means or agglomerative (Ward) clustering;
* :func:`clustering_scores`: NMI, ARI and purity against the labels;
* :func:`estimate_k`: the number of clusters by the silhouette score over a range of k;
* :func:`project_2d`: t-SNE (or UMAP when installed, or PCA) for the scatter plots;
* :func:`plot_projection`, :func:`plot_k_estimate`, :func:`cluster_samples`: the figures.

The comparison of extractors (retrieval, near duplicates, clustering in one table) is
:func:`lfhelpers.similarity.compare.compare_extractors`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.metrics import (
    adjusted_rand_score,
    normalized_mutual_info_score,
    silhouette_score,
)
from threadpoolctl import threadpool_limits

from lfhelpers.errors import ConfigError, DataError
from lfhelpers.plots import photo_tile
from lfhelpers.similarity.features.base import l2_normalize
from lfhelpers.similarity.search.engine import SearchEngine

log = logging.getLogger(__name__)

METHODS = ("kmeans", "agglomerative")


def _one_openmp_thread() -> threadpool_limits:
    """scikit-learn's OpenMP loops (K-means, t-SNE) run on one thread.

    In a process that has run TensorFlow, or on a busy machine, their worker threads wait on
    each other at every step; one thread is several times faster there (t-SNE of 1,100 photos:
    38 s with two threads, 5 s with one) and hardly slower elsewhere.
    """
    return threadpool_limits(limits=1, user_api="openmp")


def fit_clusters(features: np.ndarray, n_clusters: int, method: str = "kmeans",
                 seed: int = 0) -> np.ndarray:
    """Cluster rows of ``features`` (L2-normalised first) into ``n_clusters`` groups.

    Parameters
    ----------
    features : ndarray of shape (n, d)
    n_clusters : int
        Between 2 and ``n``.
    method : {"kmeans", "agglomerative"}
        K-means (k-means++, 10 starts) or agglomerative clustering with Ward linkage.
    seed : int
        K-means initialisation.

    Returns
    -------
    ndarray of int, shape (n,)
        Cluster of each row, numbered from 0.
    """
    x = l2_normalize(features)
    n_clusters = int(n_clusters)
    if not 2 <= n_clusters <= len(x):
        raise DataError(f"n_clusters must be between 2 and the {len(x)} items, got "
                        f"{n_clusters}.")
    if method == "kmeans":
        with _one_openmp_thread():
            return KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(x)
    if method == "agglomerative":
        return AgglomerativeClustering(n_clusters, linkage="ward").fit_predict(x)
    raise ConfigError(f"Unknown clustering method {method!r}; use one of {METHODS}.")


def purity_score(labels_true: Sequence[str], labels_pred: Sequence[int]) -> float:
    """Share of items whose cluster's most common label is their own."""
    table = pd.crosstab(np.asarray(labels_pred), np.asarray(labels_true, dtype=str))
    return float(table.max(axis=1).sum() / table.to_numpy().sum())


def clustering_scores(labels_true: Sequence[str], labels_pred: Sequence[int]) -> dict[str, float]:
    """NMI, ARI and purity of a clustering against the true labels.

    Returns
    -------
    dict
        ``nmi`` (normalised mutual information, 0-1), ``ari`` (adjusted Rand index, 0 for
        chance, 1 perfect) and ``purity`` (0-1).
    """
    y = np.asarray(labels_true, dtype=str)
    return {"nmi": float(normalized_mutual_info_score(y, labels_pred)),
            "ari": float(adjusted_rand_score(y, labels_pred)),
            "purity": purity_score(y, labels_pred)}


def contingency(labels_true: Sequence[str], labels_pred: Sequence[int]) -> pd.DataFrame:
    """Photos per (cluster, label): rows clusters, columns labels."""
    return pd.crosstab(pd.Series(np.asarray(labels_pred), name="cluster"),
                       pd.Series(np.asarray(labels_true, dtype=str), name="label"))


@dataclass
class KEstimate:
    """Result of :func:`estimate_k`.

    Attributes
    ----------
    best_k : int
        The k with the highest silhouette score.
    table : pandas.DataFrame
        Index ``k``; columns ``silhouette`` and ``inertia`` (K-means).
    """

    best_k: int
    table: pd.DataFrame


def k_range(n_items: int, true_k: int | None = None, most: int = 16) -> list[int]:
    """A sensible range of k to try: 2 up to ``max(most, 2 × true_k)``, below ``n_items``."""
    top = max(most, 2 * true_k if true_k else 0)
    return list(range(2, max(3, min(top, n_items - 1) + 1)))


def estimate_k(features: np.ndarray, k_values: Sequence[int] | None = None, seed: int = 0,
               sample_size: int = 3000, max_dims: int | None = 256,
               n_init: int = 3) -> KEstimate:
    """Estimate the number of clusters: the k of K-means with the best silhouette score.

    Parameters
    ----------
    features : ndarray of shape (n, d)
    k_values : sequence of int, optional
        Candidates; default :func:`k_range`.
    seed : int
    sample_size : int
        The silhouette is computed on at most this many items (it costs ``n²``).
    max_dims : int, optional
        Wider vectors are first reduced to this many principal components (most of the
        variance, a fraction of the time for the many K-means fits); ``None`` keeps them.
    n_init : int
        K-means starts per k.

    Returns
    -------
    KEstimate
    """
    x = l2_normalize(features)
    k_values = [k for k in (k_values or k_range(len(x))) if 2 <= k < len(x)]
    if not k_values:
        raise DataError(f"Too few items ({len(x)}) to estimate a number of clusters.")
    if max_dims and x.shape[1] > max_dims and len(x) > max_dims:
        x = PCA(int(max_dims), random_state=seed).fit_transform(x)
    rows = []
    for k in k_values:
        with _one_openmp_thread():
            km = KMeans(k, n_init=n_init, random_state=seed).fit(x)
        sil = silhouette_score(x, km.labels_, sample_size=min(sample_size, len(x)),
                               random_state=seed)
        rows.append({"k": k, "silhouette": float(sil), "inertia": float(km.inertia_)})
    table = pd.DataFrame(rows).set_index("k")
    return KEstimate(best_k=int(table["silhouette"].idxmax()), table=table)


def plot_k_estimate(estimate: KEstimate, true_k: int | None = None,
                    title: str = "How many clusters? Silhouette score of K-means") -> plt.Figure:
    """Silhouette (left axis) and inertia (right axis) against k, best and true k marked."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    t = estimate.table
    ax.plot(t.index, t["silhouette"], "o-", color="tab:blue", label="silhouette")
    ax.set_xlabel("number of clusters k")
    ax.set_ylabel("silhouette score (higher is better)", color="tab:blue")
    ax.axvline(estimate.best_k, color="tab:blue", linestyle="--", linewidth=1,
               label=f"estimated k = {estimate.best_k}")
    if true_k:
        ax.axvline(true_k, color="tab:green", linestyle=":", linewidth=2,
                   label=f"true number of classes = {true_k}")
    ax2 = ax.twinx()
    ax2.plot(t.index, t["inertia"], "s-", color="tab:grey", alpha=0.6, markersize=3,
             label="inertia")
    ax2.set_ylabel("K-means inertia", color="tab:grey")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="upper right")
    ax.set_xticks(list(t.index))
    ax.set_title(title)
    fig.tight_layout()
    return fig


def project_2d(features: np.ndarray, method: str = "tsne", seed: int = 0,
               perplexity: float = 30.0) -> np.ndarray:
    """Two-dimensional map of the rows for a scatter plot.

    Parameters
    ----------
    features : ndarray of shape (n, d)
    method : {"tsne", "umap", "pca"}
        ``"umap"`` needs ``umap-learn``; without it t-SNE is used (logged). t-SNE runs on the
        first 50 principal components (faster, same picture).
    seed : int
    perplexity : float
        t-SNE neighbourhood size (capped below ``n / 3``).

    Returns
    -------
    ndarray of shape (n, 2)
    """
    x = l2_normalize(features)
    n = len(x)
    if n < 3:
        raise DataError(f"Need at least 3 items for a 2-D map, got {n}.")
    if method not in ("tsne", "umap", "pca"):
        raise ConfigError(f"Unknown projection {method!r}; use 'tsne', 'umap' or 'pca'.")
    if method == "umap":
        try:
            import umap
        except ImportError:
            log.info("umap-learn is not installed; using t-SNE instead.")
            method = "tsne"
        else:
            return umap.UMAP(random_state=seed).fit_transform(x)
    reduced = PCA(min(50, n, x.shape[1]), random_state=seed).fit_transform(x)
    if method == "pca":
        return reduced[:, :2] if reduced.shape[1] >= 2 else np.c_[reduced, np.zeros(n)]
    with _one_openmp_thread():
        return TSNE(2, perplexity=min(perplexity, (n - 1) / 3), init="pca",
                    random_state=seed).fit_transform(reduced)


def _scatter(ax: plt.Axes, xy: np.ndarray, groups: np.ndarray, title: str, legend: str) -> None:
    names = sorted(set(groups.tolist()), key=lambda g: (not isinstance(g, int), g if
                                                         isinstance(g, int) else str(g)))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    for j, name in enumerate(names):
        pick = groups == name
        ax.scatter(xy[pick, 0], xy[pick, 1], s=9, alpha=0.75, color=cmap(j % cmap.N),
                   label=str(name), edgecolors="none")
    ax.set_title(title)
    ax.set_xlabel("dimension 1")
    ax.set_ylabel("dimension 2")
    if len(names) <= 20:
        ax.legend(title=legend, fontsize=7, title_fontsize=8, markerscale=2,
                  loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)


def plot_projection(xy: np.ndarray, labels: Sequence[str], clusters: Sequence[int],
                    method: str = "t-SNE",
                    suptitle: str = "Embeddings in two dimensions") -> plt.Figure:
    """Side by side: the 2-D map colored by true label and by cluster.

    Parameters
    ----------
    xy : ndarray of shape (n, 2)
        From :func:`project_2d`.
    labels : sequence of str
    clusters : sequence of int
    method : str
        Name of the projection, for the titles.
    suptitle : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    method = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}.get(method, method)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    _scatter(axes[0], np.asarray(xy), np.asarray(labels, dtype=str),
             f"{method}, colored by label", "label")
    _scatter(axes[1], np.asarray(xy), np.asarray(clusters),
             f"{method}, colored by cluster", "cluster")
    fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def cluster_samples(files: Sequence[str | os.PathLike[str]], clusters: Sequence[int],
                    labels: Sequence[str] | None = None, per_cluster: int = 6, seed: int = 0,
                    size: float = 1.5, max_clusters: int = 16) -> plt.Figure:
    """A row of sample photos per cluster, titled with its size and most common label.

    Parameters
    ----------
    files : sequence of path-like
    clusters : sequence of int
    labels : sequence of str, optional
        True labels, to name each cluster's majority.
    per_cluster : int
        Photos per row.
    seed : int
        Which photos are drawn.
    size : float
        Inches per tile.
    max_clusters : int
        Rows drawn (largest clusters first).

    Returns
    -------
    matplotlib.figure.Figure
    """
    files = [os.fspath(f) for f in files]
    clusters = np.asarray(clusters)
    rng = np.random.default_rng(seed)
    ids, counts = np.unique(clusters, return_counts=True)
    ids = ids[np.argsort(-counts, kind="stable")][:max_clusters]
    fig, axes = plt.subplots(len(ids), per_cluster, squeeze=False,
                             figsize=(per_cluster * size + 1.6, len(ids) * size))
    for r, cid in enumerate(ids):
        members = np.flatnonzero(clusters == cid)
        picks = rng.choice(members, size=min(per_cluster, len(members)), replace=False)
        name = f"cluster {cid}\n{len(members)} photos"
        if labels is not None:
            counts_here = pd.Series(np.asarray(labels, dtype=str)[members]).value_counts()
            name += f"\n{counts_here.index[0]} {counts_here.iloc[0] / len(members):.0%}"
        for c in range(per_cluster):
            ax = axes[r, c]
            photo_tile(ax, files[picks[c]] if c < len(picks) else None, 160)
            if c == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle("Sample photos per cluster (size and most common label on the left)")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    return fig


def estimate_k_by_matches(engine: SearchEngine, vectors: np.ndarray | None = None,
                          n_probe: int = 20, seed: int = 0, k: int = 30) -> dict[str, float]:
    """The number of clusters the SimilarPictures way: N / photos matching a random photo.

    Take random gallery photos, count the other photos that a local-feature model matches with
    them regardless of viewpoint (here: the engine's verified same items), assume clusters of
    similar size: ``k ≈ N / (1 + median matches)``. The original used DELF features; the
    engine's RootSIFT + geometric verification stand in. It counts *objects* photographed
    several times, not categories: on a set of many different objects per category it finds
    many small clusters.

    Parameters
    ----------
    engine : SearchEngine
        Fitted on the photos to cluster, with local features (``recipe.same_item``).
    vectors : ndarray of shape (n, d), optional
        The gallery photos' vectors as embedded by the engine's recipe (else the probes are
        embedded again).
    n_probe : int
        Random photos probed.
    seed : int
    k : int
        Candidates verified per probe.

    Returns
    -------
    dict
        ``estimated_k``, ``median_matches``, ``mean_matches``, ``n_probe``.
    """
    if engine.store_ is None:
        raise ConfigError("The match-count estimate needs local features: a search engine "
                          "built with recipe.same_item=True.")
    n = engine.gallery_.n_items_
    rng = np.random.default_rng(seed)
    probes = rng.choice(n, size=min(n_probe, n), replace=False)
    paths = [engine.paths_[i] for i in probes]
    found = engine.search(paths, min(k, n - 1), verify=True,
                          vectors=None if vectors is None else np.asarray(vectors)[probes],
                          exclude=[int(i) for i in probes]) if n > 1 else [[] for _ in paths]
    matches = np.array([sum(bool(x["same_item"]) for x in f) for f in found], float)
    median = float(np.median(matches)) if len(matches) else 0.0
    return {"estimated_k": float(round(n / (1.0 + median))), "median_matches": median,
            "mean_matches": float(matches.mean()) if len(matches) else 0.0,
            "n_probe": int(len(probes))}
