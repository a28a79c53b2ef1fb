"""Naming colors: white, black or grey from lightness and chroma, else the color-name model.

The crowd labels have no white, black or grey, the commonest colors of phones, earphones and
cards, so :func:`name_colors` decides those three first and only asks the model for the rest.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from lfhelpers.color.data import TUTORIAL_LABELS
from lfhelpers.color.spaces import rgb_to_lab
from lfhelpers.errors import ConfigError

#: Names decided from lightness and chroma before the hue model is asked.
NEUTRAL_NAMES: tuple[str, ...] = ("white", "black", "grey")
#: Every name :func:`name_colors` can return.
COLOR_NAMES: tuple[str, ...] = TUTORIAL_LABELS + NEUTRAL_NAMES
#: A representative display color per name (legends, decision-region plots).
NAME_SWATCHES: dict[str, str] = {
    "red-ish": "#d62728", "green-ish": "#2ca02c", "blue-ish": "#1f5fd6",
    "orange-ish": "#ff8c1a", "yellow-ish": "#f2d51b", "pink-ish": "#f27ec4",
    "purple-ish": "#8b3fc6", "brown-ish": "#8c5a2b", "grey-ish": "#b4b4b4",
    "white": "#ffffff", "black": "#111111", "grey": "#6e6e6e",
}


def neutral_names(lab: np.ndarray, white_l: float = 85.0, black_l: float = 30.0,
                  neutral_chroma: float = 12.0, dark_l: float = 12.0) -> np.ndarray:
    """White, black or grey from lightness and chroma; ``""`` where the color is chromatic.

    A color is neutral when its chroma ``C* = hypot(a*, b*)`` is below ``neutral_chroma``,
    or when it is almost black (``L* < dark_l``). Neutral colors are named by lightness:
    ``L* >= white_l`` white, ``L* < black_l`` black, grey between.

    Parameters
    ----------
    lab : ndarray, shape (n, 3)
        CIELAB colors.
    white_l, black_l, neutral_chroma, dark_l : float
        Thresholds (L* in 0-100, chroma in CIELAB units).

    Returns
    -------
    numpy.ndarray of str
        ``"white"``, ``"black"``, ``"grey"`` or ``""``.
    """
    lab = np.asarray(lab, dtype=np.float32).reshape(-1, 3)
    light = lab[:, 0]
    chroma = np.hypot(lab[:, 1], lab[:, 2])
    neutral = (chroma < neutral_chroma) | (light < dark_l)
    names = np.where(light >= white_l, "white", np.where(light < black_l, "black", "grey"))
    return np.where(neutral, names, "").astype("<U5")


def name_colors(rgb: Any, hue_model: BaseEstimator | None, **thresholds: float) -> list[str]:
    """Name colors: white/black/grey by lightness and chroma first, else the color model.

    Parameters
    ----------
    rgb : array-like, shape (n, 3) or (3,)
        sRGB colors in 0-255.
    hue_model : sklearn estimator or None
        Fitted color-name model (RGB rows -> one of :data:`TUTORIAL_LABELS`). ``None`` only
        when every color is neutral (else :class:`ConfigError`).
    **thresholds : float
        Passed to :func:`neutral_names`.

    Returns
    -------
    list of str
        One name per color, from :data:`COLOR_NAMES`.
    """
    rgb = np.asarray(rgb, dtype=np.float32).reshape(-1, 3)
    names = neutral_names(rgb_to_lab(rgb), **thresholds).astype(object)
    chromatic = names == ""
    if chromatic.any():
        if hue_model is None:
            raise ConfigError("A chromatic color needs a color-name model: pass hue_model "
                              "(see load_color_namer).")
        names[chromatic] = np.asarray(hue_model.predict(rgb[chromatic])).astype(str)
    return [str(n) for n in names]
