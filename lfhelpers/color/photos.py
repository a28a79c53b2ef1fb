"""The main colors of an item photo: separate the item, cluster its pixels, name each cluster.

:func:`dominant_colors` separates the item from its background (transparent pixels, else a
background model estimated from the image border: pixels close in CIELAB to the border's colors
*and* connected to the border are background), clusters the item's pixels in CIELAB with
k-means, and names each cluster with :func:`~lfhelpers.color.naming.name_colors`. White pixels
are never dropped: a white item on a white table falls back to the centre of the photo rather
than losing its color. :meth:`Palette.warnings` flags the results not to trust blindly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from tqdm import tqdm

from lfhelpers.color.namer import default_color_namer
from lfhelpers.color.naming import NEUTRAL_NAMES, name_colors, neutral_names
from lfhelpers.color.spaces import rgb_to_lab
from lfhelpers.errors import ConfigError, DataError
from lfhelpers.images import open_image, thread_map

log = logging.getLogger(__name__)

#: An item mask covering less of the photo than this is flagged (a detail, or the background).
SMALL_MASK_SHARE = 0.10
#: A chromatic color with at least this share beside a white/black/grey main color is flagged.
CHROMATIC_RUNNER_UP_SHARE = 0.25


@dataclass
class ColorShare:
    """One main color of an item.

    Attributes
    ----------
    name : str
        One of :data:`COLOR_NAMES`.
    share : float
        Fraction of the item's pixels (0-1).
    rgb : tuple of int
        Mean sRGB color of those pixels.
    """

    name: str
    share: float
    rgb: tuple[int, int, int]

    @property
    def hex(self) -> str:
        """``#rrggbb``."""
        return "#{:02x}{:02x}{:02x}".format(*self.rgb)


@dataclass
class Palette:
    """The main colors of one photo's item, largest share first.

    Attributes
    ----------
    colors : list of ColorShare
        Main colors (one per name), shares summing to 1.
    mask_share : float
        Fraction of the (opaque) photo taken as the item (the item mask's share).
    method : str
        How the item was separated: ``"alpha"`` (transparency), ``"border"`` (background
        model from the border), ``"center"`` (fallback: item as big as the background or of
        the same color), ``"all"`` (tiny image or ``method="none"``).
    image : ndarray
        The analysed (downscaled) RGB image.
    mask : ndarray of bool
        Item pixels of ``image``.
    """

    colors: list[ColorShare]
    mask_share: float
    method: str
    image: np.ndarray = field(repr=False)
    mask: np.ndarray = field(repr=False)

    @property
    def main(self) -> ColorShare:
        """The color with the largest share."""
        return self.colors[0]

    def describe(self) -> str:
        """``"white 62%, black 30%, grey 8%"``."""
        return ", ".join(f"{c.name} {c.share * 100:.0f}%" for c in self.colors)

    def warnings(self) -> list[str]:
        """Reasons not to trust this palette blindly; empty when there are none.

        * the item mask covers less than :data:`SMALL_MASK_SHARE` of the photo: the colors are
          a detail's (a handle, a logo) or the background's, not the item's;
        * no background was told apart (``method == "center"``): the center of the photo was
          named, whatever is there;
        * a white/black/grey main color beside a chromatic color (not grey-ish) of at least
          :data:`CHROMATIC_RUNNER_UP_SHARE` (a red cup on a black advert): either may be the
          item's.

        Returns
        -------
        list of str
        """
        notes = []
        if self.mask_share < SMALL_MASK_SHARE:
            notes.append(f"item mask covers only {self.mask_share:.0%} of the photo")
        if self.method == "center":
            notes.append("background not told apart: the centre of the photo was named")
        runners = [c for c in self.colors[1:] if c.name not in (*NEUTRAL_NAMES, "grey-ish")
                   and c.share >= CHROMATIC_RUNNER_UP_SHARE]
        if self.main.name in NEUTRAL_NAMES and runners:
            notes.append(f"{runners[0].name} {runners[0].share:.0%} beside a {self.main.name} "
                         "main color: either may be the item's")
        return notes


def kmeans(points: np.ndarray, k: int, seed: int = 0,
           attempts: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """k-means (k-means++ starts, OpenCV) of a few thousand points, reproducible under ``seed``.

    Parameters
    ----------
    points : ndarray, shape (n, d)
    k : int
        Clusters (at most the number of distinct points).
    seed : int
    attempts : int
        Restarts; the best is kept.

    Returns
    -------
    labels : ndarray of int, shape (n,)
    centres : ndarray, shape (k, d)
    """
    data = np.ascontiguousarray(points, dtype=np.float32)
    cv2.setRNGSeed(int(seed))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 0.05)
    _, labels, centres = cv2.kmeans(data, int(k), None, criteria, attempts,
                                    cv2.KMEANS_PP_CENTERS)
    return labels.ravel().astype(int), centres


