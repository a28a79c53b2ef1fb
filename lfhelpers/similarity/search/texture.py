"""Similarity search over texture (and color) features: the found-items gallery as an index.

:class:`TextureIndex` standardises the gallery's features and indexes them;
:meth:`TextureIndex.nearest` finds the most similar gallery photos for a photo from outside the
gallery, :meth:`TextureIndex.leave_one_out` does it for each gallery photo against the others.
The extractor is a :class:`~lfhelpers.similarity.features.texture.HaralickFeatures`, a
:class:`~lfhelpers.similarity.features.color.ColorHistogram`, or their
:class:`~lfhelpers.similarity.features.base.CombinedFeatures`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

from lfhelpers.errors import DataError
from lfhelpers.plots import image_grid
from lfhelpers.similarity.features.base import Extraction
from lfhelpers.similarity.features.texture import HaralickFeatures
from lfhelpers.similarity.search.index import NeighbourIndex


class TextureIndex:
    """The found-items gallery as a nearest-neighbour index of standardised image features.

    Parameters
    ----------
    extractor : HaralickFeatures, ColorHistogram or CombinedFeatures, optional
        Feature extractor (default: ``HaralickFeatures()``); anything with an ``extract``
        method returning an :class:`~lfhelpers.similarity.features.base.Extraction`.
    metric : str
        ``"cosine"`` (the tutorial's choice for similarity) or ``"euclidean"``.

    Attributes
    ----------
    files_ : list of str
        Gallery images that could be read, in input order.
    labels_ : ndarray of str
        Their labels (``""`` when none were given).
    features_ : ndarray
        Their standardised features.
    scaler_ : sklearn.preprocessing.StandardScaler
        Fitted on the gallery.
    index_ : NeighbourIndex
        Nearest-neighbour index over ``features_``.
    extraction_ : Extraction
        The gallery's extraction (time, cache hits, skipped files).
    """

    def __init__(self, extractor: Any = None, metric: str = "cosine"):
        self.extractor = extractor
        self.metric = metric

    def _extractor(self) -> Any:
        return self.extractor if self.extractor is not None else HaralickFeatures()

    def fit(self, files: Sequence[str | os.PathLike[str]],
            labels: Sequence[str] | None = None) -> TextureIndex:
        """Extract, standardise and index the gallery; unreadable images are skipped (logged).

        Returns ``self``.
        """
        files = [os.fspath(f) for f in files]
        extraction = self._extractor().extract(files)
        return self.fit_features(extraction.features,
                                 [f for f, ok in zip(files, extraction.ok, strict=True) if ok],
                                 None if labels is None else
                                 [lab for lab, ok in zip(labels, extraction.ok, strict=True)
                                  if ok],
                                 extraction)

    def fit_features(self, features: np.ndarray, files: Sequence[str],
                     labels: Sequence[str] | None = None,
                     extraction: Extraction | None = None) -> TextureIndex:
        """Index features already extracted (rows aligned with ``files``); returns ``self``."""
        if len(features) < 2:
            raise DataError(f"The gallery needs at least 2 readable images, got {len(features)}.")
        self.files_ = list(files)
        self.labels_ = np.asarray(labels if labels is not None else [""] * len(files), dtype=str)
        self.scaler_ = StandardScaler().fit(features)
        self.features_ = self.scaler_.transform(features)
        self.index_ = NeighbourIndex(metric=self.metric).fit(self.features_)
        self.extraction_ = extraction
        return self

    def _table(self, queries: Sequence[str], query_labels: Sequence[str], dist: np.ndarray,
               idx: np.ndarray) -> pd.DataFrame:
        rows = []
        for q, (query, query_label) in enumerate(zip(queries, query_labels, strict=True)):
            for rank, (d, i) in enumerate(zip(dist[q], idx[q], strict=True), start=1):
                rows.append({"query": query, "query_label": query_label, "rank": rank,
                             "file": self.files_[i], "label": self.labels_[i],
                             "distance": float(d)})
        return pd.DataFrame(rows)

    def nearest(self, query_image: str | os.PathLike[str] | np.ndarray, k: int = 3,
                query_label: str = "") -> pd.DataFrame:
        """The ``k`` gallery images most similar to a photo from outside the gallery.

        Parameters
        ----------
        query_image : path-like or ndarray
            The "lost" photo.
        k : int
            How many similar images.
        query_label : str
            Its label, when known (copied to the table).

        Returns
        -------
        pandas.DataFrame
            Columns ``query, query_label, rank, file, label, distance``; rank 1 is the closest.
        """
        extraction = self._extractor().extract([query_image])  # no bar for one photo
        if not extraction.ok[0]:
            reason = next(iter(extraction.errors.values()))
            raise DataError(f"Cannot read the query image {query_image!r}: {reason}")
        dist, idx = self.index_.kneighbors(self.scaler_.transform(extraction.features), k)
        name = "<array>" if isinstance(query_image, np.ndarray) else os.fspath(query_image)
        return self._table([name], [query_label], dist, idx)

    def leave_one_out(self, k: int = 3, queries: Sequence[int] | None = None) -> pd.DataFrame:
        """Each gallery image against the other n−1: its ``k`` most similar images.

        Parameters
        ----------
        k : int
            Neighbours per query.
        queries : sequence of int, optional
            Gallery positions to report (default: all).

        Returns
        -------
        pandas.DataFrame
            Columns ``query, query_label, rank, file, label, distance``.
        """
        dist, idx = self.index_.kneighbors(None, k)
        positions = np.arange(len(self.files_)) if queries is None else np.asarray(queries)
        return self._table([self.files_[p] for p in positions], self.labels_[positions],
                           dist[positions], idx[positions])


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
        From :meth:`TextureIndex.nearest`, :meth:`TextureIndex.leave_one_out` or
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


def plot_neighbours(neighbours: pd.DataFrame, max_queries: int = 4,
                    suptitle: str | None = None) -> plt.Figure:
    """The tutorial's figure: each query beside its most similar images, one row per query.

    Titles are "original" and "similar 1..k", with each image's label (and distance).

    Parameters
    ----------
    neighbours : pandas.DataFrame
        From :meth:`TextureIndex.nearest` or :meth:`TextureIndex.leave_one_out`.
    max_queries : int
        Rows to draw.
    suptitle : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    paths, titles = [], []
    query_order = list(dict.fromkeys(neighbours["query"]))[:max_queries]
    k = int(neighbours["rank"].max()) if len(neighbours) else 0
    for query in query_order:
        group = neighbours[neighbours["query"] == query].sort_values("rank")
        paths.append(query)
        titles.append(f"original\n{group['query_label'].iloc[0]}")
        for row in group.itertuples():
            paths.append(row.file)
            titles.append(f"similar {row.rank}\n{row.label} ({row.distance:.3f})")
    return image_grid(paths, titles, ncols=k + 1, size=2.2, suptitle=suptitle)
