"""The found-items gallery: vectors with their paths and labels, searched by photo or vector.

"Which found items could be this person's lost item?" The found-items photos are the
*gallery*; a lost item's photo is a *query*. :class:`GalleryIndex`, whatever makes the vectors,
keeps the gallery's paths and labels beside a scaling step fitted on the gallery
(:mod:`lfhelpers.similarity.search.scaling`) and a
:class:`~lfhelpers.similarity.search.index.NeighbourIndex` (any of its backends):
``scaling="unit"`` and post-processing for CNN embeddings (notebook 06, the matcher, the
``search`` command), ``scaling="standardize"`` for hand-made texture and colour features
(notebook 05, :meth:`GalleryIndex.for_features`). It answers ``query(photo)`` with ranked
``Match(path, label, score)``, and with the tables of :mod:`lfhelpers.similarity.search.tables`.
:meth:`GalleryIndex.save` / :meth:`GalleryIndex.load` keep it in a folder (the index, its
parameters, ``items.csv`` with the paths and labels, the scaling step, how the vectors were made).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from lfhelpers.errors import ConfigError, DataError
from lfhelpers.fsutil import atomic_write
from lfhelpers.similarity.search.index import NeighbourIndex
from lfhelpers.similarity.search.postprocess import Postprocessor, parse_steps
from lfhelpers.similarity.search.scaling import (
    fit_scaler,
    load_scaler,
    make_scaler,
    save_scaler,
    scaling_of,
)
from lfhelpers.similarity.search.tables import match_table, neighbour_table

__all__ = ["GalleryIndex", "Match"]

ITEMS_FILE = "items.csv"
EMBEDDING_FILE = "embedding.json"


class Match(NamedTuple):
    """One gallery photo proposed for a query."""

    path: str
    label: str
    score: float


def _is_paths(queries: Any) -> bool:
    if isinstance(queries, str | os.PathLike):
        return True
    return (isinstance(queries, Sequence | pd.Series) and len(queries) > 0
            and isinstance(list(queries)[0], str | os.PathLike))


class GalleryIndex:
    """A searchable gallery of found-item photos: a scaling step, then a neighbour index.

    Parameters
    ----------
    backend : str
        Any backend of :class:`~lfhelpers.similarity.search.index.NeighbourIndex` (``"exact"``,
        ``"sklearn"``, ``"faiss"``, ``"hnswlib"``, ``"ivf"``, ``"approx"``, ``"auto"``, ...).
    embedder : Embedder or feature extractor, optional
        Turns image paths into vectors, for :meth:`fit_files` and photo queries: an
        :class:`~lfhelpers.similarity.features.cnn.Embedder`, ``HaralickFeatures``,
        ``ColorHistogram``, their union; anything with ``extract`` and ``transform``.
    hnsw_m, ef_construction, ef_search : int
        HNSW parameters (approximate backends).
    n_jobs : int, optional
        Threads of the index libraries.
    center : bool
        Subtract the gallery's mean unit vector from gallery and query vectors before the
        cosine search (the ``center`` step of ``postprocess``): what every photo shares stops
        counting as similarity (+0.01 to +0.02 P@5 on categories the network was not trained
        on, ``benchmarks/bench_retrieval.py``).
    postprocess : str or sequence of str
        Vector post-processing (:class:`~lfhelpers.similarity.search.postprocess.Postprocessor`,
        e.g. ``"center+dba+aqe"``): the gallery-side steps are fitted here and kept with
        :meth:`save`, ``aqe`` runs on every query, so searching a photo later gives the numbers
        the benchmark measured.
    scaling : {"unit", "standardize"}
        The scaling step fitted on the gallery (:mod:`lfhelpers.similarity.search.scaling`):
        ``"unit"`` (CNN embeddings) L2-normalises and applies ``postprocess``;
        ``"standardize"`` (hand-made features) z-scores every feature and takes no
        ``postprocess`` steps.
    metric : str
        ``"cosine"`` or ``"euclidean"`` (of the scaled vectors).
    **index_params
        Other :class:`NeighbourIndex` parameters (``nlist``, ``nprobe``, ``encoding``, ...).

    Attributes
    ----------
    index_ : NeighbourIndex
    backend_ : str
        The backend in use.
    paths_ : list of str
    labels_ : ndarray of str
    n_items_ : int
    scaler_ : Postprocessor or sklearn.preprocessing.StandardScaler
        The fitted scaling step; queries go through ``scaler_.transform``.
    features_ : ndarray or None
        The gallery after the scaling step, as the index was built from it (``None`` after
        :meth:`load`: use :attr:`vectors_`).
    mean_ : ndarray of shape (d,) or None
        The gallery mean subtracted (``center`` step).
    extraction_ : Extraction or None
        The gallery's extraction (time, cache hits, skipped files), after :meth:`fit_files`.
    """

    def __init__(self, backend: str = "exact", embedder: Any = None, hnsw_m: int = 32,
                 ef_construction: int = 100, ef_search: int = 128, n_jobs: int | None = None,
                 center: bool = False, postprocess: str | Sequence[str] = "",
                 scaling: str = "unit", metric: str = "cosine", **index_params: Any):
        self.backend = backend
        self.embedder = embedder
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.n_jobs = n_jobs
        self.center = center
        self.postprocess = postprocess
        self.scaling = scaling
        self.metric = metric
        self.index_params = index_params

    @classmethod
    def for_features(cls, extractor: Any, metric: str = "cosine", **params: Any) -> GalleryIndex:
        """A gallery of hand-made features, standardised on the gallery (notebook 05).

        Parameters
        ----------
        extractor : HaralickFeatures, ColorHistogram or their union
            Makes the vectors of :meth:`fit_files`, :meth:`nearest` and photo queries.
        metric : str
            ``"cosine"`` (the tutorial's choice for similarity) or ``"euclidean"``.
        **params
            Other :class:`GalleryIndex` parameters (``backend``, ...).
        """
        return cls(embedder=extractor, scaling="standardize", metric=metric, **params)

    def fit(self, vectors: np.ndarray, paths: Sequence[str] | None = None,
            labels: Sequence[str] | None = None) -> GalleryIndex:
        """Index gallery vectors (rows aligned with ``paths`` and ``labels``); returns self."""
        scaler = make_scaler(self.scaling, parse_steps(self.postprocess) + (
            ["center"] if self.center else []))
        unit = isinstance(scaler, Postprocessor)
        vectors = np.atleast_2d(np.asarray(vectors, np.float32) if unit else np.asarray(vectors))
        least = 1 if unit else 2  # a standard deviation needs two rows
        if vectors.ndim != 2 or len(vectors) < least or not np.isfinite(vectors).all():
            raise DataError(f"The gallery needs at least {least} finite vector(s) as an (n, d) "
                            f"array, got shape {np.shape(vectors)}.")
        n = len(vectors)
        self.paths_ = [os.fspath(p) for p in paths] if paths is not None else [
            str(i) for i in range(n)]
        self.labels_ = np.asarray(list(labels) if labels is not None else [""] * n, dtype=str)
        if len(self.paths_) != n or len(self.labels_) != n:
            raise DataError(f"{n} vectors but {len(self.paths_)} paths and {len(self.labels_)} "
                            "labels; they must be aligned.")
        self.features_ = fit_scaler(scaler, vectors)
        self.scaler_ = scaler
        self.mean_ = scaler.mean_ if unit else None
        self.index_ = NeighbourIndex(self.metric, self.backend, n_jobs=self.n_jobs,
                                     hnsw_m=self.hnsw_m, ef_construction=self.ef_construction,
                                     ef_search=self.ef_search, **self.index_params
                                     ).fit(self.features_)
        self.backend_ = self.index_.backend_
        self.n_items_ = n
        self.extraction_ = None
        return self

    def fit_files(self, paths: Sequence[str | os.PathLike[str]],
                  labels: Sequence[str] | None = None) -> GalleryIndex:
        """Extract gallery photos with ``embedder`` and index them; returns self.

        Unreadable photos are skipped (and logged); :attr:`extraction_` says which.
        """
        if self.embedder is None:
            raise ConfigError("fit_files needs an embedder: GalleryIndex(embedder=Embedder()) "
                              "or GalleryIndex.for_features(HaralickFeatures()).")
        paths = [os.fspath(p) for p in paths]
        result = self.embedder.extract(paths)
        kept = [p for p, ok in zip(paths, result.ok, strict=True) if ok]
        kept_labels = None if labels is None else [
            lab for lab, ok in zip(labels, result.ok, strict=True) if ok]
        self.fit(result.features, kept, kept_labels)
        self.extraction_ = result
        return self

    @property
    def vectors_(self) -> np.ndarray:
        """The gallery's vectors as indexed (unit rows for cosine), where the backend keeps them."""
        self._check_fitted()
        return self.index_.reconstruct()

    def _check_fitted(self) -> None:
        if not hasattr(self, "index_"):
            raise DataError("The gallery index is empty: call fit(vectors, paths, labels) "
                            "first.")

    def _as_vectors(self, queries: Any) -> np.ndarray:
        if _is_paths(queries):
            if isinstance(queries, str | os.PathLike):
                queries = [queries]
            if self.embedder is None:
                raise ConfigError("Querying by image path needs an embedder: "
                                  "GalleryIndex(embedder=Embedder()).")
            vectors = self.embedder.transform(list(queries))
        else:
            vectors = queries
        return self.scaler_.transform(np.atleast_2d(np.asarray(vectors)))

    def search(self, queries: Any, k: int = 10,
               exclude: Sequence[int] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar gallery rows of each query.

        Parameters
        ----------
        queries : ndarray of shape (m, d), or image path(s)
            Query vectors (scaled here), or photos (extracted with ``embedder``).
        k : int
            Matches per query.
        exclude : sequence of int, optional
            One gallery row per query to leave out (``-1`` for none): a gallery photo used as
            a query is not its own match.

        Returns
        -------
        scores, indices : ndarray of shape (m, k)
            Similarity, highest first (cosine similarity; ``-distance`` for euclidean), and
            gallery rows. When an approximate index finds fewer than ``k``, the missing entries
            are ``-inf`` and ``-1``.
        """
        self._check_fitted()
        dist, idx = self.index_.search(self._as_vectors(queries), k, exclude)
        return self.index_.similarity(dist), idx

    def query(self, query: Any, k: int = 10) -> list[Match]:
        """Ranked matches of one photo (path) or vector: ``[Match(path, label, score), ...]``."""
        scores, idx = self.search(query, k)
        return [Match(self.paths_[i], str(self.labels_[i]), float(s))
                for s, i in zip(scores[0], idx[0], strict=True) if i >= 0]

    def query_table(self, queries: Any, k: int = 10, query_paths: Sequence[str] | None = None,
                    query_labels: Sequence[str] | None = None,
                    exclude: Sequence[int] | np.ndarray | None = None) -> pd.DataFrame:
        """Matches of many queries as one match table.

        Parameters
        ----------
        queries : ndarray or sequence of paths
            Query vectors or photos.
        k : int
            Matches per query.
        query_paths, query_labels : sequence of str, optional
            Shown in the table (the paths default to ``queries`` when those are paths).
        exclude : sequence of int, optional
            See :meth:`search`.

        Returns
        -------
        pandas.DataFrame
            Columns ``query, query_label, rank, path, label, score, correct`` (``correct``:
            same label as the query).
        """
        scores, idx = self.search(queries, k, exclude)
        if query_paths is None:
            query_paths = ([os.fspath(q) for q in queries] if _is_paths(queries)
                           and not isinstance(queries, str | os.PathLike)
                           else [os.fspath(queries)] if _is_paths(queries)
                           else [f"query {i}" for i in range(len(idx))])
        query_labels = [""] * len(idx) if query_labels is None else list(query_labels)
        return match_table(query_paths, query_labels, scores, idx, self.paths_, self.labels_)

    def nearest(self, query_image: str | os.PathLike[str] | np.ndarray, k: int = 3,
                query_label: str = "") -> pd.DataFrame:
        """The ``k`` gallery images nearest to a photo from outside the gallery.

        Parameters
        ----------
        query_image : path-like or ndarray
            The "lost" photo (a path, or the image as an array).
        k : int
            How many similar images.
        query_label : str
            Its label, when known (copied to the table).

        Returns
        -------
        pandas.DataFrame
            A neighbour table: ``query, query_label, rank, file, label, distance``; rank 1 is
            the closest.

        Raises
        ------
        DataError
            When the photo cannot be read.
        """
        self._check_fitted()
        if self.embedder is None:
            raise ConfigError("nearest needs an embedder: GalleryIndex(embedder=...).")
        extraction = self.embedder.extract([query_image])  # no bar for one photo
        if not extraction.ok[0]:
            reason = next(iter(extraction.errors.values()))
            raise DataError(f"Cannot read the query image {query_image!r}: {reason}")
        dist, idx = self.index_.search(self.scaler_.transform(extraction.features), k)
        name = "<array>" if isinstance(query_image, np.ndarray) else os.fspath(query_image)
        return neighbour_table([name], [query_label], dist, idx, self.paths_, self.labels_)

    def leave_one_out(self, k: int = 3, queries: Sequence[int] | None = None) -> pd.DataFrame:
        """Each gallery image against the other n−1: its ``k`` nearest images.

        Parameters
        ----------
        k : int
            Neighbours per query.
        queries : sequence of int, optional
            Gallery positions to report (default: all).

        Returns
        -------
        pandas.DataFrame
            A neighbour table: ``query, query_label, rank, file, label, distance``.

        Raises
        ------
        ConfigError
            With ``dba`` or ``aqe``: a gallery row would see itself through them
            (:func:`~lfhelpers.similarity.search.postprocess.postprocess` with
            ``queries=None`` leaves it out honestly).
        """
        self._check_fitted()
        steps = getattr(self.scaler_, "steps_", [])
        if {"dba", "aqe"} & set(steps):
            raise ConfigError(f"leave_one_out cannot leave a photo out of {steps}; use "
                              "lfhelpers.similarity.search.postprocess.postprocess(gallery).")
        dist, idx = self.index_.kneighbors(None, k)
        positions = np.arange(self.n_items_) if queries is None else np.asarray(queries)
        return neighbour_table([self.paths_[p] for p in positions], self.labels_[positions],
                               dist[positions], idx[positions], self.paths_, self.labels_)

    # -- saving ----------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike[str],
             embedding: dict[str, Any] | None = None) -> Path:
        """Write the index, ``items.csv`` (path, label), the scaling step and the embedding.

        Parameters
        ----------
        folder : path-like
        embedding : dict, optional
            What made the vectors (backbone, weights, image size, pooling, post-processing),
            so that :meth:`load` can embed query photos the same way.

        Returns
        -------
        pathlib.Path
        """
        self._check_fitted()
        folder = self.index_.save(folder)
        with atomic_write(folder / ITEMS_FILE) as fh:
            pd.DataFrame({"path": self.paths_, "label": self.labels_}).to_csv(fh, index=False)
        if embedding is not None:
            with atomic_write(folder / EMBEDDING_FILE) as fh:
                json.dump(embedding, fh, indent=2)
        save_scaler(self.scaler_, folder)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str], embedder: Any = None) -> GalleryIndex:
        """A gallery written by :meth:`save` (``embedder``: for photo queries)."""
        folder = Path(folder)
        index = NeighbourIndex.load(folder)
        items = pd.read_csv(folder / ITEMS_FILE, dtype=str, keep_default_na=False)
        if len(items) != index.n_items_:
            raise DataError(f"{folder}: {ITEMS_FILE} has {len(items)} rows for an index of "
                            f"{index.n_items_} vectors; rebuild the index.")
        scaler = load_scaler(folder, index)
        unit = isinstance(scaler, Postprocessor)
        self = cls(backend=index.backend_, embedder=embedder, scaling=scaling_of(scaler),
                   metric=index.metric, postprocess="+".join(scaler.steps_) if unit else "",
                   center=unit and "center" in scaler.steps_)
        self.index_, self.backend_, self.n_items_ = index, index.backend_, index.n_items_
        self.paths_ = items["path"].tolist()
        self.labels_ = items["label"].to_numpy(dtype=str)
        spec = folder / EMBEDDING_FILE
        self.embedding_ = (json.loads(spec.read_text(encoding="utf-8")) if spec.is_file()
                           else {})
        self.scaler_, self.mean_ = scaler, scaler.mean_ if unit else None
        self.features_, self.extraction_ = None, None
        return self
