"""Sanity checks of notebook 04: photos of known color, and the accuracy targets.

:func:`make_known_color_photos` draws photos whose main color is known by construction (not
real photos); :func:`known_color_check` runs :func:`~lfhelpers.color.photos.dominant_colors` on
them. :func:`target_check` puts the measured accuracies next to the targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.base import BaseEstimator

from lfhelpers.color.evaluation import ColorEvaluation
from lfhelpers.color.photos import dominant_colors


def make_known_color_photos(size: int = 96, seed: int = 0) -> list[tuple[str, Image.Image, str]]:
    """Fixture photos whose main color is known by construction (drawn, not real photos).

    A shaded background with noise (a table), an item drawn on it with its own noise and a soft
    shadow, plus transparent PNGs and a greyscale photo. Used by the tests and notebook 04 as
    a sanity check of :func:`dominant_colors`.

    Parameters
    ----------
    size : int
        Side of each square image.
    seed : int
        Noise seed.

    Returns
    -------
    list of (description, PIL image, expected main color name)
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size

    def table(color: Sequence[float], grain: float = 0.0) -> np.ndarray:
        base = np.asarray(color, float) * (0.92 + 0.12 * yy)[..., None]  # light falls off
        if grain:
            base *= (1 + grain * np.sin(xx * 40 + 3 * np.sin(yy * 9)))[..., None]
        return base + rng.normal(0, 4, (size, size, 3))

    def place(bg: np.ndarray, color: Sequence[float], box: tuple[float, float, float, float],
              round_shape: bool = False) -> np.ndarray:
        y0, x0, y1, x1 = (int(v * size) for v in box)
        inside = np.zeros((size, size), bool)
        inside[y0:y1, x0:x1] = True
        if round_shape:
            cy, cx, r = (y0 + y1) / 2 / size, (x0 + x1) / 2 / size, (y1 - y0) / 2 / size
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        shadow = np.roll(np.roll(inside, 3, 0), 3, 1) & ~inside
        img = bg.copy()
        img[shadow] *= 0.8
        item = np.asarray(color, float) * (1.0 - 0.08 * xx)[..., None]
        img[inside] = item[inside] + rng.normal(0, 3, (int(inside.sum()), 3))
        return img

    def rgb(arr: np.ndarray) -> Image.Image:
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")

    photos: list[tuple[str, Image.Image, str]] = []
    phone = place(table((128, 128, 128)), (246, 246, 244), (0.15, 0.3, 0.85, 0.7))
    phone[int(0.2 * size):int(0.26 * size), int(0.45 * size):int(0.55 * size)] = 20  # camera
    photos.append(("white phone on a grey table", rgb(phone), "white"))
    photos.append(("black card on a white table",
                   rgb(place(table((238, 236, 232)), (22, 22, 26), (0.3, 0.15, 0.7, 0.85))),
                   "black"))
    photos.append(("black card on a wooden table",
                   rgb(place(table((155, 105, 60), grain=0.12), (24, 24, 28),
                             (0.3, 0.15, 0.7, 0.85))), "black"))
    photos.append(("red mug on a grey table",
                   rgb(place(table((150, 150, 150)), (205, 30, 35), (0.2, 0.25, 0.8, 0.75),
                             round_shape=True)), "red-ish"))
    photos.append(("blue umbrella on a white table",
                   rgb(place(table((240, 240, 240)), (30, 70, 190), (0.15, 0.15, 0.85, 0.85),
                             round_shape=True)), "blue-ish"))
    photos.append(("green bottle on a beige table",
                   rgb(place(table((225, 215, 195)), (40, 150, 60), (0.1, 0.35, 0.9, 0.65))),
                   "green-ish"))
    photos.append(("white earphones on a white table",
                   rgb(place(table((250, 250, 250)), (240, 240, 238), (0.3, 0.3, 0.7, 0.7),
                             round_shape=True)), "white"))
    for name, color, expected in (("blue", (35, 80, 200), "blue-ish"),
                                   ("white", (250, 250, 250), "white")):
        rgba = np.zeros((size, size, 4), np.uint8)
        rgba[..., 1] = 200  # color under the transparent pixels must not count
        lo, hi = size // 4, size - size // 4
        rgba[lo:hi, lo:hi, :3] = color
        rgba[lo:hi, lo:hi, 3] = 255
        photos.append((f"{name} item, transparent PNG", Image.fromarray(rgba, "RGBA"), expected))
    grey = place(table((200, 200, 200)), (25, 25, 25), (0.25, 0.25, 0.75, 0.75))
    photos.append(("black item, greyscale photo", rgb(grey).convert("L"), "black"))
    photos.append(("tiny 4x4 red image", Image.new("RGB", (4, 4), (210, 30, 30)), "red-ish"))
    return photos


def known_color_check(hue_model: BaseEstimator | None, seed: int = 0,
                      **kwargs: Any) -> pd.DataFrame:
    """Run :func:`dominant_colors` on :func:`make_known_color_photos`.

    Parameters
    ----------
    hue_model : sklearn estimator or None
    seed : int
    **kwargs
        Passed to :func:`dominant_colors`.

    Returns
    -------
    pandas.DataFrame
        Columns photo, expected, main color, colors, correct.
    """
    rows = []
    for description, image, expected in make_known_color_photos(seed=seed):
        pal = dominant_colors(image, hue_model, seed=seed, **kwargs)
        rows.append({"photo": description, "expected": expected, "main color": pal.main.name,
                     "colors": pal.describe(), "correct": pal.main.name == expected})
    return pd.DataFrame(rows)


def target_check(evaluation: ColorEvaluation, best_model: str) -> pd.DataFrame:
    """The issue's accuracy targets next to the measured figures.

    Parameters
    ----------
    evaluation : ColorEvaluation
    best_model : str
        Name of the better model.

    Returns
    -------
    pandas.DataFrame
        Columns metric, value, target, met.
    """
    tut, best = evaluation.accuracy("tutorial"), evaluation.accuracy(best_model)
    rows = [
        ("acc_tutorial_model", tut, "0.75-0.79", 0.75 <= tut <= 0.79),
        ("acc_best_model", best, ">= 0.80", best >= 0.80),
        ("acc_by_user_tutorial_model", evaluation.accuracy("tutorial", "by_user"), "reported",
         None),
        ("acc_by_user_best_model", evaluation.accuracy(best_model, "by_user"), "reported", None),
    ]
    return pd.DataFrame(rows, columns=["metric", "value", "target", "met"])
