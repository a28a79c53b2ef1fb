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
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

MATCH_COLUMNS = ["query", "query_label", "rank", "path", "label", "score", "correct"]


def _ranked(queries: Sequence[str], query_labels: Sequence[str], values: np.ndarray,
            idx: np.ndarray) -> Iterator[tuple[str, str, int, float, int]]:
    """``(query, query_label, rank, value, gallery row)`` of each found row (``-1``: none)."""
    for q, (query, query_label) in enumerate(zip(queries, query_labels, strict=True)):
        for rank, (value, i) in enumerate(zip(values[q], idx[q], strict=True), start=1):
            if i >= 0:
                yield query, query_label, rank, float(value), int(i)


def neighbour_table(queries: Sequence[str], query_labels: Sequence[str], dist: np.ndarray,
                    idx: np.ndarray, files: Sequence[str], labels: np.ndarray) -> pd.DataFrame:
    """The neighbour table of ranked gallery rows ``idx`` (``-1``: none found) at ``dist``."""
    return pd.DataFrame([{"query": query, "query_label": query_label, "rank": rank,
                          "file": files[i], "label": labels[i], "distance": d}
                         for query, query_label, rank, d, i
                         in _ranked(queries, query_labels, dist, idx)])


def match_table(queries: Sequence[str], query_labels: Sequence[str], scores: np.ndarray,
                idx: np.ndarray, paths: Sequence[str], labels: np.ndarray) -> pd.DataFrame:
    """The match table of ranked gallery rows ``idx`` (``-1``: none found) with ``scores``."""
    return pd.DataFrame([{"query": qpath, "query_label": qlabel, "rank": rank,
                          "path": paths[i], "label": str(labels[i]), "score": s,
                          "correct": bool(qlabel) and str(labels[i]) == qlabel}
                         for qpath, qlabel, rank, s, i
                         in _ranked(queries, query_labels, scores, idx)],
                        columns=MATCH_COLUMNS)


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
