"""Color spaces: sRGB <-> CIELAB (D65) and HLS grids, all through OpenCV.

CIELAB is the perceptual space the color-name models and the photo clustering work in: equal
distances there look about equally different to a person.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from lfhelpers.errors import DataError


def rgb_to_lab(rgb: Any) -> np.ndarray:
    """Convert sRGB colors (0-255) to CIELAB (D65): L* in 0-100, a* and b* about -128..127.

    Parameters
    ----------
    rgb : array-like, shape (..., 3)
        sRGB values in 0-255 (integers or floats).

    Returns
    -------
    numpy.ndarray
        Same shape, float32 ``(L*, a*, b*)``.
    """
    arr = np.asarray(rgb, dtype=np.float32)
    if arr.shape[-1] != 3:
        raise DataError(f"expected RGB colors with 3 channels, got shape {arr.shape}")
    flat = np.clip(arr.reshape(-1, 1, 3) / 255.0, 0.0, 1.0).astype(np.float32)
    return cv2.cvtColor(flat, cv2.COLOR_RGB2Lab).reshape(arr.shape)


def lab_to_rgb(lab: Any) -> np.ndarray:
    """Convert CIELAB colors back to sRGB 0-255 (float, clipped).

    Parameters
    ----------
    lab : array-like, shape (..., 3)

    Returns
    -------
    numpy.ndarray
        Same shape, float values in 0-255.
    """
    arr = np.asarray(lab, dtype=np.float32)
    rgb = cv2.cvtColor(arr.reshape(-1, 1, 3), cv2.COLOR_Lab2RGB).reshape(arr.shape)
    return np.clip(rgb * 255.0, 0, 255)


def hls_grid(hues: np.ndarray, lightness: np.ndarray, saturation: float) -> np.ndarray:
    """sRGB colors (0-255) of an HLS grid: rows are lightness values, columns hues.

    Parameters
    ----------
    hues : ndarray
        Hue angles in degrees (0-360).
    lightness : ndarray
        HLS lightness in 0-1.
    saturation : float
        HLS saturation in 0-1.

    Returns
    -------
    numpy.ndarray
        Shape ``(len(lightness), len(hues), 3)``, float 0-255.
    """
    hh, ll = np.meshgrid(np.asarray(hues, np.float32), np.asarray(lightness, np.float32))
    hls = np.stack([hh, ll, np.full_like(hh, saturation)], axis=-1).astype(np.float32)
    return cv2.cvtColor(hls, cv2.COLOR_HLS2RGB) * 255.0
