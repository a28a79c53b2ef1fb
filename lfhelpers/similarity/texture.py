"""Haralick texture features, their classifier, and texture similarity search.

The tutorial this follows turned each photo to greyscale, took mahotas'
:func:`~mahotas.features.haralick` (13 features in each of 4 directions, ``.ravel()`` to 52
numbers), checked ``StandardScaler`` + ``LogisticRegression`` by cross-validation, and ranked
images by the distance between their standardised features. This module does the same work,
faster and with the options that matter:

* :class:`HaralickFeatures`: a scikit-learn transformer from image files (or arrays) to feature
  rows. Options: co-occurrence ``distance``, the 4 ``directions`` or their mean (and range), the
  14th feature, grey-level quantisation (``levels``), shrinking to ``max_side`` pixels before
  extraction (JPEGs are decoded at reduced size, which is most of the speed-up on big photos),
  and per-channel features (``channels``). Extraction runs in parallel (``n_jobs``) with a
  progress bar, and each image's features are cached on disk under a key made of the file's
  content hash and the options.
* :func:`evaluate`: leave-one-out and 5-fold accuracy of the classifier, a per-class report and
  a confusion matrix.
* :class:`TextureIndex`: the found-items gallery as a nearest-neighbour index;
  :meth:`TextureIndex.nearest` finds the most similar gallery photos for a photo from outside the
  gallery, :meth:`TextureIndex.leave_one_out` does it for each gallery photo against the others.

``HaralickFeatures(**TUTORIAL_SETTINGS)`` reproduces the tutorial exactly: its rows equal
``mahotas.features.haralick(mahotas.colors.rgb2gray(image, dtype=np.uint8)).ravel()``.

Running on a Dask cluster
-------------------------
Extraction goes through :class:`joblib.Parallel`, so the same code runs on a Dask cluster by
choosing joblib's ``dask`` backend (``pip install "dask[distributed]"``)::

    import joblib
    from dask.distributed import Client

    client = Client("tcp://scheduler-host:8786")   # or Client() for a local cluster
    with joblib.parallel_config(backend="dask"):
        features = HaralickFeatures(n_jobs=-1, cache_dir="/shared/cache/haralick").transform(files)

The workers open the image files themselves, so the paths must be readable on every worker (a
shared file system or mount), and so must ``cache_dir`` when it is set. Only the file paths
travel to the workers and only the small feature rows come back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mahotas
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from PIL import Image
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import classification_report, confusion_matrix
from sklearn.model_selection import (
    LeaveOneOut,
    StratifiedKFold,
    cross_val_predict,
    cross_val_score,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from lfhelpers.errors import ConfigError, DataError
from lfhelpers.fsutil import atomic_write
from lfhelpers.images import load_array
from lfhelpers.plots import image_grid
from lfhelpers.similarity.index import NeighbourIndex

log = logging.getLogger(__name__)

#: Names of mahotas' haralick features, in order (the 14th only with ``include_14th``).
FEATURE_NAMES = (
    "angular_second_moment", "contrast", "correlation", "sum_of_squares_variance",
    "inverse_difference_moment", "sum_average", "sum_variance", "sum_entropy", "entropy",
    "difference_variance", "difference_entropy", "info_measure_correlation_1",
    "info_measure_correlation_2", "max_correlation_coefficient",
)

#: mahotas' 4 co-occurrence directions, in its order: offsets (0, 1), (1, 1), (1, 0), (1, -1)
#: as (row, column); the matrices are symmetric, so these are 0°, 135°, 90° and 45°.
DIRECTION_NAMES = ("0deg", "135deg", "90deg", "45deg")

#: Channel names for ``channels`` (join several with ``+``); ``rgb`` and ``hsv`` are shorthands.
CHANNELS = ("gray", "r", "g", "b", "h", "s", "v")
_CHANNEL_ALIASES = {"grey": ("gray",), "rgb": ("r", "g", "b"), "hsv": ("h", "s", "v")}
_DIRECTIONS = ("all", "mean", "mean_range")

#: mahotas' grey conversion (``mahotas.colors.rgb2grey``).
_GREY_WEIGHTS = np.array([0.30, 0.59, 0.11])

#: The tutorial's settings: full-size greyscale, 256 grey levels, 13 features × 4 directions.
TUTORIAL_SETTINGS: dict[str, Any] = {
    "distance": 1, "directions": "all", "include_14th": False, "levels": 256,
    "max_side": None, "channels": "gray",
}

_CACHE_VERSION = 2


# --------------------------------------------------------------------------- one image


def _channel_names(channels: str) -> tuple[str, ...]:
    names: list[str] = []
    for part in str(channels).lower().replace(" ", "").split("+"):
        for name in _CHANNEL_ALIASES.get(part, (part,)):
            if name not in CHANNELS:
                raise ConfigError(f"Unknown channel {part!r} in channels={channels!r}; use "
                                  f"names from {CHANNELS} or 'rgb'/'hsv', joined with '+'.")
            names.append(name)
    if not names:
        raise ConfigError("channels is empty; use e.g. 'gray' or 'gray+hsv'.")
    return tuple(names)


def _plane(image: np.ndarray, name: str) -> np.ndarray:
    """One uint8 channel of ``image`` (greyscale images give the same plane for every name)."""
    if image.ndim == 2:
        return np.zeros_like(image) if name in ("h", "s") else image
    if name == "gray":
        return np.dot(image.astype(np.float64), _GREY_WEIGHTS).astype(np.uint8)
    if name in ("r", "g", "b"):
        return np.ascontiguousarray(image[..., "rgb".index(name)])
    hsv = np.asarray(Image.fromarray(image, "RGB").convert("HSV"))
    return np.ascontiguousarray(hsv[..., "hsv".index(name)])


def _distances(distance: int | Sequence[int]) -> tuple[int, ...]:
    values = (distance,) if isinstance(distance, int | np.integer) else tuple(distance)
    if not values or any(int(d) < 1 for d in values):
        raise ConfigError(f"distance must be a positive int or a list of them, got {distance!r}.")
    return tuple(int(d) for d in values)


def haralick_image(
    image: np.ndarray,
    distance: int | Sequence[int] = (1, 3),
    directions: str = "mean_range",
    include_14th: bool = False,
    levels: int = 64,
    channels: str = "gray+hsv",
) -> np.ndarray:
    """Haralick features of one decoded image.

    Parameters
    ----------
    image : ndarray
        ``uint8`` (H, W, 3) RGB or (H, W) greyscale image (:func:`lfhelpers.images.load_array`).
    distance, directions, include_14th, levels, channels
        As in :class:`HaralickFeatures`.

    Returns
    -------
    ndarray of shape (n_features,)
        Per channel, per distance: the 13 (or 14) features of each direction one after the
        other (``directions="all"``), their mean, or their mean followed by their range.
    """
    if directions not in _DIRECTIONS:
        raise ConfigError(f"directions must be one of {_DIRECTIONS}, got {directions!r}.")
    if not 2 <= int(levels) <= 256:
        raise ConfigError(f"levels must be between 2 and 256, got {levels!r}.")
    parts = []
    for name in _channel_names(channels):
        plane = _plane(image, name)
        if levels < 256:
            plane = ((plane.astype(np.uint16) * int(levels)) >> 8).astype(np.uint8)
        for d in _distances(distance):
            per_direction = mahotas.features.haralick(
                plane, distance=d, compute_14th_feature=bool(include_14th))
            if directions == "all":
                parts.append(per_direction.ravel())
            elif directions == "mean":
                parts.append(per_direction.mean(axis=0))
            else:
                parts.append(np.concatenate([per_direction.mean(axis=0),
                                             np.ptp(per_direction, axis=0)]))
    return np.concatenate(parts)


def _content_key(item: Any) -> tuple[str, bytes | np.ndarray]:
    """Return (sha256 hex, payload) for a file path or an array."""
    if isinstance(item, np.ndarray):
        digest = hashlib.sha256(f"{item.dtype}{item.shape}".encode())
        digest.update(np.ascontiguousarray(item).tobytes())
        return digest.hexdigest(), item
    data = Path(item).read_bytes()
    return hashlib.sha256(data).hexdigest(), data


def _cached_row(item: Any, cache_dir: str) -> np.ndarray | None:
    """The cached features of ``item``, or ``None`` (not cached, unreadable, damaged entry)."""
    try:
        key, _ = _content_key(item)
    except OSError:
        return None  # the worker reports why the file cannot be read
    cache_file = Path(cache_dir) / key[:2] / f"{key}.npy"
    if not cache_file.exists():
        return None
    try:
        return np.load(cache_file)
    except (OSError, ValueError) as exc:
        log.warning("Ignoring damaged cache entry %s (%s); recomputing.", cache_file, exc)
        return None


def _features_of(item: Any, options: dict[str, Any], max_side: int | None,
                 cache_dir: str | None) -> tuple[np.ndarray | None, str | None]:
    """Worker: features of one image -> (row or None, reason when skipped); fills the cache."""
    try:
        key, payload = _content_key(item)
        row = haralick_image(load_array(payload, max_side), **options)
        if not np.all(np.isfinite(row)):
            return None, "texture features are not finite (a flat or tiny image?)"
        if cache_dir is not None:
            with atomic_write(Path(cache_dir) / key[:2] / f"{key}.npy", "wb") as fh:
                np.save(fh, row)
        return row, None
    except (ConfigError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - any undecodable image is skipped with its reason
        return None, f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- many images


@dataclass
class Extraction:
    """Result of :meth:`HaralickFeatures.extract`.

    Attributes
    ----------
    features : ndarray of shape (n_ok, n_features)
        Rows of the images that could be read, in input order.
    ok : ndarray of bool, shape (n,)
        Which inputs have a row in ``features``.
    errors : dict
        Input (as str) -> reason, for each skipped image.
    seconds : float
        Wall-clock time of the extraction.
    n_cached : int
        Rows read from the disk cache instead of computed.
    """

    features: np.ndarray
    ok: np.ndarray
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    n_cached: int = 0

    @property
    def images_per_second(self) -> float:
        """Images handled per second of wall-clock time."""
        return float(len(self.ok) / self.seconds) if self.seconds > 0 else float("inf")

    def aligned(self, dtype: type = np.float32) -> np.ndarray:
        """A row per input: skipped inputs get a row of NaN (for aligning several sets)."""
        out = np.full((len(self.ok), self.features.shape[1]), np.nan, dtype=dtype)
        out[self.ok] = self.features
        return out


class HaralickFeatures(TransformerMixin, BaseEstimator):
    """Haralick texture features of image files, as a scikit-learn transformer.

    The input ``X`` of :meth:`transform` is a sequence of image file paths (or decoded
    ``uint8`` arrays); the output has one row per image. Nothing is learned, so :meth:`fit`
    only checks the options.

    The defaults describe a photo shrunk to 256 pixels, quantised to 64 grey levels, at
    offsets 1 and 3, in four planes (grey, hue, saturation, value), with the mean and range
    over the 4 directions: 4 × 2 × 26 = 208 numbers. On 5-megapixel photos this is tens of
    times faster than the tutorial's full-size, 256-level grey features and classifies better
    (``benchmarks/bench_haralick.py`` measures both). ``HaralickFeatures(**TUTORIAL_SETTINGS)``
    gives the tutorial's 52 numbers exactly.

    Parameters
    ----------
    distance : int or sequence of int
        Pixel offset of the co-occurrence matrices; several values concatenate their features
        (a coarse multi-scale description). Default ``(1, 3)``.
    directions : {"mean_range", "mean", "all"}
        ``"all"`` keeps the 4 directions (13 × 4 = 52 numbers per channel, the tutorial's);
        ``"mean"`` averages them (rotation-tolerant, 13 numbers); ``"mean_range"`` adds their
        range (26 numbers), which keeps how directional the texture is.
    include_14th : bool
        Also compute the 14th feature (maximal correlation coefficient). Slow at 256 levels.
    levels : int
        Grey levels after quantisation (2-256; default 64). 256 is the tutorial's; fewer levels
        make the co-occurrence matrices smaller, which is far faster and less sensitive to
        noise.
    max_side : int or None
        Shrink each image so that its longer side is at most this many pixels before
        extraction (never enlarged; default 256); ``None`` keeps full size (the tutorial's).
    channels : str
        Which planes to describe, joined with ``+``: ``gray`` (mahotas' rgb2grey), ``r``,
        ``g``, ``b``, ``h``, ``s``, ``v``, or the shorthands ``rgb`` and ``hsv``. Features of
        each channel are concatenated. Default ``"gray+hsv"``; the tutorial's is ``"gray"``.
    n_jobs : int, optional
        Parallel workers (joblib; ``-1`` = all cores). ``None`` uses joblib's configured
        default, which is 1 unless set with :func:`joblib.parallel_config` (see the module
        docstring for running on a Dask cluster).
    cache_dir : path-like, optional
        Folder of the disk cache; ``None`` disables caching. Entries live under a sub-folder
        named after the options, one ``.npy`` per image content hash.
    progress : bool
        Show a tqdm progress bar.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> model = make_pipeline(HaralickFeatures(n_jobs=2), make_classifier())  # doctest: +SKIP
    >>> model.fit(train_files, train_labels).score(test_files, test_labels)  # doctest: +SKIP
    """

    def __init__(
        self,
        distance: int | Sequence[int] = (1, 3),
        directions: str = "mean_range",
        include_14th: bool = False,
        levels: int = 64,
        max_side: int | None = 256,
        channels: str = "gray+hsv",
        n_jobs: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
    ):
        self.distance = distance
        self.directions = directions
        self.include_14th = include_14th
        self.levels = levels
        self.max_side = max_side
        self.channels = channels
        self.n_jobs = n_jobs
        self.cache_dir = cache_dir
        self.progress = progress

    # -- options ---------------------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        """The options that change the features (checked), without ``max_side``."""
        if self.directions not in _DIRECTIONS:
            raise ConfigError(f"directions must be one of {_DIRECTIONS}, got "
                              f"{self.directions!r}.")
        if not 2 <= int(self.levels) <= 256:
            raise ConfigError(f"levels must be between 2 and 256, got {self.levels!r}.")
        if self.max_side is not None and int(self.max_side) < 8:
            raise ConfigError(f"max_side must be None or at least 8 pixels, got "
                              f"{self.max_side!r}.")
        return {"distance": list(_distances(self.distance)), "directions": self.directions,
                "include_14th": bool(self.include_14th), "levels": int(self.levels),
                "channels": "+".join(_channel_names(self.channels))}

    def _max_side(self) -> int | None:
        return None if self.max_side is None else int(self.max_side)

    def cache_key(self) -> str:
        """Name of the cache sub-folder for these options (and this mahotas version)."""
        spec = {**self._options(), "max_side": self._max_side(), "mahotas": mahotas.__version__,
                "version": _CACHE_VERSION}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the output columns, e.g. ``gray_d1_mean_contrast``."""
        opts = self._options()
        names = FEATURE_NAMES[: 14 if opts["include_14th"] else 13]
        if opts["directions"] == "all":
            groups = [(dn, names) for dn in DIRECTION_NAMES]
        elif opts["directions"] == "mean":
            groups = [("mean", names)]
        else:
            groups = [("mean", names), ("range", names)]
        return np.array([f"{ch}_d{d}_{group}_{name}"
                         for ch in opts["channels"].split("+") for d in opts["distance"]
                         for group, group_names in groups for name in group_names], dtype=object)

    # -- scikit-learn API ------------------------------------------------------------------

    def fit(self, X: Any = None, y: Any = None) -> HaralickFeatures:
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
                "HaralickFeatures.extract(), which skips them and returns a mask.")
        return result.features

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
        cache_dir = None
        if self.cache_dir is not None:
            folder = Path(self.cache_dir) / self.cache_key()
            folder.mkdir(parents=True, exist_ok=True)
            spec = folder / "options.json"
            if not spec.exists():
                with atomic_write(spec) as fh:
                    json.dump({**options, "max_side": max_side, "mahotas": mahotas.__version__},
                              fh, indent=2)
            cache_dir = str(folder)
        start = time.perf_counter()
        found: dict[int, np.ndarray] = {}
        errors: dict[str, str] = {}
        bar = tqdm(total=len(items), desc="haralick features", unit="img",
                   disable=not self.progress or not items)
        if cache_dir is not None:  # cache hits need no workers
            for i, item in enumerate(items):
                row = _cached_row(item, cache_dir)
                if row is not None:
                    found[i] = row
                    bar.update()
        n_cached = len(found)
        pending = [i for i in range(len(items)) if i not in found]
        # one image (a query photo) is not worth starting or waking workers for
        n_jobs = 1 if len(pending) <= 1 else self.n_jobs
        results = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_features_of)(items[i], options, max_side, cache_dir) for i in pending)
        for i, (row, reason) in zip(pending, results, strict=True):
            bar.update()
            if row is None:
                name = "<array>" if isinstance(items[i], np.ndarray) else items[i]
                log.warning("Skipped %s: %s", name, reason)
                errors[f"{i}:{name}" if name == "<array>" else name] = str(reason)
            else:
                found[i] = row
        bar.close()
        ok = np.array([i in found for i in range(len(items))], dtype=bool)
        rows = [found[i] for i in sorted(found)]
        seconds = time.perf_counter() - start
        width = len(self.get_feature_names_out())
        features = np.vstack(rows) if rows else np.empty((0, width))
        return Extraction(features=features, ok=ok, errors=errors, seconds=seconds,
                          n_cached=n_cached)


