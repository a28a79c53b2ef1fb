"""Nearest-neighbour search over feature vectors: one index API, distance matrices.

:class:`NeighbourIndex` is the one nearest-neighbour index of the project: texture search
(notebook 05), embedding search and the lost-to-found matcher (notebook 06), retrieval scores
and the ``index``/``search`` commands all use it. Backends behind the same API:

* ``"exact"`` (default): one float matrix product per block of queries (NumPy); exact, and the
  fastest choice up to about 10⁵ vectors;
* ``"sklearn"``: scikit-learn's ``NearestNeighbors`` (brute force); exact, the reference;
* ``"faiss-flat"``: faiss' exact flat index (``pip install faiss-cpu``);
* ``"faiss-hnsw"`` (alias ``"faiss"``, ``"hnsw"``): a faiss HNSW graph; approximate, about
  1 ms per query at 10⁶ vectors, slow to build;
* ``"faiss-ivf"`` (alias ``"ivf"``): a faiss inverted file (k-means cells, ``nprobe`` of them
  searched), vectors stored ``Flat``, ``SQ8`` (1 byte a number) or ``PQ<m>``; approximate,
  quick to build, small;
* ``"hnswlib"`` (``pip install hnswlib``): an hnswlib HNSW graph;
* ``"approx"``: the first installed approximate one; ``"auto"``: exact below
  ``exact_below`` vectors, else IVF (faiss) or HNSW (hnswlib).

The names, what is installed and the faiss / hnswlib code are in
:mod:`lfhelpers.similarity.search.backends`.

Metrics: ``"cosine"`` (vectors are L2-normalised; distance = 1 − cosine similarity) and
``"euclidean"``; ``"sklearn"`` also takes any other scikit-learn metric. Distances are returned
in increasing order; :meth:`NeighbourIndex.search` leaves out one row per query (``exclude``:
the query itself, for leave-one-out) and :meth:`NeighbourIndex.save` / :meth:`NeighbourIndex.load`
keep an index in a folder with its parameters recorded in ``index.json``.

:mod:`lfhelpers.similarity.search.distances` gives the same neighbours from the full ``n × n``
matrix (what the heat-map of notebook 05 shows).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lfhelpers.errors import ConfigError, DataError
from lfhelpers.fsutil import atomic_write
from lfhelpers.similarity.features.base import l2_normalize
from lfhelpers.similarity.search.backends import (
    build_faiss,
    build_hnswlib,
    library_bytes,
    read_library,
    resolve_backend,
    search_library,
    tune_faiss,
    write_library,
)
from lfhelpers.similarity.search.exact import check_k, drop_excluded, exact_search

__all__ = ["NeighbourIndex"]

INDEX_FILE = "index.json"
_FORMAT = 1


class NeighbourIndex:
    """A nearest-neighbour index over feature vectors, with several backends (see module).

    Parameters
    ----------
    metric : str
        ``"cosine"`` or ``"euclidean"`` (any scikit-learn metric with ``backend="sklearn"``).
    backend : str
        ``"exact"``, ``"sklearn"``, ``"faiss-flat"``, ``"faiss-hnsw"`` (``"faiss"``,
        ``"hnsw"``), ``"faiss-ivf"`` (``"ivf"``), ``"hnswlib"``, ``"approx"`` or ``"auto"``.
    n_jobs : int, optional
        Threads of faiss / hnswlib / scikit-learn.
    hnsw_m, ef_construction, ef_search : int
        HNSW links per node and search breadth while building and querying.
    nlist : int, optional
        IVF cells (default about ``4·√n``, at least 1).
    nprobe : int, optional
        IVF cells searched per query (default ``max(8, nlist // 64)``).
    encoding : str
        How IVF stores vectors: ``"Flat"``, ``"SQ8"`` or ``"PQ<m>"`` (faiss factory names);
        ``""``: ``Flat`` below 2 GB of vectors, else ``SQ8``.
    exact_below : int
        ``backend="auto"`` is exact below this many vectors.
    seed : int
        Seeds the IVF training sample and k-means.

    Attributes
    ----------
    backend_ : str
        The backend in use.
    n_items_, dim_ : int
    params_ : dict
        Everything that describes the built index (recorded by :meth:`save`).
    build_seconds_ : float
    """

    def __init__(self, metric: str = "cosine", backend: str = "exact", *,
                 n_jobs: int | None = None, hnsw_m: int = 32, ef_construction: int = 100,
                 ef_search: int = 128, nlist: int | None = None, nprobe: int | None = None,
                 encoding: str = "", exact_below: int = 100_000, seed: int = 0):
        self.metric = metric
        self.backend = backend
        self.n_jobs = n_jobs
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.nlist = nlist
        self.nprobe = nprobe
        self.encoding = encoding
        self.exact_below = exact_below
        self.seed = seed

    # -- building --------------------------------------------------------------------------

    def _prepare(self, x: np.ndarray, dtype: Any = None) -> np.ndarray:
        x = np.asarray(x)
        if dtype is None:
            dtype = np.float64 if x.dtype == np.float64 else np.float32
        x = np.ascontiguousarray(x, dtype=dtype)
        return l2_normalize(x, dtype=None) if self.metric == "cosine" else x

    def fit(self, features: np.ndarray) -> NeighbourIndex:
        """Index the rows of ``features``; returns ``self``."""
        features = np.asarray(features)
        if features.ndim != 2 or len(features) < 1 or not np.isfinite(features).all():
            raise DataError(f"Need finite feature vectors as an (n, d) array, got shape "
                            f"{features.shape}.")
        start = time.perf_counter()
        n, d = features.shape
        self.backend_ = resolve_backend(self.backend, n, self.exact_below)
        if self.backend_ not in ("exact", "sklearn") and self.metric not in (
                "cosine", "euclidean"):
            raise ConfigError(f"metric {self.metric!r} needs backend 'exact' or 'sklearn'.")
        if self.backend_ == "exact" and self.metric not in ("cosine", "euclidean"):
            self.backend_ = "sklearn"
        self.n_items_, self.dim_ = n, d
        self.params_: dict[str, Any] = {"backend": self.backend_, "metric": self.metric}
        self._build(features)
        self.build_seconds_ = time.perf_counter() - start
        return self

    def _build(self, features: np.ndarray) -> None:
        self.vectors_: np.ndarray | None = None
        self.index_: Any = None
        if self.backend_ == "exact":
            self.vectors_ = self._prepare(features)
            if self.metric == "euclidean":
                self._sq = np.einsum("ij,ij->i", self.vectors_, self.vectors_)
        elif self.backend_ == "sklearn":
            from sklearn.neighbors import NearestNeighbors

            self.vectors_ = self._prepare(features, np.float64)
            self.index_ = NearestNeighbors(metric=self.metric, algorithm="brute",
                                           n_jobs=self.n_jobs).fit(self.vectors_)
        elif self.backend_ == "hnswlib":
            self.index_, params = build_hnswlib(
                self._prepare(features, np.float32), self.metric, hnsw_m=self.hnsw_m,
                ef_construction=self.ef_construction, ef_search=self.ef_search, seed=self.seed,
                n_jobs=self.n_jobs)
            self.params_.update(params)
        else:
            self.index_, params = build_faiss(
                self._prepare(features, np.float32), self.backend_, self.metric,
                hnsw_m=self.hnsw_m, ef_construction=self.ef_construction, nlist=self.nlist,
                encoding=self.encoding, seed=self.seed, n_jobs=self.n_jobs)
            self.params_.update(params)
            self._tune()

    def _tune(self) -> None:
        """Set the query-time parameters on the built or loaded faiss index."""
        self.params_.update(tune_faiss(self.index_, self.backend_, self.params_,
                                       ef_search=self.ef_search, nprobe=self.nprobe,
                                       n_jobs=self.n_jobs))

    # -- searching -------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "backend_"):
            raise DataError("The index is empty: call fit(features) first.")

    def search(self, queries: np.ndarray, k: int = 10,
               exclude: Sequence[int] | np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest indexed rows of each query.

        Parameters
        ----------
        queries : ndarray of shape (m, d)
            Query vectors (normalised here for ``"cosine"``).
        k : int
            Neighbours per query.
        exclude : sequence of int, optional
            One indexed row per query to leave out (``-1``: none), e.g. the query itself.

        Returns
        -------
        distances, indices : ndarray of shape (m, k)
            Increasing distance (cosine: ``1 − similarity``). When fewer than ``k`` are found
            (approximate backends), the missing entries are ``inf`` and ``-1``.
        """
        self._check_fitted()
        queries = np.atleast_2d(np.asarray(queries))
        if queries.ndim != 2 or queries.shape[1] != self.dim_:
            raise DataError(f"Queries must be (m, {self.dim_}) vectors, got shape "
                            f"{queries.shape}.")
        ex = None if exclude is None else np.asarray(exclude, dtype=np.int64).reshape(-1)
        if ex is not None and len(ex) != len(queries):
            raise DataError(f"exclude has {len(ex)} entries for {len(queries)} queries.")
        check_k(k, self.n_items_ - (1 if ex is not None and (ex >= 0).any() else 0))
        if self.backend_ == "exact":
            return exact_search(self._prepare(queries, self.vectors_.dtype), self.vectors_, k,
                                self.metric, ex, data_sq=getattr(self, "_sq", None))
        want = min(k + (0 if ex is None else 1), self.n_items_)
        if self.backend_ == "sklearn":
            dist, idx = self.index_.kneighbors(self._prepare(queries, np.float64), want)
        else:
            dist, idx = search_library(self.index_, self.backend_,
                                       self._prepare(queries, np.float32), want, self.metric,
                                       ef_search=self.ef_search, n_jobs=self.n_jobs)
        return drop_excluded(np.asarray(dist), np.asarray(idx, np.int64), ex, k)

    def kneighbors(self, queries: np.ndarray | None = None,
                   k: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """Find the ``k`` nearest indexed items (scikit-learn style).

        Parameters
        ----------
        queries : ndarray of shape (m, d), optional
            Feature vectors from outside the index. ``None`` queries every indexed item
            against the others (an item is not its own neighbour); needs a backend that keeps
            the vectors (``exact``, ``sklearn``) or ``faiss-flat``.
        k : int
            Neighbours per query.

        Returns
        -------
        distances, indices : ndarray of shape (m, k)
            Sorted by increasing distance; ``indices`` are rows of the fitted features.
        """
        self._check_fitted()
        if queries is not None:
            return self.search(queries, k)
        check_k(k, self.n_items_ - 1)
        return self.search(self.reconstruct(), k, exclude=np.arange(self.n_items_))

    def reconstruct(self) -> np.ndarray:
        """The indexed vectors (normalised for cosine), from backends that keep them."""
        self._check_fitted()
        if self.vectors_ is not None:
            return self.vectors_
        if self.backend_ in ("faiss-flat", "faiss-hnsw"):
            return self.index_.reconstruct_n(0, self.n_items_)
        raise ConfigError(f"backend {self.backend_!r} does not keep the vectors; pass queries.")

    def similarity(self, distances: np.ndarray) -> np.ndarray:
        """Distances turned into scores where higher is better (cosine: the similarity)."""
        d = np.asarray(distances, np.float32)
        return 1.0 - d if self.metric == "cosine" else -d

    # -- saving ----------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the index and its parameters (``index.json``) into ``folder``; returns it."""
        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.backend_ in ("exact", "sklearn"):
            data_file = "vectors.npy"
            with atomic_write(folder / data_file, "wb") as fh:
                np.save(fh, self.vectors_)
        else:
            data_file = write_library(self.index_, self.backend_, folder)
        info = {"format": _FORMAT, "n_items": self.n_items_, "dim": self.dim_,
                "data_file": data_file, "build_seconds": round(self.build_seconds_, 3),
                "params": self.params_,
                "constructor": {k: getattr(self, k) for k in (
                    "metric", "backend", "n_jobs", "hnsw_m", "ef_construction", "ef_search",
                    "nlist", "nprobe", "encoding", "exact_below", "seed")}}
        with atomic_write(folder / INDEX_FILE) as fh:
            json.dump(info, fh, indent=2)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> NeighbourIndex:
        """An index written by :meth:`save`.

        Raises
        ------
        DataError
            When ``folder`` holds no index.
        """
        folder = Path(folder)
        try:
            info = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{folder} holds no readable index ({INDEX_FILE}): {exc}. Build "
                            "one with `python -m lfhelpers index`.") from exc
        self = cls(**info["constructor"])
        self.backend_ = info["params"]["backend"]
        self.params_ = dict(info["params"])
        self.n_items_, self.dim_ = int(info["n_items"]), int(info["dim"])
        self.build_seconds_ = float(info.get("build_seconds", 0.0))
        self.vectors_, self.index_ = None, None
        data = folder / info["data_file"]
        if self.backend_ in ("exact", "sklearn"):
            self._build(np.load(data))
        else:
            self.index_ = read_library(data, self.backend_, self.metric, dim=self.dim_,
                                       n_items=self.n_items_, ef_search=self.ef_search)
            self._tune()
        return self

    def memory_bytes(self) -> int:
        """Size of the index data (vectors or the serialised faiss/hnswlib structure)."""
        self._check_fitted()
        if self.vectors_ is not None:
            return int(self.vectors_.nbytes)
        return library_bytes(self.index_, self.backend_, dim=self.dim_, n_items=self.n_items_,
                             hnsw_m=self.hnsw_m)
