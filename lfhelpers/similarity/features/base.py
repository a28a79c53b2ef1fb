"""Hand-made image features as scikit-learn transformers: parallel, cached, optionally on Dask.

:class:`ImageFeatures` is the shared base of the haralick (:mod:`.texture`) and colour histogram
(:mod:`.color`) features: the input of ``transform`` is a
sequence of image files (or decoded ``uint8`` arrays), the output one row per image. A subclass
names a module-level function ``row(image, **options) -> ndarray`` and its checked options; the
base class decodes each image (shrunk to ``max_side``), runs the function in parallel, keeps
each row in the workbook's content-addressed store (:class:`lfhelpers.store.ContentStore`,
under the file's content hash and a digest of the options), and reports unreadable images.
:class:`CombinedFeatures` is a :class:`~sklearn.pipeline.FeatureUnion` of such transformers
(texture + color) that can also skip unreadable images.

Running on a Dask cluster
-------------------------
With ``scheduler`` set, extraction goes through joblib's ``dask`` backend
(``pip install "dask[distributed]"``): ``"dask"`` uses the Dask client already created in
this process, ``"local"`` or ``"local:N"`` starts a local cluster of N worker processes for
the call, and ``"tcp://host:8786"`` connects to a running scheduler::

    from dask.distributed import Client
    client = Client("tcp://scheduler-host:8786")
    features = HaralickFeatures(scheduler="dask", cache_dir="/shared/cache").transform(files)

The workers open the image files themselves, so the paths must be readable on every worker (a
shared file system or mount), and so must ``cache_dir`` when it is set. Only the file paths
travel to the workers and only the small feature rows come back.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import FeatureUnion
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from lfhelpers.errors import ConfigError, DataError
from lfhelpers.images import load_array
from lfhelpers.store import ContentStore, spec_digest

log = logging.getLogger(__name__)

_CACHE_VERSION = 2



def l2_normalize(features: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero. The one L2 normaliser.

    Parameters
    ----------
    features : array-like of shape (n, d) or (d,)
    dtype : numpy dtype or None
        Dtype of the result; ``None`` keeps the input's floating dtype.

    Returns
    -------
    ndarray
        ``features / ||features||`` row by row.
    """
    features = np.asarray(features, dtype=dtype)
    if features.dtype.kind != "f":
        features = features.astype(np.float32)
    norms = np.linalg.norm(features, axis=-1, keepdims=True)
    return features / np.where(norms > 0, norms, 1).astype(features.dtype)


def standardize_l2(features: np.ndarray, fit_rows: np.ndarray | None = None) -> np.ndarray:
    """Standardise columns (statistics from ``fit_rows`` only), then L2-normalise rows.

    Hand-made features such as haralick have columns on very different scales; this puts them
    on the same footing as CNN embeddings for cosine search and clustering.

    Parameters
    ----------
    features : ndarray of shape (n, d)
    fit_rows : ndarray of bool or int, optional
        Rows the scaler learns from (the gallery), so queries do not leak into it. Default:
        all rows.

    Returns
    -------
    ndarray of shape (n, d), float32
    """
    features = np.asarray(features, dtype=np.float64)
    rows = features if fit_rows is None else features[np.asarray(fit_rows)]
    return l2_normalize(StandardScaler().fit(rows).transform(features))


# --------------------------------------------------------------------------- embedder

@dataclass
class Extraction:
    """Result of :meth:`ImageFeatures.extract`.

    Attributes
    ----------
    features : ndarray of shape (n_ok, n_features)
        Rows of the images that could be read, in input order.
    ok : ndarray of bool, shape (n,)
        Which inputs have a row in ``features``.
    errors : dict
        Input (as str) -> reason, for each skipped image.
    seconds : float
        Wall-clock time of the extraction (cache reads included).
    n_cached : int
        Rows read from the disk cache instead of computed.
    compute_seconds : float
        Wall-clock time spent computing the rows that were not in the cache.
    """

    features: np.ndarray
    ok: np.ndarray
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    n_cached: int = 0
    compute_seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        """Images handled per second of wall-clock time (cache hits included)."""
        return float(len(self.ok) / self.seconds) if self.seconds > 0 else float("inf")

    @property
    def n_computed(self) -> int:
        """Images that were not in the cache (computed, or found unreadable)."""
        return int(len(self.ok) - self.n_cached)

    @property
    def computed_per_second(self) -> float:
        """Extraction speed over the computed images only; NaN when all came from the cache."""
        if self.n_computed == 0 or self.compute_seconds <= 0:
            return float("nan")
        return float(self.n_computed / self.compute_seconds)

    def aligned(self, dtype: type = np.float32) -> np.ndarray:
        """A row per input: skipped inputs get a row of NaN (for aligning several sets)."""
        out = np.full((len(self.ok), self.features.shape[1]), np.nan, dtype=dtype)
        out[self.ok] = self.features
        return out


