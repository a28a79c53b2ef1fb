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
from lfhelpers.similarity.search.exact import check_k, drop_excluded, exact_search

__all__ = ["NeighbourIndex", "available_backends", "resolve_backend"]

#: Approximate backends, in order of preference for ``backend="approx"``.
APPROX_BACKENDS = ("faiss-hnsw", "faiss-ivf", "hnswlib")
BACKENDS = ("exact", "sklearn", "faiss-flat", *APPROX_BACKENDS)
ALIASES = {"faiss": "faiss-hnsw", "hnsw": "faiss-hnsw", "ivf": "faiss-ivf", "flat": "faiss-flat"}
#: Libraries each backend needs (and the pip package that has it).
_LIBRARY = {"faiss-flat": ("faiss", "faiss-cpu"), "faiss-hnsw": ("faiss", "faiss-cpu"),
            "faiss-ivf": ("faiss", "faiss-cpu"), "hnswlib": ("hnswlib", "hnswlib")}
INDEX_FILE = "index.json"
_FORMAT = 1


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def available_backends() -> list[str]:
    """Backends usable here: the exact ones, and those whose library imports."""
    return [b for b in BACKENDS if b not in _LIBRARY or _importable(_LIBRARY[b][0])]


def resolve_backend(backend: str, n: int = 0, exact_below: int = 100_000) -> str:
    """The concrete backend a ``backend`` parameter means for ``n`` vectors.

    Raises
    ------
    ConfigError
        For an unknown name, or one whose library is not installed.
    """
    name = ALIASES.get(str(backend).lower(), str(backend).lower())
    found = available_backends()
    if name == "auto":
        if n < exact_below:
            return "faiss-flat" if "faiss-flat" in found else "exact"
        name = "approx"
    if name == "approx":
        approx = [b for b in ("faiss-ivf", "faiss-hnsw", "hnswlib") if b in found]
        if not approx:
            raise ConfigError("An approximate index needs faiss or hnswlib: pip install "
                              "faiss-cpu (or hnswlib), or use backend='exact'.")
        return approx[0]
    if name not in BACKENDS:
        raise ConfigError(f"Unknown backend {backend!r}; use one of {BACKENDS}, "
                          f"{sorted(ALIASES)}, 'approx' or 'auto'.")
    if name not in found:
        raise ConfigError(f"backend={name!r} is not installed: pip install "
                          f"{_LIBRARY[name][1]}, or use 'exact'.")
    return name


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
            self.index_ = self._build_hnswlib(self._prepare(features, np.float32))
        else:
            self.index_ = self._build_faiss(self._prepare(features, np.float32))

    def _faiss(self) -> Any:
        import faiss

        if self.n_jobs:
            faiss.omp_set_num_threads(int(self.n_jobs))
        return faiss

    def _build_faiss(self, x: np.ndarray) -> Any:
        faiss = self._faiss()
        n, d = x.shape
        metric = faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2
        if self.backend_ == "faiss-flat":
            index = faiss.IndexFlat(d, metric)
        elif self.backend_ == "faiss-hnsw":
            index = faiss.IndexHNSWFlat(d, int(self.hnsw_m), metric)
            index.hnsw.efConstruction = int(self.ef_construction)
            self.params_.update(hnsw_m=int(self.hnsw_m),
                                ef_construction=int(self.ef_construction))
        else:
            nlist = int(self.nlist or max(1, min(int(4 * np.sqrt(n)), n // 39 or 1)))
            encoding = self.encoding or ("Flat" if n * d * 4 < 2 * 1024**3 else "SQ8")
            index = faiss.index_factory(d, f"IVF{nlist},{encoding}", metric)
            rng = np.random.default_rng(self.seed)
            train = x if n <= 64 * nlist else x[np.sort(rng.choice(n, 64 * nlist,
                                                                   replace=False))]
            faiss.extract_index_ivf(index).cp.seed = int(self.seed)
            index.train(train)
            self.params_.update(nlist=nlist, encoding=encoding, n_train=len(train))
        index.add(x)
        self._tune(index)
        return index

    def _tune(self, index: Any) -> None:
        """Set the query-time parameters on a built or loaded faiss index."""
        if self.backend_ == "faiss-hnsw":
            index.hnsw.efSearch = int(self.ef_search)
            self.params_["ef_search"] = int(self.ef_search)
        elif self.backend_ == "faiss-ivf":
            nlist = int(self.params_["nlist"])
            nprobe = int(self.nprobe or min(nlist, max(8, nlist // 64)))
            self._faiss().extract_index_ivf(index).nprobe = nprobe
            self.params_["nprobe"] = nprobe

    def _build_hnswlib(self, x: np.ndarray) -> Any:
        import hnswlib

        index = hnswlib.Index(space="ip" if self.metric == "cosine" else "l2", dim=x.shape[1])
        index.init_index(max_elements=len(x), ef_construction=int(self.ef_construction),
                         M=int(self.hnsw_m), random_seed=int(self.seed))
        index.add_items(x, np.arange(len(x)), num_threads=self.n_jobs or -1)
        index.set_ef(int(self.ef_search))
        self.params_.update(hnsw_m=int(self.hnsw_m), ef_construction=int(self.ef_construction),
                            ef_search=int(self.ef_search))
        return index

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
        elif self.backend_ == "hnswlib":
            self.index_.set_ef(max(int(self.ef_search), want))
            idx, dist = self.index_.knn_query(self._prepare(queries, np.float32), k=want,
                                              num_threads=self.n_jobs or -1)
            idx = idx.astype(np.int64)
            dist = np.sqrt(np.maximum(dist, 0)) if self.metric == "euclidean" else dist
        else:
            if self.backend_ == "faiss-hnsw":
                self.index_.hnsw.efSearch = max(int(self.ef_search), want)
            self._faiss()
            sims, idx = self.index_.search(self._prepare(queries, np.float32), want)
            dist = (1.0 - sims if self.metric == "cosine"
                    else np.sqrt(np.maximum(sims, 0)))
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
        elif self.backend_ == "hnswlib":
            data_file = "index.hnswlib"
            tmp = folder / f".{data_file}.tmp"
            self.index_.save_index(str(tmp))
            os.replace(tmp, folder / data_file)
        else:
            data_file = "index.faiss"
            with atomic_write(folder / data_file, "wb") as fh:
                fh.write(self._faiss().serialize_index(self.index_).tobytes())
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
        elif self.backend_ == "hnswlib":
            import hnswlib

            self.index_ = hnswlib.Index(space="ip" if self.metric == "cosine" else "l2",
                                        dim=self.dim_)
            self.index_.load_index(str(data), max_elements=self.n_items_)
            self.index_.set_ef(int(self.ef_search))
        else:
            faiss = self._faiss()
            self.index_ = faiss.deserialize_index(np.fromfile(data, dtype=np.uint8))
            self._tune(self.index_)
        return self

    def memory_bytes(self) -> int:
        """Size of the index data (vectors or the serialised faiss/hnswlib structure)."""
        self._check_fitted()
        if self.vectors_ is not None:
            return int(self.vectors_.nbytes)
        if self.backend_ == "hnswlib":
            per = self.dim_ * 4 + self.hnsw_m * 2 * 4 + 16
            return int(self.n_items_ * per)
        return int(self._faiss().serialize_index(self.index_).nbytes)