def item_mask(
    rgb: np.ndarray,
    alpha: np.ndarray | None = None,
    method: str = "border",
    border: float = 0.06,
    threshold: float = 10.0,
    min_item_share: float = 0.04,
    max_item_share: float = 0.97,
) -> tuple[np.ndarray, str]:
    """Separate the item from its background.

    * Transparent pixels (alpha < 128) are background; when there are any, that is the mask.
    * ``method="border"``: the colors of a strip along the image border (k-means, up to 3
      colors) that run along at least two sides of the photo are the background model (an
      item cut by one edge is not background). A pixel is background when it lies within
      ``threshold`` (CIELAB distance, widened by the spread of the border color) of one of
      them *and* is connected to the border through such pixels, so that a white screen inside
      a black phone on a white table stays part of the item.
    * When that leaves less than ``min_item_share`` of the photo (item of the background's
      color) or more than ``max_item_share`` (no distinct background), the centre of the
      photo is taken as the item instead: nothing of the item's color is thrown away.
    * Images smaller than 8 pixels a side, and ``method="none"``, use every (opaque) pixel.

    Parameters
    ----------
    rgb : ndarray, (H, W, 3) uint8
    alpha : ndarray (H, W) or None
    method : {"border", "grabcut", "none"}
        ``"grabcut"`` refines the border model's mask with :func:`cv2.grabCut` (slower).
    border : float
        Width of the border strip, as a fraction of the shorter side (at least 1 pixel).
    threshold : float
        Base CIELAB distance to a border color under which a pixel may be background.
    min_item_share, max_item_share : float
        Fallback limits, as fractions of the opaque pixels.

    Returns
    -------
    mask : ndarray of bool, (H, W)
        True on the item.
    how : str
        ``"alpha"``, ``"border"``, ``"center"`` or ``"all"``.
    """
    if method not in ("border", "grabcut", "none"):
        raise ConfigError(f"Unknown background method {method!r}; use 'border', 'grabcut' "
                          "or 'none'.")
    h, w = rgb.shape[:2]
    opaque = np.ones((h, w), bool) if alpha is None else alpha >= 128
    if not opaque.any():
        log.warning("every pixel is transparent; using the color under the transparency")
        opaque = np.ones((h, w), bool)
    elif not opaque.all():
        return opaque, "alpha"
    if method == "none" or min(h, w) < 8:
        return opaque, "all"

    lab = rgb_to_lab(rgb)
    b = max(1, round(border * min(h, w)))
    strip = np.zeros((h, w), bool)
    strip[:b], strip[-b:], strip[:, :b], strip[:, -b:] = True, True, True, True
    border_lab = lab[strip]
    k = min(3, len(np.unique(border_lab.round(0), axis=0)))
    border_labels, centres = kmeans(border_lab, k, seed=0, attempts=2)
    cluster = np.full((h, w), -1)
    cluster[strip] = border_labels
    sides = (cluster[:b], cluster[-b:], cluster[:, :b], cluster[:, -b:])
    # A background color runs along at least two sides of the photo; an item that crosses
    # the border (a phone cut by the bottom edge) usually touches one.
    side_share = np.array([[np.mean(side == c) for side in sides] for c in range(k)])
    total_share = np.bincount(border_labels, minlength=k) / len(border_labels)
    is_background = ((side_share >= 0.25).sum(axis=1) >= 2) & (total_share >= 0.1)
    if not is_background.any():
        is_background[int(total_share.argmax())] = True
    close = np.zeros((h, w), bool)
    for c in np.flatnonzero(is_background):
        members = border_lab[border_labels == c]
        spread = float(np.sqrt(((members - centres[c]) ** 2).sum(1).mean()))
        radius = threshold + min(2.0 * spread, 15.0)
        close |= np.linalg.norm(lab - centres[c], axis=-1) < radius
    _, comp = cv2.connectedComponents(close.astype(np.uint8), connectivity=4)
    touching = np.unique(comp[strip & close])
    background = np.isin(comp, touching[touching > 0]) & close
    mask = ~background
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN,
                            np.ones((3, 3), np.uint8)).astype(bool)
    if method == "grabcut" and min_item_share <= mask.mean() <= max_item_share:
        mask = _grabcut_refine(rgb, mask, strip)
    share = mask.mean()
    if min_item_share <= share <= max_item_share:
        return mask, "border"
    centre = np.zeros((h, w), bool)
    centre[h // 4: h - h // 4, w // 4: w - w // 4] = True
    return centre, "center"


def _grabcut_refine(rgb: np.ndarray, mask: np.ndarray, strip: np.ndarray,
                    iterations: int = 3) -> np.ndarray:
    """Refine a border-model mask with GrabCut (color models + smooth boundaries)."""
    gc = np.where(mask, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    gc[strip & ~mask] = cv2.GC_BGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(np.ascontiguousarray(rgb[..., ::-1]), gc, None, bgd, fgd, iterations,
                    cv2.GC_INIT_WITH_MASK)
    except cv2.error as exc:  # e.g. a color model that cannot be estimated
        log.debug("GrabCut failed (%s); keeping the border model's mask", exc)
        return mask
    refined = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    return refined if refined.any() else mask


def dominant_colors(
    image: Any,
    hue_model: BaseEstimator | None = None,
    n_colors: int = 3,
    method: str = "border",
    max_side: int = 128,
    min_share: float = 0.02,
    seed: int = 0,
) -> Palette:
    """The main colors of the item in a photo, with their share of the item and names.

    Parameters
    ----------
    image : path-like, bytes, PIL.Image.Image or ndarray
        The photo (read by :func:`lfhelpers.images.open_image`; arrays are ``uint8``
        (H, W), (H, W, 3) or (H, W, 4)).
    hue_model : sklearn estimator, optional
        Color-name model for chromatic colors (default
        :func:`~lfhelpers.color.namer.load_color_namer`).
    n_colors : int
        Clusters (k-means in CIELAB); clusters that get the same name are merged.
    method : {"border", "grabcut", "none"}
        Background separation (see :func:`item_mask`).
    max_side : int
        The photo is shrunk to this size first (speed).
    min_share : float
        Colors below this share of the item are dropped (shares are renormalised).
    seed : int
        k-means seed.

    Returns
    -------
    Palette

    Raises
    ------
    DataError
        When the image cannot be read.
    """
    clusters = item_clusters(image, n_colors, method, max_side, seed)
    centres = clusters["centres"]
    if hue_model is None and not all(neutral_names(rgb_to_lab(centres)) != ""):
        hue_model = default_color_namer()
    return _named_palette(clusters, name_colors(centres, hue_model), min_share)


def item_clusters(image: Any, n_colors: int = 3, method: str = "border", max_side: int = 128,
                  seed: int = 0) -> dict[str, Any]:
    """The part of :func:`dominant_colors` that needs no color-name model (and can be kept).

    Returns
    -------
    dict
        ``centres`` (k, 3) mean RGB of each k-means cluster of the item's pixels, ``shares``
        (k,), ``mask_share``, ``method`` (how the item was separated), ``image`` and ``mask``.
    """
    rgb, alpha = _rgb_and_alpha(image, max_side)
    mask, how = item_mask(rgb, alpha, method=method)
    pixels = rgb[mask].astype(np.float32)
    lab = rgb_to_lab(pixels)
    distinct = len(np.unique(rgb[mask], axis=0))
    k = max(1, min(n_colors, distinct))
    if k == 1:
        labels = np.zeros(len(lab), int)
    else:
        labels, _ = kmeans(lab, k, seed=seed)
    return {"centres": np.array([pixels[labels == c].mean(0) for c in range(k)]),
            "shares": np.bincount(labels, minlength=k) / len(labels),
            "mask_share": float(mask.mean()), "method": how, "image": rgb, "mask": mask}


def _named_palette(clusters: dict[str, Any], names: Sequence[str], min_share: float) -> Palette:
    """Merge the clusters that got the same name; drop colors under ``min_share``."""
    merged: dict[str, list[float]] = {}
    for name, share, centre in zip(names, clusters["shares"], clusters["centres"], strict=True):
        acc = merged.setdefault(name, [0.0, 0.0, 0.0, 0.0])
        acc[0] += share
        acc[1:] = [a + share * c for a, c in zip(acc[1:], centre, strict=True)]
    colors = [ColorShare(name, float(v[0]),
                         tuple(int(round(c / v[0])) for c in v[1:]))  # type: ignore[arg-type]
              for name, v in merged.items()]
    colors.sort(key=lambda c: -c.share)
    kept = [c for c in colors if c.share >= min_share] or colors[:1]
    total = sum(c.share for c in kept)
    for c in kept:
        c.share /= total
    return Palette(colors=kept, mask_share=float(clusters["mask_share"]),
                   method=str(clusters["method"]), image=clusters["image"],
                   mask=clusters["mask"])


def _rgb_and_alpha(image: Any, max_side: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The photo as an RGB array, and its alpha channel when it has transparency."""
    arr = np.asarray(open_image(image, max_side=max_side or None, keep_alpha=True), np.uint8)
    if arr.shape[-1] == 4:
        alpha = arr[..., 3]
        return np.ascontiguousarray(arr[..., :3]), (alpha if (alpha < 255).any() else None)
    return arr, None


#: Version of the cached palettes; a change starts a new folder.
PALETTE_VERSION = 1


def extract_palettes(
    files: Sequence[str | os.PathLike[str]],
    hue_model: BaseEstimator | None,
    n_colors: int = 3,
    seed: int = 0,
    progress: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> list[Palette | None]:
    """:func:`dominant_colors` for many photos; unreadable ones are ``None`` (logged).

    Parameters
    ----------
    files : sequence of path-like
    hue_model : sklearn estimator or None
    n_colors, seed : int
    progress : bool
        tqdm bar.
    cache_dir : path-like, optional
        The cache root: each photo's color clusters (what needs no color-name model) are kept
        in its ``palettes/`` folder (:class:`lfhelpers.store.ContentStore`, by photo content
        and the options), so notebooks 06 and 07 cluster each photo once, whatever model
        names the colors. A palette read back has no ``image`` or ``mask`` (empty arrays).
    **kwargs
        ``method``, ``max_side``, ``min_share`` of :func:`dominant_colors`.

    Returns
    -------
    list of Palette or None
    """
    options = {"n_colors": int(n_colors), "method": kwargs.pop("method", "border"),
               "max_side": int(kwargs.pop("max_side", 128)), "seed": int(seed)}
    min_share = float(kwargs.pop("min_share", 0.02))
    if kwargs:
        raise ConfigError(f"Unknown options for dominant_colors: {sorted(kwargs)}.")
    store = None
    if cache_dir:
        from lfhelpers.fsutil import sha256_file
        from lfhelpers.store import ContentStore

        spec = {"what": "item color clusters", **options, "version": PALETTE_VERSION}
        store = ContentStore.under(Path(cache_dir) / "palettes", spec, suffix=".npz")
    bar = tqdm(total=len(files), desc="palettes", disable=not progress)

    def one(file: Any) -> dict[str, Any] | None:
        try:
            digest = sha256_file(file) if store is not None else None
            entry = store.get(digest) if store is not None else None
            if entry is not None:
                return {**entry, "method": str(entry["method"]),
                        "image": np.zeros((0, 0, 3), np.uint8), "mask": np.zeros((0, 0), bool)}
            clusters = item_clusters(file, **options)
        except (DataError, OSError) as exc:
            log.warning("skipped %s: %s", file, exc)
            return None
        finally:
            bar.update(1)
        if store is not None:
            store.put(digest, {k: np.asarray(clusters[k]) for k in
                               ("centres", "shares", "mask_share", "method")})
        return clusters

    with bar:  # photos on one thread per core (decoding and numpy release the GIL)
        found = thread_map(one, list(files))
    # the names of every photo's clusters in one call of the model
    kept = [c for c in found if c is not None]
    centres = (np.vstack([c["centres"] for c in kept]) if kept
               else np.zeros((0, 3), np.float32))
    if hue_model is None and not all(neutral_names(rgb_to_lab(centres)) != ""):
        hue_model = default_color_namer()
    names = iter(name_colors(centres, hue_model) if len(centres) else [])
    return [None if c is None else
            _named_palette(c, [next(names) for _ in range(len(c["centres"]))], min_share)
            for c in found]


def palette_table(labels: Sequence[str], files: Sequence[str | os.PathLike[str]],
                  palettes: Sequence[Palette | None]) -> pd.DataFrame:
    """One row per photo: class, file, main color, its share, all colors, item mask, warning.

    ``mask share`` is the share of the photo taken as the item; ``warning`` says why a palette
    should not be trusted blindly (:meth:`Palette.warnings`), empty when nothing is suspect.

    Parameters
    ----------
    labels, files : sequence
        Class and file of each photo.
    palettes : sequence of Palette or None
        From :func:`extract_palettes` (``None`` rows are dropped).

    Returns
    -------
    pandas.DataFrame
    """
    rows = [{"label": lab, "file": Path(f).name, "main color": p.main.name,
             "share": round(p.main.share, 2), "colors": p.describe(),
             "mask share": round(p.mask_share, 2), "separation": p.method,
             "warning": "; ".join(p.warnings())}
            for lab, f, p in zip(labels, files, palettes, strict=True) if p is not None]
    return pd.DataFrame(rows)
