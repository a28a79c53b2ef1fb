"""Figures of notebook 04: label counts, confusion matrices, decision regions, palettes."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from lfhelpers.color.data import ColorData
from lfhelpers.color.naming import COLOR_NAMES, NAME_SWATCHES, neutral_names
from lfhelpers.color.photos import Palette
from lfhelpers.color.spaces import hls_grid, rgb_to_lab
from lfhelpers.plots import confusion_matrix


def plot_color_counts(data: ColorData, ax: Any = None) -> Any:
    """Bar chart of entries per label, each bar in its label's color."""
    import matplotlib.pyplot as plt

    counts = data.label_counts()
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.8))
    ax.bar(counts.index, counts.to_numpy(), color=[NAME_SWATCHES[n] for n in counts.index],
           edgecolor="black", linewidth=0.5)
    ax.bar_label(ax.containers[0], fontsize=8)
    ax.set_title(f"Color-name entries per label ({len(data.frame)} valid, "
                 f"{data.frame['uid'].nunique()} contributors)")
    ax.set_xlabel("label")
    ax.set_ylabel("entries")
    ax.tick_params(axis="x", rotation=30)
    ax.figure.tight_layout()
    return ax


def plot_confusion(confusion: pd.DataFrame, title: str, ax: Any = None) -> Any:
    """Confusion matrix as a heat-map of row shares (the share of each true label).

    Draws with the project's one confusion plot, :func:`lfhelpers.plots.confusion_matrix`.

    Parameters
    ----------
    confusion : pandas.DataFrame
        From :meth:`~lfhelpers.color.evaluation.ColorEvaluation.confusion` (rows true,
        columns predicted, counts).
    title : str
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    figure = confusion_matrix(confusion, title, ax=ax, normalize="true")
    return ax if ax is not None else figure.axes[0]


def plot_decision_regions(
    models: Mapping[str, BaseEstimator],
    saturations: Sequence[float] = (1.0, 0.4),
    n_hues: int = 181,
    n_lightness: int = 101,
    neutral_model: str | None = None,
) -> Any:
    """What each model calls every color of an HLS hue x lightness plane.

    The first row shows the colors themselves; then one row per model (and one for
    :func:`name_colors` with the white/black/grey rule in front of ``neutral_model``). One
    column per saturation.

    Parameters
    ----------
    models : mapping
        Title -> fitted color-name model.
    saturations : sequence of float
        HLS saturations (0-1), one column each.
    n_hues, n_lightness : int
        Grid resolution.
    neutral_model : str, optional
        Key of ``models`` to show again behind the white/black/grey rule.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    hues = np.linspace(0, 360, n_hues)
    light = np.linspace(0, 1, n_lightness)
    # (title, model key or None for the colors themselves, white/black/grey rule in front)
    rows: list[tuple[str, str | None, bool]] = [("color", None, False)]
    rows += [(title, title, False) for title in models]
    if neutral_model is not None:
        rows.append((f"{neutral_model} + white/black/grey rule", neutral_model, True))
    names = list(COLOR_NAMES)
    cmap = ListedColormap([NAME_SWATCHES[n] for n in names])
    fig, axes = plt.subplots(len(rows), len(saturations), squeeze=False,
                             figsize=(5.2 * len(saturations) + 1.8, 2.4 * len(rows) + 0.6),
                             sharex=True, sharey=True)
    extent = (0, 360, 0, 1)
    used: set[str] = set()
    for j, sat in enumerate(saturations):
        grid = hls_grid(hues, light, sat)
        flat = grid.reshape(-1, 3)
        predicted: dict[str, np.ndarray] = {}  # model key -> its names of `flat`, once
        for i, (title, key, rule) in enumerate(rows):
            ax = axes[i, j]
            if key is None:
                ax.imshow(grid.astype(np.uint8), origin="lower", aspect="auto", extent=extent)
            else:
                if key not in predicted:
                    predicted[key] = np.asarray(models[key].predict(flat)).astype(str)
                pred = predicted[key]
                if rule:
                    # name_colors(flat, model) without predicting the grid a second time: the
                    # model names each color on its own, so its names of the chromatic colors
                    # are those of its own row (half the time of this figure)
                    neutral = neutral_names(rgb_to_lab(np.asarray(flat, dtype=np.float32)))
                    pred = np.where(neutral == "", pred, neutral)
                used.update(pred)
                codes = np.array([names.index(p) for p in pred]).reshape(grid.shape[:2])
                ax.imshow(codes, origin="lower", aspect="auto", extent=extent, cmap=cmap,
                          vmin=-0.5, vmax=len(names) - 0.5, interpolation="nearest")
            ax.set_title(f"{title}, saturation {sat:g}", fontsize=9)
            if i == len(rows) - 1:
                ax.set_xlabel("hue (degrees)")
            if j == 0:
                ax.set_ylabel("lightness (HLS)")
    handles = [Patch(facecolor=NAME_SWATCHES[n], edgecolor="black", label=n)
               for n in names if n in used]
    fig.legend(handles=handles, loc="center right", title="name", fontsize=8)
    fig.suptitle("Decision regions over hue x lightness")
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / fig.get_figwidth(), 1))
    return fig


