"""Lost-to-found matching: a gallery index over embeddings, evaluation, and a matcher.

"Which found items could be this person's lost item?" The found-items photos are the
*gallery*; a lost item's photo is a *query*.

* :class:`GalleryIndex`: the gallery's L2-normalised vectors with their paths and labels;
  ``query(photo)`` returns ranked ``Match(path, label, score)`` (score = cosine similarity).
  Backends behind the same API:

  - ``"exact"`` (default): cosine similarity as one float32 matrix product per block of
    queries; exact. One query costs about 1 ms against 10⁴ photos and 60 ms against 10⁵ on
    2 cores (it reads the whole gallery: memory-bound); queries sent together share that read;
  - ``"sklearn"``: :class:`lfhelpers.search.NeighbourIndex` (scikit-learn ``NearestNeighbors``,
    cosine); exact, the reference;
  - ``"faiss"`` (``pip install faiss-cpu``) or ``"hnswlib"`` (``pip install hnswlib``):
    approximate HNSW graphs: about 1-2 ms per query at 10⁵ photos, after a build of minutes;
    ``"approx"`` picks whichever is installed (see ``benchmarks/bench_search.py``).
* :func:`retrieval_scores`: precision@k and mean average precision of retrieval by label, each
  query left out of its own gallery.
* :func:`make_near_duplicates` and :func:`duplicate_recall`: the "this is my wallet" test: each
  query is a cropped, slightly rotated, re-lit, re-encoded copy of one gallery photo; recall@k
  says how often that very photo is among the first k.
* :class:`LostFoundMatcher`: embedding similarity combined with the classifier's top-3
  categories and the color names, as filters or as re-ranking terms with weights, and a
  sentence per match saying why it was proposed.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance
from sklearn.linear_model import LogisticRegression
from tqdm import tqdm

from lfhelpers.errors import ConfigError, DataError
from lfhelpers.fsutil import atomic_write
from lfhelpers.images import open_image, thumbnail
from lfhelpers.similarity.embeddings import l2_normalize
from lfhelpers.similarity.index import NeighbourIndex

log = logging.getLogger(__name__)

#: Approximate backends, in order of preference for ``backend="approx"``.
APPROX_BACKENDS = ("faiss", "hnswlib")
BACKENDS = ("exact", "sklearn", *APPROX_BACKENDS)


class Match(NamedTuple):
    """One gallery photo proposed for a query."""

    path: str
    label: str
    score: float


def available_backends() -> list[str]:
    """Backends usable here: the exact ones, and the approximate ones whose library imports."""
    found = ["exact", "sklearn"]
    for name in APPROX_BACKENDS:
        try:
            __import__(name)
        except ImportError:
            continue
        found.append(name)
    return found


def _resolve_backend(backend: str) -> str:
    name = str(backend).lower()
    if name == "approx":
        approx = [b for b in available_backends() if b in APPROX_BACKENDS]
        if not approx:
            raise ConfigError("backend='approx' needs an approximate search library: "
                              "pip install faiss-cpu (or hnswlib), or use backend='exact'.")
        return approx[0]
    if name not in BACKENDS:
        raise ConfigError(f"Unknown backend {backend!r}; use one of {BACKENDS} or 'approx'.")
    if name in APPROX_BACKENDS and name not in available_backends():
        raise ConfigError(f"backend={name!r} is not installed: pip install "
                          f"{'faiss-cpu' if name == 'faiss' else name}, or use 'exact'.")
    return name


def top_k_similar(queries: np.ndarray, gallery: np.ndarray, k: int,
                  exclude: np.ndarray | None = None,
                  block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by dot product (cosine similarity for unit vectors), in query blocks.

    Parameters
    ----------
    queries : ndarray of shape (m, d)
    gallery : ndarray of shape (n, d)
    k : int
        Neighbours per query (at most ``n``, or ``n - 1`` with ``exclude``).
    exclude : ndarray of int, shape (m,), optional
        A gallery row to leave out for each query (``-1``: none), e.g. the query itself.
    block : int
        Queries per matrix product (bounds the memory to ``block × n`` floats).

    Returns
    -------
    scores, indices : ndarray of shape (m, k)
        Highest similarity first; ties broken by the lower gallery row.
    """
    queries = np.asarray(queries, np.float32)
    gallery = np.asarray(gallery, np.float32)
    m, n = len(queries), len(gallery)
    scores = np.empty((m, k), np.float32)
    indices = np.empty((m, k), np.int64)
    for start in range(0, m, block):
        sim = queries[start:start + block] @ gallery.T
        if exclude is not None:
            rows = np.arange(len(sim))
            cols = np.asarray(exclude[start:start + block])
            sim[rows[cols >= 0], cols[cols >= 0]] = -np.inf
        if k < n:
            part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(n), (len(sim), n))
        part_scores = np.take_along_axis(sim, part, axis=1)
        order = np.lexsort((part, -part_scores), axis=1)
        indices[start:start + block] = np.take_along_axis(part, order, axis=1)
        scores[start:start + block] = np.take_along_axis(part_scores, order, axis=1)
    return scores, indices


