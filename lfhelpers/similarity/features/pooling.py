"""Pooling of a CNN's last feature maps into one vector per photo: average, max or GeM."""

from __future__ import annotations

import numpy as np

from lfhelpers.errors import ConfigError

#: Pooling of the last feature map (see :class:`~lfhelpers.similarity.features.cnn.Embedder`).
POOLINGS = ("avg", "gem", "max")


def gem_pool(maps: np.ndarray, p: float = 3.0, eps: float = 1e-6) -> np.ndarray:
    """Generalised-mean pooling of feature maps ``(n, h, w, c)`` to ``(n, c)``.

    ``(mean(max(x, eps) ** p)) ** (1 / p)`` over the spatial positions: ``p = 1`` is average
    pooling, large ``p`` approaches max pooling; ``p = 3`` is the usual choice. ``eps`` is
    relative to each photo's largest activation, so pooling stays proportional to the maps
    (``c`` times the maps give ``c`` times the vector) even when a network's activations are
    all tiny, as with random weights, where an absolute floor would make every vector equal.
    """
    x = np.asarray(maps, np.float32)
    peak = x.max(axis=(1, 2, 3), keepdims=True)
    scale = np.where(peak > 0, peak, 1.0).astype(np.float32)
    pooled = np.power(np.mean(np.power(np.maximum(x / scale, eps), p), axis=(1, 2)), 1.0 / p)
    return pooled * scale[:, :, 0, 0]


def pool_maps(maps: np.ndarray, pooling: str = "avg", p: float = 3.0) -> np.ndarray:
    """Feature maps ``(n, h, w, c)`` to vectors: ``"avg"``, ``"gem"`` or ``"max"`` pooling."""
    maps = np.asarray(maps, np.float32)
    if pooling == "avg":
        return maps.mean(axis=(1, 2))
    if pooling == "max":
        return maps.max(axis=(1, 2))
    if pooling == "gem":
        return gem_pool(maps, p)
    raise ConfigError(f"pooling must be 'avg', 'gem' or 'max', got {pooling!r}.")
