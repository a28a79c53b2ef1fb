"""Search results as tables, and what the notebooks read from them.

:class:`~lfhelpers.similarity.search.gallery.GalleryIndex` answers in two tables:

* a *neighbour table* (:meth:`~GalleryIndex.nearest`, :meth:`~GalleryIndex.leave_one_out`):
  ``query, query_label, rank, file, label, distance``, smaller is closer; what
  :func:`~lfhelpers.similarity.plots.plot_neighbours` draws (notebook 05);
* a *match table* (:meth:`~GalleryIndex.query_table`): ``query, query_label, rank, path,
  label, score, correct``, higher is better; what
  :func:`~lfhelpers.similarity.plots.plot_matches` draws (notebook 06).

:func:`mismatched_queries` keeps the queries whose closest photo has another label,
:func:`relative_paths` shows a table's paths relative to a folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

MATCH_COLUMNS = ["query", "query_label", "rank", "path", "label", "score", "correct"]


def neighbour_table(queries: Sequence[str], query_labels: Sequence[str], dist: np.ndarray,
                    idx: np.ndarray, files: Sequence[str], labels: np.ndarray) -> pd.DataFrame:
    """The neighbour table of ranked gallery rows ``idx`` (``-1``: none found) at ``dist``."""
    rows = []
    for q, (query, query_label) in enumerate(zip(queries, query_labels, strict=True)):
        for rank, (d, i) in enumerate(zip(dist[q], idx[q], strict=True), start=1):
            if i < 0:
                continue
            rows.append({"query": query, "query_label": query_label, "rank": rank,
                         "file": files[i], "label": labels[i], "distance": float(d)})
    return pd.DataFrame(rows)


def match_table(queries: Sequence[str], query_labels: Sequence[str], scores: np.ndarray,
                idx: np.ndarray, paths: Sequence[str], labels: np.ndarray) -> pd.DataFrame:
    """The match table of ranked gallery rows ``idx`` (``-1``: none found) with ``scores``."""
    rows = []
    for q, (qpath, qlabel) in enumerate(zip(queries, query_labels, strict=True)):
        for rank, (s, i) in enumerate(zip(scores[q], idx[q], strict=True), start=1):
            if i < 0:
                continue
            label = str(labels[i])
            rows.append({"query": qpath, "query_label": qlabel, "rank": rank,
                         "path": paths[i], "label": label, "score": float(s),
                         "correct": bool(qlabel) and label == qlabel})
    return pd.DataFrame(rows, columns=MATCH_COLUMNS)


def mismatched_queries(neighbours: pd.DataFrame) -> pd.DataFrame:
    """Rows of a neighbour table whose closest image (rank 1) has another label."""
    first = neighbours[neighbours["rank"] == 1]
    return first[first["label"] != first["query_label"]].reset_index(drop=True)


def relative_paths(table: pd.DataFrame, root: str | os.PathLike[str],
                   columns: Sequence[str] = ("query", "file")) -> pd.DataFrame:
    """A copy of a neighbour table with its file columns shown relative to ``root``.

    Parameters
    ----------
    table : pandas.DataFrame
        From :meth:`GalleryIndex.nearest`, :meth:`GalleryIndex.leave_one_out` or
        :func:`mismatched_queries`.
    root : path-like
        Folder to show paths relative to (e.g. the clean data folder); paths outside it are
        kept as they are.
    columns : sequence of str
        Columns holding paths.

    Returns
    -------
    pandas.DataFrame
    """
    base = Path(root).resolve()
    out = table.copy()
    for column in columns:
        out[column] = [Path(p).resolve().relative_to(base).as_posix()
                       if Path(p).resolve().is_relative_to(base) else p for p in out[column]]
    return out