def tutorial_features(path: str | os.PathLike[str]) -> np.ndarray:
    """The tutorial's features of one file, exactly as it computed them (for comparisons).

    ``mahotas.imread`` -> ``mahotas.colors.rgb2gray(im, dtype=np.uint8)`` ->
    ``mahotas.features.haralick(im).ravel()``: full size, 256 grey levels, 52 numbers.
    """
    im = mahotas.imread(os.fspath(path))
    im = mahotas.colors.rgb2gray(im, dtype=np.uint8)
    return mahotas.features.haralick(im).ravel()


# --------------------------------------------------------------------------- data selection


# --------------------------------------------------------------------------- evaluation


def make_classifier(seed: int = 42, C: float = 1.0) -> Pipeline:
    """The tutorial's classifier: ``StandardScaler`` then ``LogisticRegression``.

    ``max_iter`` is raised from scikit-learn's 100 so that it converges on these features.
    """
    return Pipeline([("scale", StandardScaler()),
                     ("classifier", LogisticRegression(C=C, max_iter=2000, random_state=seed))])


@dataclass
class Evaluation:
    """Result of :func:`evaluate`.

    Attributes
    ----------
    loocv_accuracy, cv_accuracy : float
        Leave-one-out accuracy; mean accuracy of the k folds.
    cv_scores : ndarray
        Accuracy of each fold.
    loocv_predictions : ndarray
        The leave-one-out prediction of each image.
    report : pandas.DataFrame
        Precision, recall, F1 and support per class (leave-one-out predictions).
    confusion : pandas.DataFrame
        Counts, rows = true class, columns = predicted class.
    """

    loocv_accuracy: float
    cv_accuracy: float
    cv_scores: np.ndarray
    loocv_predictions: np.ndarray
    report: pd.DataFrame
    confusion: pd.DataFrame

    def table(self) -> pd.DataFrame:
        """Accuracy table: leave-one-out and k-fold, with the fold spread."""
        k = len(self.cv_scores)
        return pd.DataFrame(
            {"accuracy": [self.loocv_accuracy, self.cv_accuracy],
             "std over folds": [np.nan, float(np.std(self.cv_scores))],
             "models fitted": [len(self.loocv_predictions), k]},
            index=pd.Index(["leave-one-out", f"{k}-fold (stratified)"], name="validation"))


