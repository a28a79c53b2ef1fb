"""The libraries behind :class:`~lfhelpers.similarity.search.index.NeighbourIndex`.

Which backends exist and are installed (:func:`available_backends`), what a ``backend``
parameter means (:func:`resolve_backend`: aliases, ``"approx"``, ``"auto"``), and the faiss and
hnswlib indexes: built, tuned, searched, written, read and measured here, so that the index
itself keeps only the exact backends (NumPy, scikit-learn) and what every backend shares.

* faiss (``pip install faiss-cpu``): ``"faiss-flat"`` (exact), ``"faiss-hnsw"`` (an HNSW
  graph), ``"faiss-ivf"`` (an inverted file of k-means cells, vectors ``Flat``, ``SQ8`` or
  ``PQ<m>``);
* hnswlib (``pip install hnswlib``): ``"hnswlib"`` (an HNSW graph).

Vectors reach these functions prepared (float32, L2-normalised for ``"cosine"``); distances
come back as :meth:`NeighbourIndex.search` returns them (cosine: ``1 − similarity``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from lfhelpers.errors import ConfigError
from lfhelpers.fsutil import atomic_write

__all__ = ["ALIASES", "APPROX_BACKENDS", "BACKENDS", "available_backends", "resolve_backend"]

#: Approximate backends, in order of preference for ``backend="approx"``.
APPROX_BACKENDS = ("faiss-hnsw", "faiss-ivf", "hnswlib")
BACKENDS = ("exact", "sklearn", "faiss-flat", *APPROX_BACKENDS)
ALIASES = {"faiss": "faiss-hnsw", "hnsw": "faiss-hnsw", "ivf": "faiss-ivf", "flat": "faiss-flat"}
#: Libraries each backend needs (and the pip package that has it).
LIBRARY = {"faiss-flat": ("faiss", "faiss-cpu"), "faiss-hnsw": ("faiss", "faiss-cpu"),
           "faiss-ivf": ("faiss", "faiss-cpu"), "hnswlib": ("hnswlib", "hnswlib")}


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def available_backends() -> list[str]:
    """Backends usable here: the exact ones, and those whose library imports."""
    return [b for b in BACKENDS if b not in LIBRARY or _importable(LIBRARY[b][0])]


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
                          f"{LIBRARY[name][1]}, or use 'exact'.")
    return name


# -- faiss ---------------------------------------------------------------------------------


def faiss_module(n_jobs: int | None = None) -> Any:
    """faiss, with its OpenMP threads set to ``n_jobs`` when given."""
    import faiss

    if n_jobs:
        faiss.omp_set_num_threads(int(n_jobs))
    return faiss


def build_faiss(x: np.ndarray, backend: str, metric: str, *, hnsw_m: int,
                ef_construction: int, nlist: int | None, encoding: str, seed: int,
                n_jobs: int | None) -> tuple[Any, dict[str, Any]]:
    """A faiss index of the prepared rows ``x``, and the parameters it was built with.

    ``nlist`` defaults to about ``4·√n`` cells; ``encoding`` ``""`` means ``Flat`` below 2 GB
    of vectors, else ``SQ8``. Call :func:`tune_faiss` before searching.
    """
    faiss = faiss_module(n_jobs)
    n, d = x.shape
    params: dict[str, Any] = {}
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    if backend == "faiss-flat":
        index = faiss.IndexFlat(d, faiss_metric)
    elif backend == "faiss-hnsw":
        index = faiss.IndexHNSWFlat(d, int(hnsw_m), faiss_metric)
        index.hnsw.efConstruction = int(ef_construction)
        params.update(hnsw_m=int(hnsw_m), ef_construction=int(ef_construction))
    else:
        nlist = int(nlist or max(1, min(int(4 * np.sqrt(n)), n // 39 or 1)))
        encoding = encoding or ("Flat" if n * d * 4 < 2 * 1024**3 else "SQ8")
        index = faiss.index_factory(d, f"IVF{nlist},{encoding}", faiss_metric)
        rng = np.random.default_rng(seed)
        train = x if n <= 64 * nlist else x[np.sort(rng.choice(n, 64 * nlist, replace=False))]
        faiss.extract_index_ivf(index).cp.seed = int(seed)
        index.train(train)
        params.update(nlist=nlist, encoding=encoding, n_train=len(train))
    index.add(x)
    return index, params


def tune_faiss(index: Any, backend: str, params: dict[str, Any], *, ef_search: int,
               nprobe: int | None, n_jobs: int | None) -> dict[str, Any]:
    """Set the query-time parameters on a built or loaded faiss index; returns them.

    Nothing is set (and ``{}`` returned) for the other backends.
    """
    if backend == "faiss-hnsw":
        index.hnsw.efSearch = int(ef_search)
        return {"ef_search": int(ef_search)}
    if backend == "faiss-ivf":
        nlist = int(params["nlist"])
        probe = int(nprobe or min(nlist, max(8, nlist // 64)))
        faiss_module(n_jobs).extract_index_ivf(index).nprobe = probe
        return {"nprobe": probe}
    return {}


# -- hnswlib -------------------------------------------------------------------------------


def build_hnswlib(x: np.ndarray, metric: str, *, hnsw_m: int, ef_construction: int,
                  ef_search: int, seed: int, n_jobs: int | None) -> tuple[Any, dict[str, Any]]:
    """An hnswlib graph of the prepared rows ``x``, and the parameters it was built with."""
    import hnswlib

    index = hnswlib.Index(space="ip" if metric == "cosine" else "l2", dim=x.shape[1])
    index.init_index(max_elements=len(x), ef_construction=int(ef_construction), M=int(hnsw_m),
                     random_seed=int(seed))
    index.add_items(x, np.arange(len(x)), num_threads=n_jobs or -1)
    index.set_ef(int(ef_search))
    return index, {"hnsw_m": int(hnsw_m), "ef_construction": int(ef_construction),
                   "ef_search": int(ef_search)}


# -- both libraries ------------------------------------------------------------------------


def search_library(index: Any, backend: str, x: np.ndarray, want: int, metric: str, *,
                   ef_search: int, n_jobs: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The ``want`` nearest rows of the prepared queries ``x`` (distances, rows; -1 for none)."""
    if backend == "hnswlib":
        index.set_ef(max(int(ef_search), want))
        idx, dist = index.knn_query(x, k=want, num_threads=n_jobs or -1)
        idx = idx.astype(np.int64)
        dist = np.sqrt(np.maximum(dist, 0)) if metric == "euclidean" else dist
        return dist, idx
    if backend == "faiss-hnsw":
        index.hnsw.efSearch = max(int(ef_search), want)
    faiss_module(n_jobs)
    sims, idx = index.search(x, want)
    dist = 1.0 - sims if metric == "cosine" else np.sqrt(np.maximum(sims, 0))
    return dist, idx