class GalleryIndex:
    """A searchable gallery of found-item photos (cosine similarity of embeddings).

    Parameters
    ----------
    backend : str
        ``"exact"``, ``"sklearn"``, ``"faiss"``, ``"hnswlib"`` or ``"approx"`` (see module).
    embedder : lfhelpers.embed.Embedder, optional
        Turns image paths into vectors, for :meth:`fit_files` and path queries.
    hnsw_m : int
        Links per node of an HNSW graph (approximate backends).
    ef_construction, ef_search : int
        HNSW search breadth while building and querying (higher: better recall, slower).
    n_jobs : int, optional
        Threads of the approximate libraries and of scikit-learn.

    Attributes
    ----------
    backend_ : str
        The backend in use.
    vectors_ : ndarray of shape (n, d), float32
        The gallery's unit vectors.
    paths_ : list of str
    labels_ : ndarray of str
    """

    def __init__(self, backend: str = "exact", embedder: Any = None, hnsw_m: int = 32,
                 ef_construction: int = 100, ef_search: int = 128, n_jobs: int | None = None):
        self.backend = backend
        self.embedder = embedder
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.n_jobs = n_jobs

    # -- building --------------------------------------------------------------------------

    def fit(self, vectors: np.ndarray, paths: Sequence[str] | None = None,
            labels: Sequence[str] | None = None) -> GalleryIndex:
        """Index gallery vectors (rows aligned with ``paths`` and ``labels``); returns self."""
        vectors = l2_normalize(np.atleast_2d(np.asarray(vectors, np.float32)))
        if vectors.ndim != 2 or len(vectors) < 1 or not np.isfinite(vectors).all():
            raise DataError(f"The gallery needs at least one finite vector as an (n, d) array, "
                            f"got shape {np.shape(vectors)}.")
        n = len(vectors)
        self.paths_ = [os.fspath(p) for p in paths] if paths is not None else [
            str(i) for i in range(n)]
        self.labels_ = np.asarray(labels if labels is not None else [""] * n, dtype=str)
        if len(self.paths_) != n or len(self.labels_) != n:
            raise DataError(f"{n} vectors but {len(self.paths_)} paths and {len(self.labels_)} "
                            "labels; they must be aligned.")
        self.backend_ = _resolve_backend(self.backend)
        self.vectors_ = vectors
        self.index_: Any = None
        if self.backend_ == "sklearn" and n < 2:
            self.backend_ = "exact"  # NearestNeighbors needs two items; one is trivial
        if self.backend_ == "sklearn":
            self.index_ = NeighbourIndex(metric="cosine", n_jobs=self.n_jobs).fit(vectors)
        elif self.backend_ == "faiss":
            self.index_ = self._build_faiss(vectors)
        elif self.backend_ == "hnswlib":
            self.index_ = self._build_hnswlib(vectors)
        return self

    def _build_faiss(self, vectors: np.ndarray) -> Any:
        import faiss

        if self.n_jobs:
            faiss.omp_set_num_threads(int(self.n_jobs))
        index = faiss.IndexHNSWFlat(vectors.shape[1], int(self.hnsw_m),
                                    faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(self.ef_construction)
        index.add(np.ascontiguousarray(vectors))
        index.hnsw.efSearch = int(self.ef_search)
        return index

    def _build_hnswlib(self, vectors: np.ndarray) -> Any:
        import hnswlib

        index = hnswlib.Index(space="ip", dim=vectors.shape[1])
        index.init_index(max_elements=len(vectors), ef_construction=int(self.ef_construction),
                         M=int(self.hnsw_m), random_seed=0)
        index.add_items(vectors, np.arange(len(vectors)), num_threads=self.n_jobs or -1)
        index.set_ef(int(self.ef_search))
        return index

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

    # -- searching -------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "vectors_"):
            raise DataError("The gallery index is empty: call fit(vectors, paths, labels) "
                            "first.")

    def _as_vectors(self, queries: Any) -> np.ndarray:
        if isinstance(queries, str | os.PathLike):
            queries = [queries]
        if isinstance(queries, Sequence) and len(queries) and isinstance(
                queries[0], str | os.PathLike):
            if self.embedder is None:
                raise ConfigError("Querying by image path needs an embedder: "
                                  "GalleryIndex(embedder=Embedder()).")
            return l2_normalize(self.embedder.transform(queries))
        return l2_normalize(np.atleast_2d(np.asarray(queries, np.float32)))

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
        q = self._as_vectors(queries)
        n = len(self.vectors_)
        ex = None if exclude is None else np.asarray(exclude, dtype=np.int64).reshape(-1)
        if ex is not None and len(ex) != len(q):
            raise DataError(f"exclude has {len(ex)} entries for {len(q)} queries.")
        most = n - (1 if ex is not None and (ex >= 0).any() else 0)
        if not 1 <= k <= most:
            raise DataError(f"k={k} matches asked for, but the gallery has {most} candidates; "
                            f"use 1 <= k <= {most}.")
        if self.backend_ == "exact":
            return top_k_similar(q, self.vectors_, k, ex)
        extra = 0 if ex is None else 1
        want = min(k + extra, n)
        if self.backend_ == "sklearn":
            dist, idx = self.index_.kneighbors(q, want)
            sims = 1.0 - dist
        elif self.backend_ == "faiss":
            self.index_.hnsw.efSearch = max(int(self.ef_search), want)
            sims, idx = self.index_.search(np.ascontiguousarray(q), want)
        else:
            self.index_.set_ef(max(int(self.ef_search), want))
            labels, dist = self.index_.knn_query(q, k=want, num_threads=self.n_jobs or -1)
            idx, sims = labels.astype(np.int64), 1.0 - dist
        return _drop_excluded(np.asarray(sims, np.float32), np.asarray(idx, np.int64), ex, k)

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
            query_paths = ([os.fspath(q) for q in queries]
                           if isinstance(queries, Sequence) and not isinstance(queries, str)
                           and len(queries) and isinstance(queries[0], str | os.PathLike)
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
        return pd.DataFrame(rows)


def _drop_excluded(sims: np.ndarray, idx: np.ndarray, exclude: np.ndarray | None,
                   k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each query's excluded row (and the -1 padding), keep the first ``k``."""
    out_s = np.full((len(idx), k), -np.inf, np.float32)
    out_i = np.full((len(idx), k), -1, np.int64)
    for q in range(len(idx)):
        keep = idx[q] >= 0
        if exclude is not None:
            keep &= idx[q] != exclude[q]
        s, i = sims[q][keep][:k], idx[q][keep][:k]
        out_s[q, :len(s)], out_i[q, :len(i)] = s, i
    return out_s, out_i


# --------------------------------------------------------------------------- evaluation


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
) -> tuple[dict[str, float], pd.DataFrame]:
    """Precision@k and mean average precision of retrieval by label (exact cosine ranking).

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

    Returns
    -------
    summary : dict
        ``p_at_<k>`` for each k and ``map``, plus ``n_queries`` and ``n_gallery``.
    per_query : pandas.DataFrame
        One row per query: ``label``, ``p_at_<k>``, ``ap``, ``first_hit`` (rank of the first
        same-label photo, 0 when none).
    """
    gallery = l2_normalize(gallery)
    glabels = np.asarray(gallery_labels, dtype=str)
    loo = queries is None
    if loo:
        q, qlabels = gallery, glabels
    else:
        if query_labels is None:
            raise DataError("query_labels are needed with queries.")
        q, qlabels = l2_normalize(queries), np.asarray(query_labels, dtype=str)
    n = len(gallery) - (1 if loo else 0)
    if n < 1 or len(q) == 0:
        raise DataError(f"Need queries and at least one candidate; got {len(q)} queries and "
                        f"{n} candidates.")
    ks = [int(k) for k in ks]
    rows = []
    for start in range(0, len(q), block):
        sim = q[start:start + block] @ gallery.T
        if loo:
            sim[np.arange(len(sim)), np.arange(start, start + len(sim))] = -np.inf
        order = np.argsort(-sim, axis=1, kind="stable")
        if loo:
            order = order[:, :-1]  # the query itself (-inf) sorts last
        for r, ranking in enumerate(order):
            label = qlabels[start + r]
            rel = glabels[ranking] == label
            row = {"label": label}
            for k in ks:
                row[f"p_at_{k}"] = float(rel[:min(k, n)].mean())
            row["ap"] = average_precision(rel)
            row["first_hit"] = int(np.argmax(rel)) + 1 if rel.any() else 0
            rows.append(row)
    per_query = pd.DataFrame(rows)
    summary = {f"p_at_{k}": float(per_query[f"p_at_{k}"].mean()) for k in ks}
    summary["map"] = float(per_query["ap"].mean(skipna=True))
    summary["n_queries"] = len(per_query)
    summary["n_gallery"] = len(gallery)
    return summary, per_query


def per_class_table(per_query: pd.DataFrame) -> pd.DataFrame:
    """Mean of each per-query score by query label (from :func:`retrieval_scores`)."""
    cols = [c for c in per_query.columns if c.startswith("p_at_") or c == "ap"]
    table = per_query.groupby("label")[cols].mean()
    table.insert(0, "queries", per_query.groupby("label").size())
    return table


# --------------------------------------------------------------------------- near duplicates


def perturb(image: Image.Image, rng: np.random.Generator, max_crop: float = 0.15,
            max_rotation: float = 10.0, max_brightness: float = 0.25,
            jpeg_quality: tuple[int, int] = (40, 85)) -> tuple[Image.Image, str]:
    """A plausible second photo of the same item: crop, small rotation, brightness, JPEG.

    Parameters
    ----------
    image : PIL.Image.Image
        The original (RGB).
    rng : numpy.random.Generator
        Draws the strengths.
    max_crop : float
        Up to this fraction of each side is cut away (at random sides).
    max_rotation : float
        Degrees, either way (the corners are filled with the edge color).
    max_brightness : float
        Brightness factor in ``1 ± max_brightness``.
    jpeg_quality : (int, int)
        JPEG quality range of the re-encoding.

    Returns
    -------
    image : PIL.Image.Image
    description : str
        The transformation drawn, e.g. ``"crop 8%, rotate -4.1°, brightness 1.12, jpeg q62"``.
    """
    image = image.convert("RGB")
    w, h = image.size
    crop = rng.uniform(0.0, max_crop)
    left, top = rng.uniform(0, crop) * w, rng.uniform(0, crop) * h
    image = image.crop((int(left), int(top), int(w - (crop * w - left)),
                        int(h - (crop * h - top))))
    angle = rng.uniform(-max_rotation, max_rotation)
    edge = tuple(int(c) for c in np.asarray(image)[0, 0])
    image = image.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=edge)
    factor = 1.0 + rng.uniform(-max_brightness, max_brightness)
    image = ImageEnhance.Brightness(image).enhance(factor)
    quality = int(rng.integers(jpeg_quality[0], jpeg_quality[1] + 1))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    out = Image.open(buffer)
    out.load()
    return out, (f"crop {crop:.0%}, rotate {angle:+.1f}°, brightness {factor:.2f}, "
                 f"jpeg q{quality}")


def make_near_duplicates(
    files: Sequence[str | os.PathLike[str]],
    dest: str | os.PathLike[str],
    n: int = 200,
    seed: int = 0,
    **strength: Any,
) -> pd.DataFrame:
    """Write ``n`` transformed copies of gallery photos (one per drawn photo) into ``dest``.

    Parameters
    ----------
    files : sequence of path-like
        The gallery photos.
    dest : path-like
        Output folder (created); files are ``dup_<NNNN>.jpg``. A rerun with the same
        arguments rewrites the same files.
    n : int
        Queries to make (at most ``len(files)``; each original is used once).
    seed : int
        Which originals and which transformations.
    **strength
        Passed to :func:`perturb` (``max_crop``, ``max_rotation``, ...).

    Returns
    -------
    pandas.DataFrame
        Columns ``query`` (new file), ``original`` (its gallery photo), ``original_index``
        (position in ``files``) and ``transform``.
    """
    files = [os.fspath(f) for f in files]
    if not files:
        raise DataError("No gallery photos to make near-duplicate queries from.")
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(files), size=min(int(n), len(files)), replace=False))
    dest = Path(dest)
    rows = []
    for j, i in enumerate(tqdm(picks, desc="near-duplicate queries", unit="img")):
        try:
            copy, how = perturb(open_image(files[i]), rng, **strength)
        except Exception as exc:  # noqa: BLE001 - an unreadable original is skipped
            log.warning("Skipped %s for the near-duplicate test: %s", files[i], exc)
            continue
        target = dest / f"dup_{j:04d}.jpg"
        with atomic_write(target, "wb") as fh:
            copy.save(fh, "JPEG", quality=95)
        rows.append({"query": str(target), "original": files[i], "original_index": int(i),
                     "transform": how})
    return pd.DataFrame(rows, columns=["query", "original", "original_index", "transform"])