def plot_palette_gallery(
    files: Sequence[str | os.PathLike[str]],
    palettes: Sequence[Palette | None],
    titles: Sequence[str] | None = None,
    ncols: int = 2,
    size: float = 1.9,
) -> Any:
    """Each photo beside its item (background faded) and its palette with names and shares.

    The item's title is red and ends in "check" when :meth:`Palette.warnings` flags the palette.

    Parameters
    ----------
    files : sequence of path-like
    palettes : sequence of Palette or None
        ``None`` (unreadable photo) shows an empty slot.
    titles : sequence of str, optional
        Title per photo (e.g. its class).
    ncols : int
        Photos per row (each takes three panels: photo, item, palette).
    size : float
        Inches per panel.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    n = max(len(files), 1)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, 3 * ncols, squeeze=False,
                             figsize=(3 * ncols * size, nrows * size * 1.05),
                             gridspec_kw={"width_ratios": [1, 1, 1.15] * ncols})
    for ax in axes.ravel():
        ax.axis("off")
    for idx, (file, pal) in enumerate(zip(files, palettes, strict=True)):
        r, c = divmod(idx, ncols)
        ax_photo, ax_item, ax_pal = axes[r, 3 * c: 3 * c + 3]
        title = titles[idx] if titles is not None else Path(file).name
        ax_photo.set_title(str(title), fontsize=8)
        if pal is None:
            ax_photo.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=8)
            continue
        ax_photo.imshow(pal.image)
        faded = np.where(pal.mask[..., None], pal.image,
                         (0.25 * pal.image + 0.75 * 235).astype(np.uint8))
        ax_item.imshow(faded)
        flagged = bool(pal.warnings())
        ax_item.set_title(f"item ({pal.method}, {pal.mask_share:.0%})" + (", check" * flagged),
                          fontsize=7, color="crimson" if flagged else "black")
        ax_pal.axis("on")
        ax_pal.set_xlim(0, 1)
        ax_pal.set_ylim(0, 1)
        ax_pal.set_xticks([])
        ax_pal.set_yticks([])
        left = 0.0
        for col in pal.colors:  # stacked share bar along the top
            ax_pal.add_patch(plt.Rectangle((left, 0.8), col.share, 0.2, color=col.hex,
                                           ec="black", lw=0.4))
            left += col.share
        for k, col in enumerate(pal.colors[:4]):
            y = 0.62 - k * 0.19
            ax_pal.add_patch(plt.Rectangle((0.04, y - 0.06), 0.16, 0.13, color=col.hex,
                                           ec="black", lw=0.4))
            ax_pal.text(0.25, y, f"{col.name} {col.share:.0%}", va="center", fontsize=7,
                        fontweight="bold" if k == 0 else "normal")
    fig.suptitle("Item photos, the item found in each (background faded), and its main colors")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    return fig
