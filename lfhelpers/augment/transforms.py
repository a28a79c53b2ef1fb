"""The tutorial's random transforms: OpenCV on arrays (seeded per image) and Keras layers.

The tutorial augmented with Keras's ``ImageDataGenerator`` (rotation 40 degrees, width and
height shift 0.2, shear 0.2, zoom 0.2, horizontal flip, fill mode ``nearest``).
:class:`AugmentParams` holds those ranges, :func:`augment_array` applies one random draw of them
with :func:`cv2.warpAffine`, and :func:`keras_augmentation` offers the same transforms as
Keras 3 preprocessing layers for augmenting online during training. :func:`params_by_class`
gives a class its own ranges, e.g. no mirroring for ID cards whose text would read backwards.
"""

from __future__ import annotations

import hashlib
import logging
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

from lfhelpers.errors import ConfigError

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

_BORDERS = {
    "nearest": cv2.BORDER_REPLICATE,
    "reflect": cv2.BORDER_REFLECT,
    "wrap": cv2.BORDER_WRAP,
    "constant": cv2.BORDER_CONSTANT,
}


@dataclass(frozen=True)
class AugmentParams:
    """Random transform ranges; the defaults are the tutorial's ``ImageDataGenerator`` settings.

    Field names and units are those of the legacy ``ImageDataGenerator``, so
    ``ImageDataGenerator(**asdict(params))`` builds the equivalent legacy generator.

    Parameters
    ----------
    rotation_range : float
        Rotation angle drawn uniformly from ``[-rotation_range, rotation_range]`` degrees.
    width_shift_range, height_shift_range : float
        Shift drawn uniformly from ``[-r, r]`` times the image width (height).
    shear_range : float
        Shear **angle in degrees** drawn from ``[-shear_range, shear_range]``, as in the legacy
        class. The tutorial's 0.2 is therefore a very slight shear; pass about 11.3 for a shear
        factor of 0.2 (``tan(11.3 deg)``).
    zoom_range : float
        Zoom factors for x and y drawn independently from ``[1 - zoom_range, 1 + zoom_range]``
        (above 1 shows more of the scene, as in the legacy class).
    horizontal_flip : bool
        Mirror left-right with probability 0.5.
    fill_mode : {"nearest", "reflect", "wrap", "constant"}
        How pixels that come from outside the image are filled.
    cval : float
        Fill value for ``fill_mode="constant"``.
    """

    rotation_range: float = 40.0
    width_shift_range: float = 0.2
    height_shift_range: float = 0.2
    shear_range: float = 0.2
    zoom_range: float = 0.2
    horizontal_flip: bool = True
    fill_mode: str = "nearest"
    cval: float = 0.0

    def __post_init__(self) -> None:
        if self.fill_mode not in _BORDERS:
            raise ConfigError(f"fill_mode must be one of {sorted(_BORDERS)}, "
                              f"not {self.fill_mode!r}.")
        for name in ("rotation_range", "width_shift_range", "height_shift_range",
                     "shear_range", "zoom_range"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, not {getattr(self, name)}.")
        if self.zoom_range >= 1:
            raise ConfigError(f"zoom_range must be below 1, not {self.zoom_range}.")



def image_rng(seed: int, source: str, k: int) -> np.random.Generator:
    """Return the random generator of the ``k``-th copy of ``source``.

    Derived from a hash of ``(seed, source, k)``, so it does not depend on the order in which
    images are processed or on the number of workers.

    Parameters
    ----------
    seed : int
        Run seed.
    source : str
        The original's manifest path.
    k : int
        Copy number.

    Returns
    -------
    numpy.random.Generator
    """
    digest = hashlib.sha256(f"{int(seed)}|{source}|{int(k)}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def random_transform(
    shape: tuple[int, ...], rng: np.random.Generator, params: AugmentParams | None = None
) -> tuple[np.ndarray, bool]:
    """Draw one random affine transform for an image of ``shape``.

    The composition is the legacy ``ImageDataGenerator``'s: rotation, shift, shear and zoom
    about the image centre, then an optional horizontal flip.

    Parameters
    ----------
    shape : tuple
        ``(height, width[, channels])``.
    rng : numpy.random.Generator
        Source of randomness (see :func:`image_rng`). Every range is always drawn, so that
        setting one range to 0 does not change the others' draws.
    params : AugmentParams, optional
        Ranges; the tutorial's by default.

    Returns
    -------
    matrix : numpy.ndarray
        ``(2, 3)`` matrix mapping output pixel ``(x, y)`` to input pixel coordinates.
    flip : bool
        Whether to mirror the result left-right.
    """
    p = params or AugmentParams()
    h, w = shape[:2]
    theta = np.deg2rad(rng.uniform(-p.rotation_range, p.rotation_range))
    tx = rng.uniform(-p.width_shift_range, p.width_shift_range) * w
    ty = rng.uniform(-p.height_shift_range, p.height_shift_range) * h
    shear = np.deg2rad(rng.uniform(-p.shear_range, p.shear_range))
    zx, zy = rng.uniform(1 - p.zoom_range, 1 + p.zoom_range, 2)
    flip = bool(rng.random() < 0.5) and p.horizontal_flip
    cx, cy = (w - 1) / 2, (h - 1) / 2
    rotation = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0],
                         [0, 0, 1]])
    shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    shearing = np.array([[1, -np.sin(shear), 0], [0, np.cos(shear), 0], [0, 0, 1]])
    zoom = np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
    to_centre = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1]])
    from_centre = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    matrix = to_centre @ rotation @ shift @ shearing @ zoom @ from_centre
    return matrix[:2], flip


