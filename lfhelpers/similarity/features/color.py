"""Color histograms of photos, as a scikit-learn transformer to combine with the texture features.

The book the haralick tutorial follows (*Building Machine Learning Systems with Python*,
chapter 10) adds to the haralick features a color histogram, ``chist``: each RGB channel
quantised to 4 levels, the 64 color bins counted and ``log1p``-compressed. Texture describes
how grey levels neighbour each other and nothing of the colors; a histogram describes the
colors and nothing of their layout, so the two complement each other.

:class:`ColorHistogram` computes that histogram in RGB, HSV or CIELAB, with any number of
levels per channel, from a photo shrunk to ``max_side`` pixels, with the counts scaled to a
fixed number of pixels so that photo size does not change the features. It shares the
parallel extraction, disk cache and Dask option of :class:`HaralickFeatures`
(:class:`~lfhelpers.similarity.features.base.ImageFeatures`), and combines with it in a
:class:`~lfhelpers.similarity.features.base.CombinedFeatures` (a ``FeatureUnion``):
:func:`texture_and_color`. ``ColorHistogram(**BOOK_SETTINGS)`` is the book's ``chist``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageCms

from lfhelpers.errors import ConfigError
from lfhelpers.similarity.features.base import CombinedFeatures, ImageFeatures

#: Color spaces of :class:`ColorHistogram` and the names of their channels.
SPACES = {"rgb": ("r", "g", "b"), "hsv": ("h", "s", "v"), "lab": ("L", "a", "b")}

#: The book's ``chist``: RGB, 4 levels per channel (64 bins), ``log1p`` of raw pixel counts
#: of the full-size photo.
BOOK_SETTINGS: dict[str, Any] = {"space": "rgb", "bins": 4, "max_side": None,
                                 "per_pixels": None, "log": True}

_LAB_TRANSFORM: Any = None


def _to_space(image: np.ndarray, space: str) -> np.ndarray:
    """``uint8`` (H, W, 3) image in ``space``; CIELAB's a and b are shifted to 0..255."""
    global _LAB_TRANSFORM
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if space == "rgb":
        return image
    if space == "hsv":
        return np.asarray(Image.fromarray(image, "RGB").convert("HSV"))
    if _LAB_TRANSFORM is None:
        _LAB_TRANSFORM = ImageCms.buildTransformFromOpenProfiles(
            ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    lab = np.asarray(ImageCms.applyTransform(Image.fromarray(image, "RGB"), _LAB_TRANSFORM))
    # Pillow stores a and b as signed bytes: shift them so that 0..255 runs from -128 to 127
    out = lab.copy()
    out[..., 1:] = (lab[..., 1:].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
    return out


def _bins(bins: int | Sequence[int]) -> tuple[int, int, int]:
    values = (bins,) * 3 if isinstance(bins, int | np.integer) else tuple(bins)
    if len(values) != 3 or any(not 1 <= int(b) <= 64 for b in values):
        raise ConfigError(f"bins must be an int or 3 ints between 1 and 64 (levels per "
                          f"channel), got {bins!r}.")
    return int(values[0]), int(values[1]), int(values[2])


def color_histogram(
    image: np.ndarray,
    space: str = "lab",
    bins: int | Sequence[int] = (4, 8, 8),
    per_pixels: int | None = 65_536,
    log: bool = True,
) -> np.ndarray:
    """The color histogram of one decoded image.

    Parameters
    ----------
    image : ndarray
        ``uint8`` (H, W, 3) RGB or (H, W) greyscale image.
    space, bins, per_pixels, log
        As in :class:`ColorHistogram`.

    Returns
    -------
    ndarray of shape (bins[0] * bins[1] * bins[2],)
        Bin of (c0, c1, c2) at ``(c0 * bins[1] + c1) * bins[2] + c2``.
    """
    if space not in SPACES:
        raise ConfigError(f"space must be one of {sorted(SPACES)}, got {space!r}.")
    b = _bins(bins)
    planes = _to_space(image, space)
    levels = [(planes[..., c].astype(np.uint32) * b[c]) >> 8 for c in range(3)]
    index = (levels[0] * b[1] + levels[1]) * b[2] + levels[2]
    hist = np.bincount(index.ravel(), minlength=b[0] * b[1] * b[2]).astype(np.float64)
    if per_pixels is not None:
        hist *= float(per_pixels) / max(index.size, 1)
    return np.log1p(hist) if log else hist


class ColorHistogram(ImageFeatures):
    """Color histogram of image files, as a scikit-learn transformer.

    The defaults (CIELAB, 4 lightness × 8 × 8 color levels, photo shrunk to 256 pixels,
    ``log1p`` of the counts per 65,536 pixels: 256 numbers) were chosen by leave-one-out
    accuracy on three data sets (``benchmarks/bench_haralick.py``); CIELAB separates lightness
    from color, so a shadow moves a pixel along one axis only.

    Parameters
    ----------
    space : {"lab", "rgb", "hsv"}
        Color space of the histogram.
    bins : int or sequence of 3 ints
        Levels per channel (each channel's 0..255 range cut into equal parts); the histogram
        has their product of bins. The book's is 4 (64 RGB bins).
    max_side : int or None
        Shrink each photo so that its longer side is at most this many pixels first (never
        enlarged; default 256); ``None`` keeps full size (the book's).
    per_pixels : int or None
        Scale the counts to this many pixels (default 65,536, a 256 × 256 photo) so that the
        features do not depend on the photo's size; ``None`` keeps raw counts (the book's).
    log : bool
        ``log1p`` of the counts (the book's), which keeps small color areas visible.
    n_jobs, cache_dir, progress, scheduler
        As in :class:`~lfhelpers.similarity.features.texture.HaralickFeatures`.
    """

    _row_function = staticmethod(color_histogram)
    _description = "color histograms"

    def __init__(
        self,
        space: str = "lab",
        bins: int | Sequence[int] = (4, 8, 8),
        max_side: int | None = 256,
        per_pixels: int | None = 65_536,
        log: bool = True,
        n_jobs: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
        scheduler: str | None = None,
    ):
        self.space = space
        self.bins = bins
        self.max_side = max_side
        self.per_pixels = per_pixels
        self.log = log
        self.n_jobs = n_jobs
        self.cache_dir = cache_dir
        self.progress = progress
        self.scheduler = scheduler

    def _options(self) -> dict[str, Any]:
        if self.space not in SPACES:
            raise ConfigError(f"space must be one of {sorted(SPACES)}, got {self.space!r}.")
        if self.per_pixels is not None and int(self.per_pixels) < 1:
            raise ConfigError(f"per_pixels must be None or positive, got {self.per_pixels!r}.")
        self._max_side()
        return {"space": self.space, "bins": list(_bins(self.bins)),
                "per_pixels": None if self.per_pixels is None else int(self.per_pixels),
                "log": bool(self.log)}

    def _max_side(self) -> int | None:
        if self.max_side is not None and int(self.max_side) < 8:
            raise ConfigError(f"max_side must be None or at least 8 pixels, got "
                              f"{self.max_side!r}.")
        return None if self.max_side is None else int(self.max_side)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the output columns, e.g. ``lab_L0_a3_b7``."""
        opts = self._options()
        names = SPACES[opts["space"]]
        b = opts["bins"]
        return np.array([f"{opts['space']}_{names[0]}{i}_{names[1]}{j}_{names[2]}{k}"
                         for i in range(b[0]) for j in range(b[1]) for k in range(b[2])],
                        dtype=object)


def texture_and_color(texture: ImageFeatures | None = None,
                      color: ImageFeatures | None = None) -> CombinedFeatures:
    """Texture and color features side by side, as one transformer (a ``FeatureUnion``).

    Parameters
    ----------
    texture : HaralickFeatures, optional
        Default ``HaralickFeatures()``.
    color : ColorHistogram, optional
        Default ``ColorHistogram()``.

    Returns
    -------
    CombinedFeatures
        Its columns: the texture features, then the color histogram.
    """
    from lfhelpers.similarity.features.texture import HaralickFeatures

    return CombinedFeatures([("texture", texture if texture is not None else HaralickFeatures()),
                             ("color", color if color is not None else ColorHistogram())])
