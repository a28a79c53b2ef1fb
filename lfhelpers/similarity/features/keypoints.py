"""What a photo's local features are: :class:`Keypoints` (positions and descriptors), RootSIFT,
and the greyscale, shrunk photo they are detected on (:func:`grey_array`).

Storage is compact: SIFT descriptors are integers 0-255 in OpenCV, so they are kept as
``uint8`` (128 bytes a keypoint, lossless) and turned into RootSIFT (L1 normalisation, square
root; Arandjelović & Zisserman, CVPR 2012) only when they are compared
(:meth:`Keypoints.matching_descriptors`). ORB descriptors are 32-byte binary strings. The
extraction and its cache are :class:`lfhelpers.similarity.features.local.LocalFeatures`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lfhelpers.images import open_image

#: Supported methods and their descriptor widths in bytes.
METHODS = {"rootsift": 128, "orb": 32}


@dataclass
class Keypoints:
    """Keypoints and descriptors of one photo.

    Attributes
    ----------
    xy : ndarray of float32, shape (n, 2)
        Keypoint positions (x, y) in the pixels of the shrunk photo.
    descriptors : ndarray of uint8, shape (n, d)
        Raw SIFT descriptors (``d=128``, values 0-255) or ORB bit strings (``d=32``).
    image_size : (int, int)
        ``(width, height)`` of the shrunk photo the keypoints were found on.
    scale : float
        Factor from the shrunk photo to the original: original pixel = ``xy * scale``.
    method : str
        ``"rootsift"`` or ``"orb"``.
    error : str
        Why the photo could not be read (empty when it was read; then ``n`` may still be 0
        for a photo without texture).
    """

    xy: np.ndarray
    descriptors: np.ndarray
    image_size: tuple[int, int] = (0, 0)
    scale: float = 1.0
    method: str = "rootsift"
    error: str = ""
    _matching: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return int(len(self.xy))

    @classmethod
    def empty(cls, method: str = "rootsift", image_size: tuple[int, int] = (0, 0),
              scale: float = 1.0, error: str = "") -> Keypoints:
        """Keypoints of a photo without any (uniform, tiny or unreadable).

        Parameters
        ----------
        method : str
            Feature method (sets the descriptor width).
        image_size : (int, int)
            ``(width, height)`` of the shrunk photo.
        scale : float
            Factor to the original photo.
        error : str
            Why the photo could not be read, if that is the reason.

        Returns
        -------
        Keypoints
        """
        return cls(np.zeros((0, 2), np.float32), np.zeros((0, METHODS[method]), np.uint8),
                   (int(image_size[0]), int(image_size[1])), float(scale), method, error)

    @property
    def original_xy(self) -> np.ndarray:
        """Keypoint positions in the original photo's pixels, float32 (n, 2)."""
        return (self.xy * np.float32(self.scale)).astype(np.float32)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored arrays (positions and descriptors)."""
        return int(self.xy.nbytes + self.descriptors.nbytes)

    def matching_descriptors(self) -> np.ndarray:
        """Descriptors as compared: RootSIFT float32 (L2 norm 1), or the ORB bytes.

        Returns
        -------
        ndarray
            ``(n, 128)`` float32 for ``"rootsift"``; ``(n, 32)`` uint8 for ``"orb"``. Computed
            once and kept.
        """
        if self._matching is None:
            self._matching = (rootsift(self.descriptors) if self.method == "rootsift"
                              else self.descriptors)
        return self._matching


def rootsift(descriptors: np.ndarray) -> np.ndarray:
    """RootSIFT of raw SIFT descriptors: L1-normalise, then square root (unit L2 norm).

    Parameters
    ----------
    descriptors : ndarray, shape (n, 128)
        Raw SIFT descriptors (any numeric dtype, non-negative).

    Returns
    -------
    ndarray of float32, shape (n, 128)
        Comparing them with the Euclidean distance is the Hellinger kernel on the raw ones.
    """
    d = np.asarray(descriptors, dtype=np.float32)
    d = d / np.maximum(d.sum(axis=1, keepdims=True), 1e-7)
    return np.sqrt(d, out=d)


def grey_array(path: str | os.PathLike[str] | Any, max_side: int) -> tuple[np.ndarray, float]:
    """Open a photo with the project's loader, shrunk, as a greyscale uint8 array.

    Parameters
    ----------
    path : path-like, bytes, ndarray or PIL image
        The photo (anything :func:`lfhelpers.images.open_image` takes).
    max_side : int
        Longer side of the result at most (never enlarged).

    Returns
    -------
    grey : ndarray of uint8, shape (h, w)
    scale : float
        Original size / shrunk size (1.0 when not shrunk).

    Raises
    ------
    DataError
        When the photo cannot be read.
    """
    full_size: tuple[int, int] | None = None
    if isinstance(path, str | os.PathLike):
        from PIL import Image

        try:  # the original size after EXIF rotation, read from the header only
            with Image.open(path) as im:
                w, h = im.size
                turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)
                full_size = (h, w) if turned else (w, h)
        except Exception:  # noqa: BLE001 - open_image below raises the readable error
            full_size = None
    img = open_image(path, max_side=max_side)
    grey = np.asarray(img.convert("L"))
    if full_size is None:
        full_size = img.size
    scale = max(full_size) / max(img.size) if max(img.size) else 1.0
    return np.ascontiguousarray(grey), float(scale)