def augment_array(
    image: np.ndarray, rng: np.random.Generator, params: AugmentParams | None = None
) -> np.ndarray:
    """Apply one random transform to an image array.

    Parameters
    ----------
    image : numpy.ndarray
        ``(height, width[, channels])`` uint8 image.
    rng : numpy.random.Generator
        Source of randomness (see :func:`image_rng`).
    params : AugmentParams, optional
        Ranges; the tutorial's by default.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``image``.
    """
    p = params or AugmentParams()
    matrix, flip = random_transform(image.shape, rng, p)
    h, w = image.shape[:2]
    if flip:  # mirror the output grid inside the same warp: x -> w - 1 - x
        matrix = matrix @ np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    out = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=_BORDERS[p.fill_mode], borderValue=(p.cval,) * 4)
    return out.reshape(image.shape)


def keras_augmentation(
    params: AugmentParams | None = None, seed: int | None = None, name: str = "augmentation"
) -> keras.Sequential:
    """Return the same random transforms as Keras 3 preprocessing layers, for online use.

    Put it first in a model (it is active only in training) or map it over a ``tf.data``
    pipeline. Layers whose range is 0 are left out; ``RandomShear`` is used when the installed
    Keras has it (shear angle converted to its factor, ``tan(angle)``). Keras samples x and y
    zoom independently as the legacy class did; its composition order differs slightly from
    :func:`augment_array`.

    Parameters
    ----------
    params : AugmentParams, optional
        Ranges; the tutorial's by default.
    seed : int, optional
        Seed of the layers (layer ``i`` gets ``seed + i``).
    name : str
        Name of the returned model.

    Returns
    -------
    keras.Sequential
        Input: a batch of images (any size, channels last); output: same shape.
    """
    import keras

    p = params or AugmentParams()
    fill = {"fill_mode": p.fill_mode, "fill_value": float(p.cval)}
    layers: list[keras.layers.Layer] = []

    def seed_of() -> int | None:
        return None if seed is None else int(seed) + len(layers)

    if p.rotation_range:
        layers.append(keras.layers.RandomRotation(p.rotation_range / 360.0, seed=seed_of(),
                                                  **fill))
    if p.width_shift_range or p.height_shift_range:
        layers.append(keras.layers.RandomTranslation(p.height_shift_range, p.width_shift_range,
                                                     seed=seed_of(), **fill))
    if p.shear_range and hasattr(keras.layers, "RandomShear"):
        factor = float(np.tan(np.deg2rad(p.shear_range)))
        layers.append(keras.layers.RandomShear(x_factor=factor, seed=seed_of(), **fill))
    elif p.shear_range:
        log.info("This Keras has no RandomShear layer; online augmentation leaves shear out.")
    if p.zoom_range:
        layers.append(keras.layers.RandomZoom(p.zoom_range, p.zoom_range, seed=seed_of(),
                                              **fill))
    if p.horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed_of()))
    return keras.Sequential(layers, name=name)


def params_by_class(
    labels: Iterable[str],
    params: AugmentParams | None = None,
    *,
    no_flip_classes: Iterable[str] = (),
    class_params: Mapping[str, AugmentParams] | None = None,
) -> dict[str, AugmentParams]:
    """Choose the transform ranges of each class.

    Parameters
    ----------
    labels : iterable of str
        The classes.
    params : AugmentParams, optional
        Ranges of every class not named below; the tutorial's by default.
    no_flip_classes : iterable of str
        Classes never mirrored, whatever their ranges: photos with text or logos (ID cards,
        whose mirrored text no real photo shows). One class name may be given as a string.
    class_params : mapping of str to AugmentParams, optional
        Ranges of their own for some classes.

    Returns
    -------
    dict of str to AugmentParams
        Every label's ranges. Names (compared in Unicode NFC) that are not among ``labels``
        are reported in a warning, as a misspelt class would otherwise silently keep its flips.

    Raises
    ------
    ConfigError
        When a ``class_params`` value is not an :class:`AugmentParams`.
    """
    base = params or AugmentParams()
    names = [no_flip_classes] if isinstance(no_flip_classes, str) else list(no_flip_classes)
    no_flip = {_nfc(name) for name in names}
    overrides = {_nfc(name): value for name, value in (class_params or {}).items()}
    for name, value in overrides.items():
        if not isinstance(value, AugmentParams):
            raise ConfigError(f"class_params[{name!r}] must be an AugmentParams, not "
                              f"{type(value).__name__}.")
    labels = [str(label) for label in labels]
    unknown = sorted((no_flip | set(overrides)) - {_nfc(label) for label in labels})
    if unknown:
        log.warning("No class named %s among %s: its own transforms are not used.",
                    ", ".join(map(repr, unknown)), ", ".join(labels))
    chosen = {}
    for label in labels:
        ranges = overrides.get(_nfc(label), base)
        chosen[label] = replace(ranges, horizontal_flip=False) if _nfc(label) in no_flip \
            else ranges
    return chosen


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", str(text))