def duplicate_recall(indices: np.ndarray, original_index: Sequence[int],
                     ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Share of near-duplicate queries whose original is among their first k matches.

    Parameters
    ----------
    indices : ndarray of shape (m, >= max(ks))
        Ranked gallery rows per query (from :meth:`GalleryIndex.search`).
    original_index : sequence of int
        The gallery row of each query's original.
    ks : sequence of int

    Returns
    -------
    dict
        ``dup_recall_at_<k>`` for each k.
    """
    indices = np.asarray(indices)
    orig = np.asarray(original_index).reshape(-1, 1)
    return {f"dup_recall_at_{k}": float((indices[:, :k] == orig).any(axis=1).mean())
            for k in ks}


def duplicate_table(index: GalleryIndex, vectors: np.ndarray, duplicates: pd.DataFrame,
                    k: int = 5, misses_first: bool = True) -> pd.DataFrame:
    """Matches of near-duplicate queries with their originals, for :func:`plot_matches`.

    Parameters
    ----------
    index : GalleryIndex
        The gallery the originals belong to (``original_index`` are its rows).
    vectors : ndarray of shape (m, d)
        Embeddings of the first ``m`` rows of ``duplicates``.
    duplicates : pandas.DataFrame
        From :func:`make_near_duplicates`.
    k : int
    misses_first : bool
        Put the queries whose original is not the first match at the top (for figures).

    Returns
    -------
    pandas.DataFrame
        As :meth:`GalleryIndex.query_table`, plus ``original`` and ``original_rank`` (rank of
        the original among this query's k matches; 0 when it is not among them).
    """
    dups = duplicates.iloc[:len(vectors)]
    labels = [str(index.labels_[i]) for i in dups["original_index"]]
    table = index.query_table(vectors, k, query_paths=list(dups["query"]), query_labels=labels)
    table["original"] = table["query"].map(dups.set_index("query")["original"])
    hit_rank = table["rank"].where(table["path"] == table["original"], 0)
    table["original_rank"] = hit_rank.groupby(table["query"]).transform("max")
    if misses_first:
        table = table.sort_values("original_rank", key=lambda r: r == 1, kind="stable")
    return table.reset_index(drop=True)


# --------------------------------------------------------------------------- matcher


def _lookup(source: Callable | Mapping | None) -> Callable[[str], Any] | None:
    """A memoised ``path -> value`` function from a callable or a precomputed table."""
    if source is None:
        return None
    memo: dict[str, Any] = {}
    if isinstance(source, Mapping):
        return lambda path: source.get(os.fspath(path), [])

    def get(path: str) -> Any:
        path = os.fspath(path)
        if path not in memo:
            memo[path] = source(path)
        return memo[path]

    return get


class LinearCategories:
    """Top-k categories from a logistic regression on gallery embeddings.

    A stand-in for the fine-tuned classifier (notebook 03) when it is not available: it is
    fitted on the gallery only, so query photos are never seen in training.

    Parameters
    ----------
    k : int
        Categories per photo.
    C : float
        Inverse regularisation strength.
    seed : int

    Attributes
    ----------
    model_ : sklearn.linear_model.LogisticRegression
    """

    def __init__(self, k: int = 3, C: float = 1.0, seed: int = 0):
        self.k = k
        self.C = C
        self.seed = seed

    def fit(self, vectors: np.ndarray, labels: Sequence[str]) -> LinearCategories:
        """Fit on gallery vectors and labels; returns ``self``."""
        self.model_ = LogisticRegression(C=self.C, max_iter=2000, random_state=self.seed)
        self.model_.fit(np.asarray(vectors), np.asarray(labels, dtype=str))
        return self

    def table(self, paths: Sequence[str], vectors: np.ndarray) -> dict[str, list[tuple]]:
        """``{path: [(label, probability), ...]}`` for photos with known vectors."""
        proba = self.model_.predict_proba(np.asarray(vectors))
        classes = self.model_.classes_
        out = {}
        for path, p in zip(paths, proba, strict=True):
            order = np.argsort(-p, kind="stable")[:self.k]
            out[os.fspath(path)] = [(str(classes[j]), float(p[j])) for j in order]
        return out


def query_categories(
    files: Sequence[str],
    vectors: np.ndarray,
    gallery_vectors: np.ndarray,
    gallery_labels: Sequence[str],
    classifier: Any = None,
    k: int = 3,
    seed: int = 0,
) -> tuple[dict[str, list[tuple[str, float]]], str]:
    """Top-``k`` categories of query photos, for :class:`LostFoundMatcher`.

    Parameters
    ----------
    files : sequence of str
        Query photos.
    vectors : ndarray
        Their embeddings (used by the stand-in).
    gallery_vectors, gallery_labels
        The gallery, to fit the stand-in on.
    classifier : lfhelpers.embed.Embedder, optional
        A fitted ``Embedder("classifier", ...)`` (notebook 03's model); its category head is
        used. ``None``: a :class:`LinearCategories` stand-in fitted on the gallery only.
    k : int
    seed : int

    Returns
    -------
    table : dict
        ``{path: [(label, probability), ...]}``.
    source : str
        Where the categories came from, for the reader.
    """
    files = [os.fspath(f) for f in files]
    if classifier is not None and getattr(classifier, "head_layers_", None):
        return classifier.top_k(files, k=k), "the fine-tuned classifier's top-3"
    table = LinearCategories(k=k, seed=seed).fit(gallery_vectors, gallery_labels).table(
        files, vectors)
    return table, "a logistic regression on the gallery embeddings (no fine-tuned classifier)"


def color_table(
    files: Sequence[str | os.PathLike[str]],
    color_source: str = "codingtrain_colors",
    min_share: float = 0.2,
    n_colors: int = 3,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, list[str]]:
    """Color names of each photo's item (notebook 04's :mod:`lfhelpers.color`), by path.

    Parameters
    ----------
    files : sequence of path-like
    color_source : str
        Training data of the color-name model when notebook 04 has not saved one
        (``models/color_names.joblib``): a data set name, a file, or ``"synthetic"`` (offline).
    min_share : float
        Colors covering less of the item are left out.
    n_colors : int
        Color clusters per photo.
    seed : int
    progress : bool

    Returns
    -------
    dict
        ``{path: [color name, ...]}``, largest share first; unreadable photos are left out
        (logged).
    """
    from lfhelpers import color

    namer = color.load_color_namer(color_source=color_source, seed=seed, save=False)
    files = [os.fspath(f) for f in files]
    palettes = color.extract_palettes(files, namer, n_colors=n_colors, seed=seed,
                                      progress=progress)
    return {f: [c.name for c in p.colors if c.share >= min_share] or [p.main.name]
            for f, p in zip(files, palettes, strict=True) if p is not None}


class LostFoundMatcher:
    """Rank found items for a lost item's photo: similarity, category and color, explained.

    The embedding index proposes ``candidates`` gallery photos; each gets

    * ``similarity``: cosine similarity of the embeddings;
    * ``category``: how much the query's top-3 categories (``category_fn``) agree with the
      found item's category (its gallery label, or ``gallery_categories``): the sum over
      shared categories of the products of their probabilities (1.0: same single category);
    * ``color``: the overlap (Jaccard) of the color names (``color_fn``) of both photos.

    In ``"rerank"`` mode the score is ``w_embedding·similarity + w_category·category +
    w_color·color``; in ``"filter"`` mode a candidate with no shared category (or color)
    is dropped and the others keep that combined score.

    Parameters
    ----------
    index : GalleryIndex
        The fitted found-items gallery.
    category_fn : callable or mapping, optional
        ``path -> [(label, probability), ...]`` (e.g. the classifier's top 3), or a table of
        those by path. ``None``: no category term.
    color_fn : callable or mapping, optional
        ``path -> [color name, ...]``, or a table of those. ``None``: no color term.
    gallery_categories : callable or mapping, optional
        Categories of gallery photos; default: their labels, with probability 1.
    w_embedding, w_category, w_color : float
        Weights of the three terms.
    category_mode, color_mode : {"rerank", "filter"}
    candidates : int
        Gallery photos taken from the index before re-ranking.
    """

    def __init__(self, index: GalleryIndex, category_fn: Callable | Mapping | None = None,
                 color_fn: Callable | Mapping | None = None,
                 gallery_categories: Callable | Mapping | None = None,
                 w_embedding: float = 1.0, w_category: float = 0.5, w_color: float = 0.25,
                 category_mode: str = "rerank", color_mode: str = "rerank",
                 candidates: int = 50):
        for name, mode in (("category_mode", category_mode), ("color_mode", color_mode)):
            if mode not in ("rerank", "filter"):
                raise ConfigError(f"{name} must be 'rerank' or 'filter', got {mode!r}.")
        self.index = index
        self.category_fn = category_fn
        self.color_fn = color_fn
        self.gallery_categories = gallery_categories
        self.w_embedding = w_embedding
        self.w_category = w_category
        self.w_color = w_color
        self.category_mode = category_mode
        self.color_mode = color_mode
        self.candidates = candidates
        self._category = _lookup(category_fn)
        self._color = _lookup(color_fn)
        self._gallery_category = _lookup(gallery_categories)

    def _gallery_cats(self, row: int) -> list[tuple[str, float]]:
        if self._gallery_category is not None:
            return list(self._gallery_category(self.index.paths_[row]))
        return [(str(self.index.labels_[row]), 1.0)]

    def match(self, query: str | os.PathLike[str], k: int = 5,
              vector: np.ndarray | None = None, exclude: int = -1) -> pd.DataFrame:
        """The ``k`` best found items for one lost photo, with the reasons.

        Parameters
        ----------
        query : path-like
            The lost item's photo (embedded with the index's embedder unless ``vector`` is
            given; categories and colors are looked up by this path).
        k : int
            Matches returned.
        vector : ndarray, optional
            The query's embedding, when already known.
        exclude : int
            A gallery row to leave out (the query itself when it is in the gallery).

        Returns
        -------
        pandas.DataFrame
            Columns ``rank, path, label, score, similarity, category, color, why``; fewer
            than ``k`` rows when filters leave fewer candidates.
        """
        query = os.fspath(query)
        n = len(self.index.vectors_) - (1 if exclude >= 0 else 0)
        want = min(max(int(self.candidates), k), n)
        sims, rows = self.index.search(query if vector is None else vector, want,
                                       exclude=None if exclude < 0 else [exclude])
        q_cats = list(self._category(query)) if self._category else []
        q_cols = set(self._color(query)) if self._color else set()
        top_label = q_cats[0][0] if q_cats else None
        q_rank = {lab: r for r, (lab, _) in enumerate(q_cats, start=1)}
        out = []
        for sim, row in zip(sims[0], rows[0], strict=True):
            if row < 0:
                continue
            reasons = [f"similarity {sim:.2f}"]
            cat = 0.0
            if self._category:
                g = dict(self._gallery_cats(row))
                shared = {lab: p * g[lab] for lab, p in q_cats if lab in g}
                cat = float(sum(shared.values()))
                if shared:
                    best = max(shared, key=shared.get)
                    reasons.append(f"category {best} (query's #{q_rank[best]}, "
                                   f"p={dict(q_cats)[best]:.2f})")
                else:
                    reasons.append(f"category not in the query's top {len(q_cats)}")
                if self.category_mode == "filter" and not shared:
                    continue
            col = 0.0
            if self._color:
                g_cols = set(self._color(self.index.paths_[row]))
                union = q_cols | g_cols
                col = len(q_cols & g_cols) / len(union) if union else 0.0
                common = sorted(q_cols & g_cols)
                reasons.append(f"colors shared: {', '.join(common)}" if common
                               else "no shared color")
                if self.color_mode == "filter" and not common:
                    continue
            score = (self.w_embedding * float(sim) + self.w_category * cat
                     + self.w_color * col)
            out.append({"path": self.index.paths_[row], "label": str(self.index.labels_[row]),
                        "score": score, "similarity": float(sim), "category": cat,
                        "color": col, "why": "; ".join(reasons)})
        table = pd.DataFrame(out, columns=["path", "label", "score", "similarity", "category",
                                           "color", "why"])
        table = table.sort_values("score", ascending=False, kind="stable").head(k)
        table.insert(0, "rank", np.arange(1, len(table) + 1))
        if top_label is not None:
            table.attrs["query_top_category"] = top_label
        return table.reset_index(drop=True)

    def evaluate(self, queries: Sequence[str], labels: Sequence[str],
                 vectors: np.ndarray | None = None, k: int = 5) -> dict[str, float]:
        """Precision@k of the matcher's ranking by label (a short list counts missing as wrong).

        Parameters
        ----------
        queries : sequence of str
            Lost photos (not in the gallery).
        labels : sequence of str
            Their labels.
        vectors : ndarray, optional
            Their embeddings (else embedded with the index's embedder).
        k : int

        Returns
        -------
        dict
            ``p_at_<k>`` and ``mean_returned`` (matches left after the filters).
        """
        precisions, returned = [], []
        for i, (query, label) in enumerate(zip(queries, labels, strict=True)):
            table = self.match(query, k, vector=None if vectors is None else vectors[i])
            precisions.append(float((table["label"] == label).sum()) / k)
            returned.append(len(table))
        return {f"p_at_{k}": float(np.mean(precisions)),
                "mean_returned": float(np.mean(returned))}


# --------------------------------------------------------------------------- figures


def plot_matches(
    table: pd.DataFrame,
    max_queries: int = 4,
    truth: str = "label",
    suptitle: str | None = None,
    size: float = 1.9,
) -> plt.Figure:
    """Each query (left, blue frame) beside its top matches, right answers framed green.

    Parameters
    ----------
    table : pandas.DataFrame
        From :meth:`GalleryIndex.query_table` (``query, query_label, rank, path, label,
        score``); for the near-duplicate test add an ``original`` column.
    max_queries : int
        Rows drawn.
    truth : {"label", "original"}
        A match is right when it has the query's label, or when it is the query's original.
    suptitle : str, optional
    size : float
        Inches per tile.

    Returns
    -------
    matplotlib.figure.Figure
    """
    queries = list(dict.fromkeys(table["query"]))[:max_queries]
    k = int(table["rank"].max()) if len(table) else 1
    fig, axes = plt.subplots(max(len(queries), 1), k + 1, squeeze=False,
                             figsize=((k + 1) * size, max(len(queries), 1) * size * 1.3))
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    for r, query in enumerate(queries):
        group = table[table["query"] == query].sort_values("rank")
        first = group.iloc[0]
        panels = [(query, f"query\n{first['query_label']}", "tab:blue")]
        for row in group.itertuples():
            right = (row.path == row.original) if truth == "original" else (
                row.label == row.query_label)
            mark = "right" if right else "wrong"
            panels.append((row.path, f"{row.rank}. {row.label} ({mark})\n{row.score:.3f}",
                           "tab:green" if right else "tab:red"))
        for c, (path, title, color) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(thumbnail(path, 224))
            ax.set_title(title, fontsize=8, color="black" if c == 0 else color)
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color(color)
                spine.set_linewidth(3)
    fig.suptitle(suptitle or "Query photos and their most similar gallery photos "
                 "(green: right, red: wrong; score = cosine similarity)")
    fig.tight_layout()
    return fig


def plot_explained(query: str, table: pd.DataFrame, query_label: str = "",
                   size: float = 2.2) -> plt.Figure:
    """One lost photo and the matcher's proposals, each titled with its score and reasons."""
    k = len(table)
    fig, axes = plt.subplots(1, k + 1, squeeze=False, figsize=((k + 1) * size, size * 1.7))
    panels = [(query, f"lost photo\n{query_label}", "tab:blue")]
    for row in table.itertuples():
        right = bool(query_label) and row.label == query_label
        why = row.why.replace("; ", "\n")
        panels.append((row.path, f"{row.rank}. {row.label} ({row.score:.2f})\n{why}",
                       "tab:green" if right else "tab:red"))
    for ax, (path, title, color) in zip(axes[0], panels, strict=False):
        ax.imshow(thumbnail(path, 224))
        ax.set_title(title, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color(color)
            spine.set_linewidth(3)
    fig.suptitle("Lost-to-found matches with their reasons")
    fig.tight_layout()
    return fig