def content_key(item: Any) -> tuple[str, bytes | np.ndarray]:
    """Return (sha256 hex, payload) for a file path or an array."""
    if isinstance(item, np.ndarray):
        digest = hashlib.sha256(f"{item.dtype}{item.shape}".encode())
        digest.update(np.ascontiguousarray(item).tobytes())
        return digest.hexdigest(), item
    data = Path(item).read_bytes()
    return hashlib.sha256(data).hexdigest(), data


def _cached_row(item: Any, store: ContentStore) -> np.ndarray | None:
    """The cached features of ``item``, or ``None`` (not cached, unreadable, damaged entry)."""
    try:
        key, _ = content_key(item)
    except OSError:
        return None  # the worker reports why the file cannot be read
    return store.get(key)


def _features_of(item: Any, row_function: Callable[..., np.ndarray], options: dict[str, Any],
                 max_side: int | None, store: ContentStore | None
                 ) -> tuple[np.ndarray | None, str | None]:
    """Worker: features of one image -> (row or None, reason when skipped); fills the cache."""
    try:
        key, payload = content_key(item)
        row = row_function(load_array(payload, max_side), **options)
        if not np.all(np.isfinite(row)):
            return None, "features are not finite (a flat or tiny image?)"
        if store is not None:
            store.put(key, row)
        return row, None
    except (ConfigError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - any undecodable image is skipped with its reason
        return None, f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def dask_backend(scheduler: str | None) -> Iterator[bool]:
    """Run the joblib calls inside on a Dask cluster; yields whether Dask is used.

    Parameters
    ----------
    scheduler : str or None
        ``None`` or ``""``: local joblib (nothing changes). ``"dask"``: the Dask client
        already created in this process. ``"local"`` / ``"local:N"``: a local cluster of N
        worker processes (default 2) for the duration. ``"tcp://host:port"`` (or any other
        address): a client connected to that scheduler for the duration.

    Raises
    ------
    ConfigError
        Dask is not installed, no client exists for ``"dask"``, or ``"local:N"`` is malformed.
    """
    if not scheduler:
        yield False
        return
    try:
        from dask.distributed import Client, LocalCluster, get_client
    except ImportError as exc:
        raise ConfigError(f"scheduler={scheduler!r} needs Dask: pip install "
                          "'dask[distributed]' (or leave scheduler empty for local joblib)."
                          ) from exc
    with contextlib.ExitStack() as stack:
        if scheduler == "dask":
            try:
                get_client()
            except ValueError as exc:
                raise ConfigError("scheduler='dask' needs a dask.distributed Client created "
                                  "first (e.g. Client('tcp://host:8786')).") from exc
        elif scheduler == "local" or scheduler.startswith("local:"):
            workers = scheduler.partition(":")[2] or "2"
            if not workers.isdigit() or int(workers) < 1:
                raise ConfigError(f"scheduler={scheduler!r}: use 'local' or 'local:N' with "
                                  "N >= 1 workers.")
            cluster = stack.enter_context(LocalCluster(n_workers=int(workers),
                                                       threads_per_worker=1, processes=True,
                                                       dashboard_address=None))
            stack.enter_context(Client(cluster))
        else:
            stack.enter_context(Client(scheduler))
        stack.enter_context(joblib.parallel_config(backend="dask"))
        yield True


class ImageFeatures(TransformerMixin, BaseEstimator):
    """Base class: per-image features, in parallel, cached on disk (see the module docstring).

    A subclass sets ``_row_function`` (a module-level function ``(image, **options) -> row``),
    ``_description`` (progress-bar text), and implements :meth:`_options` (the checked options
    passed to the function), :meth:`_max_side` and :meth:`get_feature_names_out`. It must
    have the parameters ``n_jobs``, ``cache_dir``, ``progress`` and ``scheduler``.
    """

    _row_function: Callable[..., np.ndarray]
    _description = "image features"

    def _options(self) -> dict[str, Any]:
        raise NotImplementedError

    def _max_side(self) -> int | None:
        raise NotImplementedError

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        raise NotImplementedError

    def _versions(self) -> dict[str, Any]:
        """Library versions that change the rows (part of the cache key)."""
        return {}

    def _spec(self) -> dict[str, Any]:
        return {"kind": type(self).__name__, **self._options(), "max_side": self._max_side(),
                **self._versions(), "version": _CACHE_VERSION}

    def cache_key(self) -> str:
        """Name of the cache sub-folder for these options."""
        return spec_digest(self._spec())

    def fit(self, X: Any = None, y: Any = None) -> ImageFeatures:
        """Check the options; nothing is learned. Returns ``self``."""
        self._options()
        self.n_features_out_ = len(self.get_feature_names_out())
        return self

    def transform(self, X: Sequence[Any]) -> np.ndarray:
        """Features of each image, one row per input.

        Parameters
        ----------
        X : sequence of path-like or ndarray
            Image files or decoded ``uint8`` images.

        Returns
        -------
        ndarray of shape (n_images, n_features)

        Raises
        ------
        DataError
            When an image cannot be read: a transformer must return a row for every input.
            Use :meth:`extract`, which skips such images and says which ones.
        """
        result = self.extract(X)
        if result.errors:
            first, reason = next(iter(result.errors.items()))
            raise DataError(
                f"{len(result.errors)} of {len(result.ok)} images could not be read (first: "
                f"{first}: {reason}). Clean the data set first (notebook 01), or use "
                f"{type(self).__name__}.extract(), which skips them and returns a mask.")
        return result.features

    def _store(self) -> ContentStore | None:
        """Where the rows are kept: ``<cache_dir>/<cache_key>/`` (``None`` without a cache)."""
        return None if self.cache_dir is None else ContentStore.under(self.cache_dir, self._spec())

    def extract(self, X: Sequence[Any]) -> Extraction:
        """Features of each readable image; unreadable ones are skipped with a logged reason.

        Parameters
        ----------
        X : sequence of path-like or ndarray
            Image files or decoded ``uint8`` images.

        Returns
        -------
        Extraction
            Feature rows of the readable images, the mask of those, the reasons for the
            others, the time taken and how many rows came from the cache.
        """
        items = [x if isinstance(x, np.ndarray) else os.fspath(x) for x in X]
        options, max_side = self._options(), self._max_side()
        store = self._store()
        start = time.perf_counter()
        found: dict[int, np.ndarray] = {}
        errors: dict[str, str] = {}
        bar = tqdm(total=len(items), desc=self._description, unit="img",
                   disable=not self.progress or len(items) <= 1)
        if store is not None:  # cache hits need no workers
            for i, item in enumerate(items):
                row = _cached_row(item, store)
                if row is not None:
                    found[i] = row
                    bar.update()
        n_cached = len(found)
        pending = [i for i in range(len(items)) if i not in found]
        compute_start = time.perf_counter()
        # one image (a query photo) is not worth starting or waking workers for
        scheduler = self.scheduler if len(pending) > 1 else None
        with dask_backend(scheduler) as on_dask:
            n_jobs = -1 if on_dask else (1 if len(pending) <= 1 else self.n_jobs)
            results = Parallel(n_jobs=n_jobs, return_as="generator")(
                delayed(_features_of)(items[i], type(self)._row_function, options, max_side,
                                      store) for i in pending)
            for i, (row, reason) in zip(pending, results, strict=True):
                bar.update()
                if row is None:
                    name = "<array>" if isinstance(items[i], np.ndarray) else items[i]
                    log.warning("Skipped %s: %s", name, reason)
                    errors[f"{i}:{name}" if name == "<array>" else name] = str(reason)
                else:
                    found[i] = row
        bar.close()
        end = time.perf_counter()
        ok = np.array([i in found for i in range(len(items))], dtype=bool)
        rows = [found[i] for i in sorted(found)]
        width = len(self.get_feature_names_out())
        features = np.vstack(rows) if rows else np.empty((0, width))
        return Extraction(features=features, ok=ok, errors=errors, seconds=end - start,
                          n_cached=n_cached, compute_seconds=end - compute_start if pending
                          else 0.0)


class CombinedFeatures(FeatureUnion):
    """A :class:`~sklearn.pipeline.FeatureUnion` of :class:`ImageFeatures` (e.g. texture + color).

    ``transform`` concatenates the parts' columns as any FeatureUnion does;
    :meth:`extract` does the same but skips the images any part cannot read, like
    :meth:`ImageFeatures.extract`.

    Examples
    --------
    >>> union = CombinedFeatures([("texture", HaralickFeatures()),
    ...                           ("color", ColorHistogram())])  # doctest: +SKIP
    """

    def extract(self, X: Sequence[Any]) -> Extraction:
        """Features of each image readable by every part (see :meth:`ImageFeatures.extract`).

        ``n_cached`` is the smallest of the parts' cache hits; times are summed over the
        parts.
        """
        X = list(X)
        parts = [(name, t) for name, t in self.transformer_list if t not in ("drop", None)]
        if not parts:
            raise ConfigError("CombinedFeatures has no parts.")
        weights = self.transformer_weights or {}
        results = [(t.extract(X), weights.get(name, 1.0)) for name, t in parts]
        ok = np.logical_and.reduce([r.ok for r, _ in results])
        features = np.hstack([r.aligned(np.float64)[ok] * w for r, w in results])
        errors: dict[str, str] = {}
        for r, _ in results:
            errors.update(r.errors)
        return Extraction(features=features, ok=ok, errors=errors,
                          seconds=sum(r.seconds for r, _ in results),
                          n_cached=min(r.n_cached for r, _ in results),
                          compute_seconds=sum(r.compute_seconds for r, _ in results))
