"""Photo-quality statistics and flags: dark, light, blurry, low information, odd shape, greyscale.

:func:`image_stats` measures a few cheap numbers on one decoded photo (shrunk to
:data:`STATS_SIDE` pixels first, so the cost does not grow with the photo). The cleanup computes
them in the same pass that decodes the photo and keeps them in its per-file cache; the audit
turns them into findings with :func:`quality_findings` and the thresholds of
:class:`QualityThresholds`.

Statistics (luma = Rec. 601 lightness, 0..1):

``bright_p05``, ``bright_p95``  5th and 95th percentile of the luma (8-bit histogram)
``entropy``     Shannon entropy of the 256-bin luma histogram, in bits (0..8)
``contrast``    standard deviation of the luma
``sharpness``   standard deviation of the Laplacian of the luma (high frequencies)
``sharp_ratio`` ``sharpness`` divided by ``contrast``: how much of the contrast sits in fine
                detail; low for out-of-focus and motion-blurred photos whatever their lighting
``chroma_p99``  99th percentile of the per-pixel channel spread ``max(R,G,B) - min(R,G,B)``
``aspect``      longer side divided by the shorter side (of the full photo)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from lfhelpers.errors import ConfigError

#: The statistics are measured on the photo shrunk by a whole factor (box filter) so that its
#: longer side is at most this long (between half of it and it).
STATS_SIDE = 512
#: Bumped whenever a statistic changes meaning (cached statistics of another version are redone).
STATS_VERSION = 3

#: The quality issues, in the order they are reported.
QUALITY_ISSUES = ("dark", "light", "blurry", "low_information", "odd_aspect_ratio", "grayscale")


def image_stats(img: Image.Image) -> dict[str, float]:
    """Quality statistics of one decoded RGB photo (see the module docstring).

    Parameters
    ----------
    img : PIL.Image.Image
        An RGB image at any size; it is shrunk by a whole factor to at most
        :data:`STATS_SIDE` pixels first.

    Returns
    -------
    dict
        Statistic name -> value (plain floats, JSON-ready), with ``stats_version``.
    """
    width, height = img.size
    img = img.convert("RGB")
    factor = -(-max(width, height) // STATS_SIDE)
    if factor > 1:
        img = img.reduce(factor)  # box filter by a whole factor: fast, no resampling blur
    arr = np.asarray(img, dtype=np.uint8)
    luma8 = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2GRAY)  # Rec. 601 weights
    hist = np.bincount(luma8.ravel(), minlength=256).astype(np.float64)
    prob = hist[hist > 0] / hist.sum()
    entropy = float(-(prob * np.log2(prob)).sum())
    levels = np.arange(256) / 255.0
    mean = (hist * levels).sum() / hist.sum()
    contrast = float(np.sqrt(max((hist * levels**2).sum() / hist.sum() - mean**2, 0.0)))
    laplacian = cv2.Laplacian(luma8, cv2.CV_16S, ksize=1)
    sharpness = float(cv2.meanStdDev(laplacian)[1][0, 0]) / 255.0
    r, g, b = cv2.split(arr)
    spread = cv2.subtract(cv2.max(cv2.max(r, g), b), cv2.min(cv2.min(r, g), b))
    spread_hist = np.bincount(spread.ravel(), minlength=256)
    return {
        "stats_version": STATS_VERSION,
        "bright_p05": round(_percentile(hist, 0.05), 5),
        "bright_p95": round(_percentile(hist, 0.95), 5),
        "entropy": round(entropy, 5),
        "contrast": round(contrast, 5),
        "sharpness": round(sharpness, 6),
        "sharp_ratio": round(sharpness / max(contrast, 1e-3), 5),
        "chroma_p99": round(_percentile(spread_hist, 0.99), 5),
        "aspect": round(max(width, height) / max(min(width, height), 1), 4),
    }


def _percentile(hist: np.ndarray, q: float) -> float:
    """The ``q`` quantile (0..1 scale) of 8-bit values given their 256-bin histogram."""
    cumulative = np.cumsum(hist)
    return float(np.searchsorted(cumulative, q * cumulative[-1])) / 255.0


@dataclass(frozen=True)
class QualityThresholds:
    """When a statistic makes a photo a finding (the defaults suit item photos).

    Parameters
    ----------
    dark : float
        ``dark`` when even the bright part of the photo (95th luma percentile) is below this.
    light : float
        ``light`` when even the dark part (5th luma percentile) is above this.
    blurry : float
        ``blurry`` when ``sharp_ratio`` (fine detail per unit of contrast) is below this.
    low_information : float
        ``low_information`` when the luma's standard deviation is below this: a near-uniform
        picture (photos of an item on a plain background have a low entropy, but their
        contrast is far above this).
    odd_aspect_ratio : float
        ``odd_aspect_ratio`` when the longer side is more than this many times the shorter.
    grayscale : float
        ``grayscale`` when 99 % of the pixels have a channel spread below this (0..1).
    """

    dark: float = 0.25
    light: float = 0.76
    blurry: float = 0.12
    low_information: float = 0.025
    odd_aspect_ratio: float = 4.0
    grayscale: float = 0.01

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not value > 0:
                raise ConfigError(f"Quality threshold {name} must be positive, got {value!r}.")


def _below(values: pd.Series, threshold: float) -> tuple[pd.Series, pd.Series]:
    flagged = values < threshold
    return flagged, (1.0 - values / threshold).clip(0.0, 1.0)


def quality_findings(stats: pd.DataFrame,
                     thresholds: QualityThresholds | None = None) -> pd.DataFrame:
    """Photo-quality findings from per-photo statistics.

    Parameters
    ----------
    stats : pandas.DataFrame
        One row per photo: ``path``, ``label`` and the columns of :func:`image_stats`.
    thresholds : QualityThresholds, optional
        Defaults: :class:`QualityThresholds`.

    Returns
    -------
    pandas.DataFrame
        ``path, label, issue, score, value, threshold``: one row per (photo, issue); ``score``
        in 0..1 grows with the distance past the threshold (higher = more certain).
    """
    t = thresholds or QualityThresholds()
    columns = ["path", "label", "issue", "score", "value", "threshold"]
    if stats.empty:
        return pd.DataFrame(columns=columns)
    frames = []
    checks = {
        "dark": _below(stats["bright_p95"], t.dark),
        "light": _below(1.0 - stats["bright_p05"], 1.0 - t.light),
        "blurry": _below(stats["sharp_ratio"], t.blurry),
        "low_information": _below(stats["contrast"], t.low_information),
        "grayscale": _below(stats["chroma_p99"], t.grayscale),
    }
    aspect = stats["aspect"]
    checks["odd_aspect_ratio"] = (aspect > t.odd_aspect_ratio,
                                  (1.0 - t.odd_aspect_ratio / aspect).clip(0.0, 1.0))
    values = {"dark": stats["bright_p95"], "light": stats["bright_p05"],
              "blurry": stats["sharp_ratio"], "low_information": stats["contrast"],
              "grayscale": stats["chroma_p99"], "odd_aspect_ratio": aspect}
    limits = asdict(t)
    for issue in QUALITY_ISSUES:
        flagged, score = checks[issue]
        if not flagged.any():
            continue
        frames.append(pd.DataFrame({
            "path": stats.loc[flagged, "path"], "label": stats.loc[flagged, "label"],
            "issue": issue, "score": score[flagged].round(4),
            "value": values[issue][flagged], "threshold": limits[issue]}))
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]
