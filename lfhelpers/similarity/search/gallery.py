"""The found-items gallery: embeddings with their paths and labels, searched by photo or vector.

"Which found items could be this person's lost item?" The found-items photos are the
*gallery*; a lost item's photo is a *query*. :class:`GalleryIndex` keeps the gallery's paths
and labels beside a :class:`~lfhelpers.similarity.search.index.NeighbourIndex` (cosine; any of its
backends) and answers ``query(photo)`` with ranked ``Match(path, label, score)``, score =
cosine similarity. It is what notebook 06, the matcher and the ``search`` command use;
:meth:`GalleryIndex.save` / :meth:`GalleryIndex.load` keep it in a folder (the index, its
parameters, ``items.csv`` with the paths and labels, and how the vectors were made).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import joblib
import numpy as np
import pandas as pd

from lfhelpers.errors import ConfigError, DataError
from lfhelpers.fsutil import atomic_write
from lfhelpers.similarity.search.index import (
    APPROX_BACKENDS,
    BACKENDS,
    NeighbourIndex,
    available_backends,
)
from lfhelpers.similarity.search.postprocess import Postprocessor, parse_steps

__all__ = ["APPROX_BACKENDS", "BACKENDS", "GalleryIndex", "Match", "available_backends"]

ITEMS_FILE = "items.csv"
EMBEDDING_FILE = "embedding.json"
CENTER_FILE = "center.npy"
POSTPROCESS_FILE = "postprocess.json"
WHITENING_FILE = "whitening.joblib"


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
    """A searchable gallery of found-item photos (cosine similarity of embeddings).

    Parameters
    ----------
    backend : str
        Any backend of :class:`~lfhelpers.similarity.search.index.NeighbourIndex` (``"exact"``,
        ``"sklearn"``, ``"faiss"``, ``"hnswlib"``, ``"ivf"``, ``"approx"``, ``"auto"``, ...).
    embedder : Embedder, optional
        Turns image paths into vectors, for :meth:`fit_files` and path queries.
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
    post_ : Postprocessor
        The fitted post-processing.
    mean_ : ndarray of shape (d,) or None
        The gallery mean subtracted (``center`` step).
    """

    def __init__(self, backend: str = "exact", embedder: Any = None, hnsw_m: int = 32,
                 ef_construction: int = 100, ef_search: int = 128, n_jobs: int | None = None,
                 center: bool = False, postprocess: str | Sequence[str] = "",
                 **index_params: Any):
        self.backend = backend
        self.embedder = embedder
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.n_jobs = n_jobs
        self.center = center
        self.postprocess = postprocess
        self.index_params = index_params

    def fit(self, vectors: np.ndarray, paths: Sequence[str] | None = None,
            labels: Sequence[str] | None = None) -> GalleryIndex:
        """Index gallery vectors (rows aligned with ``paths`` and ``labels``); returns self."""
        vectors = np.atleast_2d(np.asarray(vectors, np.float32))
        if vectors.ndim != 2 or len(vectors) < 1 or not np.isfinite(vectors).all():
            raise DataError(f"The gallery needs at least one finite vector as an (n, d) array, "
                            f"got shape {np.shape(vectors)}.")
        n = len(vectors)
        self.paths_ = [os.fspath(p) for p in paths] if paths is not None else [
            str(i) for i in range(n)]
        self.labels_ = np.asarray(list(labels) if labels is not None else [""] * n, dtype=str)
        if len(self.paths_) != n or len(self.labels_) != n:
            raise DataError(f"{n} vectors but {len(self.paths_)} paths and {len(self.labels_)} "
                            "labels; they must be aligned.")
        steps = parse_steps(self.postprocess) + (["center"] if self.center else [])
        self.post_ = Postprocessor(steps).fit(vectors)
        self.mean_ = self.post_.mean_
        vectors = self.post_.gallery_
        self.index_ = NeighbourIndex("cosine", self.backend, n_jobs=self.n_jobs,
                                     hnsw_m=self.hnsw_m, ef_construction=self.ef_construction,
                                     ef_search=self.ef_search, **self.index_params).fit(vectors)
        self.backend_ = self.index_.backend_
        self.n_items_ = n
        return self

    def fit_files(self, paths: Sequence[str | os.PathLike[str]],
                  labels: Sequence[str] | None = None) -> GalleryIndex:
        """Embed gallery photos with ``embedder`` and index them (unreadable ones skipped)."""
        if self.embedder is None:
            raise ConfigError("fit_files needs an embedder: GalleryIndex(embedder=Embedder()).")
        paths = [os.fspath(p) for p in paths]
        result = self.embedder.extract(paths)
        kept = [p for p, ok in zip(paths, result.ok, strict=True) if ok]
        kept_labels = None if labels is None else [
            lab for lab, ok in zip(labels, result.ok, strict=True) if ok]
        return self.fit(result.features, kept, kept_labels)

    @property
    def vectors_(self) -> np.ndarray:
        """The gallery's unit vectors as indexed (centred with ``center``), where kept."""
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
            vectors = np.asarray(self.embedder.transform(list(queries)), np.float32)
        else:
            vectors = np.atleast_2d(np.asarray(queries, np.float32))
        return self.post_.transform(vectors)

    def search(self, queries: Any, k: int = 10,
               exclude: Sequence[int] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar gallery rows of each query.

        Parameters
        ----------
        queries : ndarray of shape (m, d), or image path(s)
            Query vectors (normalised here), or photos (embedded with ``embedder``).
        k : int
            Matches per query.
        exclude : sequence of int, optional
            One gallery row per query to leave out (``-1`` for none): a gallery photo used as
            a query is not its own match.

        Returns
        -------
        scores, indices : ndarray of shape (m, k)
            Cosine similarity, highest first, and gallery rows. When an approximate index
            finds fewer than ``k``, the missing entries are ``-inf`` and ``-1``.
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
        """Matches of many queries as one table.

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
        rows = []
        for q, (qpath, qlabel) in enumerate(zip(query_paths, query_labels, strict=True)):
            for rank, (s, i) in enumerate(zip(scores[q], idx[q], strict=True), start=1):
                if i < 0:
                    continue
                label = str(self.labels_[i])
                rows.append({"query": qpath, "query_label": qlabel, "rank": rank,
                             "path": self.paths_[i], "label": label, "score": float(s),
                             "correct": bool(qlabel) and label == qlabel})
        return pd.DataFrame(rows, columns=["query", "query_label", "rank", "path", "label",
                                           "score", "correct"])

    # -- saving ----------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike[str],
             embedding: dict[str, Any] | None = None) -> Path:
        """Write the index, ``items.csv`` (path, label) and how the vectors were made.

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
        if self.mean_ is not None:
            with atomic_write(folder / CENTER_FILE, "wb") as fh:
                np.save(fh, self.mean_)
        elif (folder / CENTER_FILE).exists():  # an older centred index in the same folder
            (folder / CENTER_FILE).unlink()
        post = self.post_
        if post.whitening_ is not None:
            with atomic_write(folder / WHITENING_FILE, "wb") as fh:
                joblib.dump(post.whitening_, fh)
        with atomic_write(folder / POSTPROCESS_FILE) as fh:
            json.dump({"steps": post.steps_, "dba_n": post.dba_n, "qe_n": post.qe_n,
                       "alpha": post.alpha}, fh, indent=2)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str], embedder: Any = None) -> GalleryIndex:
        """A gallery written by :meth:`save` (``embedder``: for path queries)."""
        folder = Path(folder)
        index = NeighbourIndex.load(folder)
        items = pd.read_csv(folder / ITEMS_FILE, dtype=str, keep_default_na=False)
        if len(items) != index.n_items_:
            raise DataError(f"{folder}: {ITEMS_FILE} has {len(items)} rows for an index of "
                            f"{index.n_items_} vectors; rebuild the index.")
        self = cls(backend=index.backend_, embedder=embedder)
        self.index_, self.backend_, self.n_items_ = index, index.backend_, index.n_items_
        self.paths_ = items["path"].tolist()
        self.labels_ = items["label"].to_numpy(dtype=str)
        spec = folder / EMBEDDING_FILE
        self.embedding_ = (json.loads(spec.read_text(encoding="utf-8")) if spec.is_file()
                           else {})
        mean = folder / CENTER_FILE
        self.mean_ = np.load(mean).astype(np.float32) if mean.is_file() else None
        settings = folder / POSTPROCESS_FILE
        kept = (json.loads(settings.read_text(encoding="utf-8")) if settings.is_file()
                else {"steps": ["center"] if self.mean_ is not None else []})
        post = Postprocessor(kept["steps"], dba_n=kept.get("dba_n", 3), qe_n=kept.get("qe_n", 2),
                             alpha=kept.get("alpha", 3.0))
        post.steps_, post.mean_ = parse_steps(kept["steps"]), self.mean_
        post.whitening_ = (joblib.load(folder / WHITENING_FILE)
                           if (folder / WHITENING_FILE).is_file() else None)
        post.gallery_ = index.reconstruct() if "aqe" in post.steps_ else np.zeros((0, 0))
        self.post_, self.postprocess = post, "+".join(post.steps_)
        self.center = "center" in post.steps_
        return self