def write_library(index: Any, backend: str, folder: Path) -> str:
    """Write a faiss or hnswlib index into ``folder`` (atomically); returns the file's name."""
    if backend == "hnswlib":
        data_file = "index.hnswlib"
        tmp = folder / f".{data_file}.tmp"
        index.save_index(str(tmp))
        os.replace(tmp, folder / data_file)
        return data_file
    data_file = "index.faiss"
    with atomic_write(folder / data_file, "wb") as fh:
        fh.write(faiss_module().serialize_index(index).tobytes())
    return data_file


def read_library(path: Path, backend: str, metric: str, *, dim: int, n_items: int,
                 ef_search: int) -> Any:
    """A faiss or hnswlib index written by :func:`write_library` (faiss: tune it next)."""
    if backend == "hnswlib":
        import hnswlib

        index = hnswlib.Index(space="ip" if metric == "cosine" else "l2", dim=dim)
        index.load_index(str(path), max_elements=n_items)
        index.set_ef(int(ef_search))
        return index
    return faiss_module().deserialize_index(np.fromfile(path, dtype=np.uint8))


def library_bytes(index: Any, backend: str, *, dim: int, n_items: int, hnsw_m: int) -> int:
    """Size of a faiss index serialised, or an estimate of an hnswlib graph's."""
    if backend == "hnswlib":
        per = dim * 4 + hnsw_m * 2 * 4 + 16
        return int(n_items * per)
    return int(faiss_module().serialize_index(index).nbytes)