def evaluate(features: np.ndarray, labels: Sequence[str], seed: int = 42, n_splits: int = 5,
             n_jobs: int | None = None, classifier: Pipeline | None = None) -> Evaluation:
    """Leave-one-out and stratified k-fold accuracy of the classifier on ``features``.

    Parameters
    ----------
    features : ndarray of shape (n, d)
        One row per image.
    labels : sequence of str
        Class of each image; every class needs at least 2 images.
    seed : int
        Seed of the fold shuffling and the classifier.
    n_splits : int
        Folds of the k-fold estimate (lowered to the smallest class size when needed).
    n_jobs : int, optional
        Parallel fits.
    classifier : Pipeline, optional
        Default :func:`make_classifier`.

    Returns
    -------
    Evaluation
    """
    X = np.asarray(features, dtype=float)
    y = np.asarray(labels, dtype=str)
    if len(X) != len(y):
        raise DataError(f"{len(X)} feature rows but {len(y)} labels.")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2 or counts.min() < 2:
        raise DataError(f"Need at least 2 classes with 2+ images each; got "
                        f"{dict(zip(classes, counts.tolist(), strict=True))}. Drop the small "
                        "classes (sample_per_class does) or add images.")
    clf = classifier if classifier is not None else make_classifier(seed)
    folds = min(n_splits, int(counts.min()))
    if folds < n_splits:
        log.warning("Using %d folds instead of %d: the smallest class has %d images.",
                    folds, n_splits, counts.min())
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    cv_scores = cross_val_score(clf, X, y, cv=cv, n_jobs=n_jobs)
    predictions = cross_val_predict(clf, X, y, cv=LeaveOneOut(), n_jobs=n_jobs)
    report = pd.DataFrame(classification_report(y, predictions, labels=classes,
                                                output_dict=True, zero_division=0)).T
    report["support"] = report["support"].astype(int)
    confusion = pd.DataFrame(confusion_matrix(y, predictions, labels=classes),
                             index=pd.Index(classes, name="true"),
                             columns=pd.Index(classes, name="predicted"))
    return Evaluation(loocv_accuracy=float(np.mean(predictions == y)),
                      cv_accuracy=float(np.mean(cv_scores)), cv_scores=cv_scores,
                      loocv_predictions=predictions, report=report, confusion=confusion)


