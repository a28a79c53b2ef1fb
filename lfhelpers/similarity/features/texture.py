"""Haralick texture features of photos, as a scikit-learn transformer.

The tutorial this follows turned each photo to greyscale, took mahotas'
:func:`~mahotas.features.haralick` (13 features in each of 4 directions, ``.ravel()`` to 52
numbers), checked ``StandardScaler`` + ``LogisticRegression`` by cross-validation, and ranked
images by the distance between their standardised features. :class:`HaralickFeatures` does the
same work, faster and with the options that matter: co-occurrence ``distance``, the 4
``directions`` or their mean (and range), the 14th feature, grey-level quantisation
(``levels``), shrinking to ``max_side`` pixels before extraction (JPEGs are decoded at reduced
size, which is most of the speed-up on big photos) and per-channel features (``channels``).
Extraction runs in parallel (``n_jobs``, or on a Dask cluster with ``scheduler``), with a
progress bar, and each image's features are cached on disk under a key made of the file's
content hash and the options (see :mod:`lfhelpers.similarity.features.base`).

Two presets (:data:`PRESETS`): ``HaralickFeatures(preset="tutorial")`` reproduces the
tutorial exactly (its rows equal
``mahotas.features.haralick(mahotas.colors.rgb2gray(image, dtype=np.uint8)).ravel()``);
``"default"`` is the class defaults. The book's color histogram, to combine with these, is
:class:`lfhelpers.similarity.features.color.ColorHistogram`; the classifier and the
evaluation are in :mod:`lfhelpers.similarity.evaluation.texture`, the similarity search is
:meth:`lfhelpers.similarity.search.gallery.GalleryIndex.for_features`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import Any

import mahotas
import numpy as np
from PIL import Image

from lfhelpers.errors import ConfigError
from lfhelpers.similarity.features.base import CombinedFeatures, Extraction, ImageFeatures

__all__ = ["CHANNELS", "DIRECTION_NAMES", "FEATURE_NAMES", "PRESETS", "TUTORIAL_SETTINGS",
           "CombinedFeatures", "Extraction", "HaralickFeatures", "haralick_image",
           "tutorial_features"]

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




class HaralickFeatures(ImageFeatures):
    """Haralick texture features of image files, as a scikit-learn transformer.

    The input ``X`` of :meth:`transform` is a sequence of image file paths (or decoded
    ``uint8`` arrays); the output has one row per image. Nothing is learned, so :meth:`fit`
    only checks the options.

    The defaults describe a photo shrunk to 256 pixels, quantised to 64 grey levels, at
    offsets 1 and 3, in four planes (grey, hue, saturation, value), with the mean and range
    over the 4 directions: 4 × 2 × 26 = 208 numbers. On 5-megapixel photos this is tens of
    times faster than the tutorial's full-size, 256-level grey features and classifies better
    (``benchmarks/bench_haralick.py`` measures both). ``HaralickFeatures(preset="tutorial")``
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
    preset : {"default", "tutorial"} or None
        Take every feature option above from :data:`PRESETS` instead: ``"tutorial"`` is the
        tutorial's method (:data:`TUTORIAL_SETTINGS`). Setting an option to another value than
        its default together with a preset is an error (one or the other).
    n_jobs : int, optional
        Parallel workers (joblib; ``-1`` = all cores). ``None`` uses joblib's configured
        default, which is 1 unless set with :func:`joblib.parallel_config`.
    cache_dir : path-like, optional
        Folder of the disk cache; ``None`` disables caching. Entries live under a sub-folder
        named after the options, one ``.npy`` per image content hash.
    progress : bool
        Show a tqdm progress bar.
    scheduler : str, optional
        ``None`` or ``""``: local joblib workers. ``"dask"`` (the current Dask client),
        ``"local:N"`` or a scheduler address: extract on a Dask cluster (see
        :func:`lfhelpers.similarity.features.base.dask_backend`).

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> model = make_pipeline(HaralickFeatures(n_jobs=2), make_classifier())  # doctest: +SKIP
    >>> model.fit(train_files, train_labels).score(test_files, test_labels)  # doctest: +SKIP
    """

    _row_function = staticmethod(haralick_image)
    _description = "haralick features"

    def __init__(
        self,
        distance: int | Sequence[int] = (1, 3),
        directions: str = "mean_range",
        include_14th: bool = False,
        levels: int = 64,
        max_side: int | None = 256,
        channels: str = "gray+hsv",
        preset: str | None = None,
        n_jobs: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
        scheduler: str | None = None,
    ):
        self.distance = distance
        self.directions = directions
        self.include_14th = include_14th
        self.levels = levels
        self.max_side = max_side
        self.channels = channels
        self.preset = preset
        self.n_jobs = n_jobs
        self.cache_dir = cache_dir
        self.progress = progress
        self.scheduler = scheduler

    def settings(self) -> dict[str, Any]:
        """The feature options in effect (the preset's, or the parameters), unchecked."""
        own = {name: getattr(self, name) for name in _OPTION_NAMES}
        if not self.preset:
            return own
        if self.preset not in PRESETS:
            raise ConfigError(f"preset must be one of {sorted(PRESETS)} or None, got "
                              f"{self.preset!r}.")
        defaults = _option_defaults()
        changed = [name for name in _OPTION_NAMES if _norm(own[name]) != _norm(defaults[name])
                   and _norm(own[name]) != _norm(PRESETS[self.preset][name])]
        if changed:
            raise ConfigError(f"preset={self.preset!r} fixes the feature options; also "
                              f"setting {changed} is ambiguous. Use the preset alone, or set "
                              "the options without a preset.")
        return dict(PRESETS[self.preset])

    def _options(self) -> dict[str, Any]:
        """The options that change the features (checked), without ``max_side``."""
        opts = self.settings()
        if opts["directions"] not in _DIRECTIONS:
            raise ConfigError(f"directions must be one of {_DIRECTIONS}, got "
                              f"{opts['directions']!r}.")
        if not 2 <= int(opts["levels"]) <= 256:
            raise ConfigError(f"levels must be between 2 and 256, got {opts['levels']!r}.")
        self._max_side()
        return {"distance": list(_distances(opts["distance"])),
                "directions": opts["directions"], "include_14th": bool(opts["include_14th"]),
                "levels": int(opts["levels"]),
                "channels": "+".join(_channel_names(opts["channels"]))}

    def _max_side(self) -> int | None:
        max_side = self.settings()["max_side"]
        if max_side is not None and int(max_side) < 8:
            raise ConfigError(f"max_side must be None or at least 8 pixels, got {max_side!r}.")
        return None if max_side is None else int(max_side)

    def _versions(self) -> dict[str, Any]:
        return {"mahotas": mahotas.__version__}

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


_OPTION_NAMES = ("distance", "directions", "include_14th", "levels", "max_side", "channels")


def _option_defaults() -> dict[str, Any]:
    params = inspect.signature(HaralickFeatures.__init__).parameters
    return {name: params[name].default for name in _OPTION_NAMES}


def _norm(value: Any) -> Any:
    """Compare lists and tuples (and ints in them) alike."""
    if isinstance(value, list | tuple):
        return tuple(int(v) for v in value)
    return value


#: The named settings of :class:`HaralickFeatures` (``preset=``): ``"default"`` (the class
#: defaults) and ``"tutorial"`` (:data:`TUTORIAL_SETTINGS`).
PRESETS: dict[str, dict[str, Any]] = {"default": _option_defaults(),
                                      "tutorial": dict(TUTORIAL_SETTINGS)}


def tutorial_features(path: str | os.PathLike[str]) -> np.ndarray:
    """The tutorial's features of one file, exactly as it computed them (for comparisons).

    ``mahotas.imread`` -> ``mahotas.colors.rgb2gray(im, dtype=np.uint8)`` ->
    ``mahotas.features.haralick(im).ravel()``: full size, 256 grey levels, 52 numbers.
    """
    im = mahotas.imread(os.fspath(path))
    im = mahotas.colors.rgb2gray(im, dtype=np.uint8)
    return mahotas.features.haralick(im).ravel()
