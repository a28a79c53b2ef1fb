"""Extractors compared on the same photos: retrieval, near-duplicate recall and clustering."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from lfhelpers.similarity.cluster import METHODS, clustering_scores, fit_clusters
from lfhelpers.similarity.evaluation.duplicates import duplicate_recall
from lfhelpers.similarity.evaluation.retrieval import retrieval_scores
from lfhelpers.similarity.features.base import l2_normalize
from lfhelpers.similarity.search.exact import top_k_similar
from lfhelpers.similarity.search.postprocess import parse_steps


def compare_extractors(
    feature_sets: Mapping[str, np.ndarray],
    labels: Sequence[str],
    gallery: np.ndarray,
    n_clusters: int | None = None,
    duplicates: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    seed: int = 0,
    ks: Sequence[int] = (1, 5, 10),
    postprocess: Sequence[str] | str = (),
) -> pd.DataFrame:
    """Compare feature sets on retrieval, near-duplicate recall and clustering.

    Parameters
    ----------
    feature_sets : mapping of name -> ndarray of shape (n, d)
        Rows aligned with ``labels``.
    labels : sequence of str
    gallery : ndarray of bool, shape (n,)
        Gallery rows; the others are the queries of the retrieval test.
    n_clusters : int, optional
        Clusters for K-means and agglomerative; default: the number of labels.
    duplicates : mapping of name -> (query vectors, gallery row of each original), optional
        The near-duplicate test for each set (rows index the gallery part).
    seed : int
    ks : sequence of int
        Cut-offs of precision@k.
    postprocess : sequence of str or str
        Retrieval post-processing (:mod:`lfhelpers.similarity.search.postprocess`, e.g.
        ``"center+dba+aqe"``) also scored, as ``p_at_5_post`` and ``loo_p_at_5_post``.

    Returns
    -------
    pandas.DataFrame
        One row per set: ``dim``, ``p_at_<k>``, ``map`` (queries against the gallery),
        ``loo_p_at_5`` (each gallery photo against the rest), with ``postprocess`` also
        ``p_at_5_post`` and ``loo_p_at_5_post``, ``dup_recall_at_1/5`` (when given),
        ``kmeans_nmi/ari/purity`` and ``agglomerative_nmi/ari/purity``.
    """
    y = np.asarray(labels, dtype=str)
    g = np.asarray(gallery, bool)
    k = int(n_clusters or len(np.unique(y)))
    rows = {}
    for name, x in feature_sets.items():
        x = np.asarray(x, np.float32)
        row: dict[str, float] = {"dim": x.shape[1]}
        summary, _ = retrieval_scores(x[g], y[g], x[~g], y[~g], ks=ks)
        row.update({key: summary[key] for key in (*[f"p_at_{k_}" for k_ in ks], "map")})
        row["loo_p_at_5"] = retrieval_scores(x[g], y[g], ks=(5,))[0]["p_at_5"]
        if parse_steps(postprocess):
            row["p_at_5_post"] = retrieval_scores(x[g], y[g], x[~g], y[~g], ks=(5,),
                                                  postprocess=postprocess)[0]["p_at_5"]
            row["loo_p_at_5_post"] = retrieval_scores(x[g], y[g], ks=(5,),
                                                      postprocess=postprocess)[0]["p_at_5"]
        if duplicates and name in duplicates:
            dup_x, orig = duplicates[name]
            _, idx = top_k_similar(l2_normalize(dup_x), l2_normalize(x[g]), min(5, int(g.sum())))
            row.update(duplicate_recall(idx, orig, ks=(1, 5)))
        for method in METHODS:
            scores = clustering_scores(y, fit_clusters(x, k, method, seed))
            row.update({f"{method}_{key}": value for key, value in scores.items()})
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("features")