def plot_confusion(confusion: pd.DataFrame, title: str = "Confusion matrix (leave-one-out)",
                   ax: plt.Axes | None = None) -> plt.Axes:
    """Confusion matrix as an annotated heat-map (rows true, columns predicted).

    Parameters
    ----------
    confusion : pandas.DataFrame
        :attr:`Evaluation.confusion`.
    title : str
        Axes title.
    ax : matplotlib Axes, optional
        Where to draw.

    Returns
    -------
    matplotlib.axes.Axes
    """
    n = len(confusion)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6.5, 0.8 * n + 3.5), max(5.0, 0.7 * n + 2.5)))
    values = confusion.to_numpy()
    image = ax.imshow(values, cmap="Blues")
    ax.figure.colorbar(image, ax=ax, label="images")
    for (i, j), count in np.ndenumerate(values):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                color="white" if count > values.max() / 2 else "black")
    ax.set_xticks(range(n), confusion.columns, rotation=45, ha="right")
    ax.set_yticks(range(n), confusion.index)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    ax.figure.tight_layout()
    return ax


# --------------------------------------------------------------------------- similarity


class TextureIndex:
    """The found-items gallery as a nearest-neighbour index of standardised haralick features.

    Parameters
    ----------
    extractor : HaralickFeatures, optional
        Feature extractor (default: ``HaralickFeatures()``).
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

    def __init__(self, extractor: HaralickFeatures | None = None, metric: str = "cosine"):
        self.extractor = extractor
        self.metric = metric

    def _extractor(self) -> HaralickFeatures:
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
        extraction = clone(self._extractor()).set_params(progress=False).extract([query_image])
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
