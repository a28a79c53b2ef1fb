"""Retrieval quality by label: precision@k and mean average precision.

:func:`retrieval_scores` ranks the gallery for each query with
:class:`~lfhelpers.similarity.search.index.NeighbourIndex` (exact cosine unless another index is
given), each gallery photo left out of its own ranking in the leave-one-out set-up, and scores
the rankings by label; :func:`per_class_table` breaks the scores down by class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from lfhelpers.errors import ConfigError, DataError
from lfhelpers.similarity.search.index import NeighbourIndex
from lfhelpers.similarity.search.postprocess import parse_steps
from lfhelpers.similarity.search.postprocess import postprocess as run_postprocess


def average_precision(relevant: np.ndarray) -> float:
    """Average precision of one ranking, given the relevance of each ranked item (best first).

    ``NaN`` when nothing is relevant.
    """
    relevant = np.asarray(relevant, bool)
    hits = np.flatnonzero(relevant)
    if len(hits) == 0:
        return float("nan")
    return float(np.mean(np.arange(1, len(hits) + 1) / (hits + 1)))


def retrieval_scores(
    gallery: np.ndarray,
    gallery_labels: Sequence[str],
    queries: np.ndarray | None = None,
    query_labels: Sequence[str] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    block: int = 512,
    index: NeighbourIndex | None = None,
    postprocess: Sequence[str] | str = (),
    **postprocess_params: Any,
) -> tuple[dict[str, float], pd.DataFrame]:
    """Precision@k and mean average precision of retrieval by label (cosine ranking by the index).

    Parameters
    ----------
    gallery : ndarray of shape (n, d)
        Gallery vectors (normalised here).
    gallery_labels : sequence of str
    queries : ndarray of shape (m, d), optional
        Query vectors from outside the gallery (e.g. the test split against the train
        gallery). ``None``: leave-one-out, each gallery photo against the other ``n - 1``.
    query_labels : sequence of str, optional
        Needed with ``queries``.
    ks : sequence of int
        Cut-offs of precision@k (capped at the number of candidates).
    block : int
        Queries ranked at a time.
    index : NeighbourIndex, optional
        The fitted index of ``gallery`` to rank with (default: an exact cosine one); e.g. an
        approximate index, to see what it costs in precision.
    postprocess : sequence of str or str
        Steps of :func:`lfhelpers.similarity.search.postprocess.postprocess` applied first
        (``"pcaw+dba+aqe"``; leave-one-out stays honest); not with ``index``.
    **postprocess_params
        Their parameters (``dba_n``, ``qe_n``, ``alpha``, ...).

    Returns
    -------
    summary : dict
        ``p_at_<k>`` for each k and ``map``, plus ``n_queries`` and ``n_gallery``.
    per_query : pandas.DataFrame
        One row per query: ``label``, ``p_at_<k>``, ``ap``, ``first_hit`` (rank of the first
        same-label photo, 0 when none).
    """
    glabels = np.asarray(gallery_labels, dtype=str)
    loo = queries is None
    if not loo and query_labels is None:
        raise DataError("query_labels are needed with queries.")
    qlabels = glabels if loo else np.asarray(query_labels, dtype=str)
    distances = None
    if parse_steps(postprocess):
        if index is not None:
            raise ConfigError("Pass either an index or post-processing steps, not both.")
        done = run_postprocess(gallery, queries, postprocess, **postprocess_params)
        gallery, queries, distances = done.gallery, done.queries, done.distances
    q = gallery if queries is None else queries
    if index is None and distances is None:
        index = NeighbourIndex("cosine").fit(gallery)
    n_gallery = len(gallery) if index is None else index.n_items_
    n = n_gallery - (1 if loo else 0)
    if n < 1 or len(q) == 0:
        raise DataError(f"Need queries and at least one candidate; got {len(q)} queries and "
                        f"{n} candidates.")
    ks = [int(k) for k in ks]
    rows = []
    for start in range(0, len(q), block):
        stop = min(start + block, len(q))
        exclude = np.arange(start, stop) if loo else None
        if distances is None:
            _, order = index.search(q[start:stop], n, exclude)
        else:
            order = np.argsort(distances[start:stop], axis=1, kind="stable")[:, :n]
        for r, ranking in enumerate(order):
            label = qlabels[start + r]
            rel = glabels[ranking[ranking >= 0]] == label
            row = {"label": label}
            for k in ks:
                row[f"p_at_{k}"] = float(rel[:min(k, n)].sum() / min(k, n))
            row["ap"] = average_precision(rel)
            row["first_hit"] = int(np.argmax(rel)) + 1 if rel.any() else 0
            rows.append(row)
    per_query = pd.DataFrame(rows)
    summary = {f"p_at_{k}": float(per_query[f"p_at_{k}"].mean()) for k in ks}
    summary["map"] = float(per_query["ap"].mean(skipna=True))
    summary["n_queries"] = len(per_query)
    summary["n_gallery"] = n_gallery
    return summary, per_query


def per_class_table(per_query: pd.DataFrame) -> pd.DataFrame:
    """Mean of each per-query score by query label (from :func:`retrieval_scores`)."""
    cols = [c for c in per_query.columns if c.startswith("p_at_") or c == "ap"]
    table = per_query.groupby("label")[cols].mean()
    table.insert(0, "queries", per_query.groupby("label").size())
    return table
