"""Matplotlib helpers shared by the notebooks: CJK-capable fonts, bar charts, image grids."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import font_manager

from lfhelpers.images import thumbnail

log = logging.getLogger(__name__)

#: Fonts with Hangul and CJK glyphs, in order of preference.
CJK_FONTS = ("NanumGothic", "Noto Sans CJK KR", "Noto Sans KR", "Noto Sans CJK JP",
             "Noto Sans CJK SC", "Source Han Sans KR", "Malgun Gothic", "AppleGothic",
             "UnDotum", "WenQuanYi Zen Hei", "Droid Sans Fallback")


def setup_fonts() -> str | None:
    """Put a CJK-capable font first in matplotlib's sans-serif list when one is installed.

    Returns
    -------
    str or None
        The font family chosen, or ``None`` when no CJK font is installed (Korean labels then
        fall back to the default font; nothing crashes).
    """
    # "findfont: Failed to find font weight bold" is printed for every bold title when a family
    # has no bold face; the regular face is used, which is what we want anyway
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    installed = {f.name for f in font_manager.fontManager.ttflist}
    if not installed & set(CJK_FONTS):
        # fonts installed after matplotlib built its cache are not in it yet
        hints = ("nanum", "cjk", "notosanskr", "sourcehan", "malgun", "applegothic", "wqy",
                 "droidsansfallback", "undotum")
        for path in font_manager.findSystemFonts():
            if any(h in Path(path).name.lower().replace("-", "") for h in hints):
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):
                    continue
        installed = {f.name for f in font_manager.fontManager.ttflist}
    for name in CJK_FONTS:
        if name in installed:
            matplotlib.rcParams["font.family"] = "sans-serif"
            matplotlib.rcParams["font.sans-serif"] = [name, *matplotlib.rcParams["font.sans-serif"]]
            matplotlib.rcParams["axes.unicode_minus"] = False
            return name
    warnings.warn("No CJK font is installed, so Korean labels in the figures may show as boxes. "
                  "Install one (Debian/Ubuntu: apt-get install fonts-nanum) and restart the "
                  "kernel.", stacklevel=2)
    return None


def bar_counts(
    counts: Mapping[str, pd.Series] | pd.DataFrame,
    title: str,
    ylabel: str = "images",
    ax: plt.Axes | None = None,
) -> plt.Axes:
    """Grouped bar chart of per-class counts (e.g. before/after), labelled and titled.

    Parameters
    ----------
    counts : mapping of name -> Series, or DataFrame
        One bar series per column/key, indexed by label.
    title : str
        Axes title.
    ylabel : str
        Y axis label.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    matplotlib.axes.Axes
    """
    frame = pd.DataFrame(counts).fillna(0)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6, 0.8 * len(frame) + 2), 4))
    frame.plot.bar(ax=ax, rot=30 if len(frame) > 6 else 0, width=0.8)
    ax.set_title(title)
    ax.set_xlabel("class")
    ax.set_ylabel(ylabel)
    for container in ax.containers:
        ax.bar_label(container, fontsize=7)
    ax.figure.tight_layout()
    return ax


def image_grid(
    paths: Sequence[str | os.PathLike[str]],
    titles: Sequence[str] | None = None,
    ncols: int = 6,
    size: float = 1.8,
    suptitle: str | None = None,
) -> plt.Figure:
    """Show images in a grid with optional titles; unreadable files show as a grey tile.

    Parameters
    ----------
    paths : sequence of path-like
        Image files.
    titles : sequence of str, optional
        One title per image.
    ncols : int
        Columns of the grid.
    size : float
        Inches per tile.
    suptitle : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    n = max(len(paths), 1)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size * 1.15),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, path in enumerate(paths):
        ax = axes.ravel()[i]
        ax.imshow(thumbnail(path))
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, out_dir: str | os.PathLike[str], name: str) -> None:
    """Save ``fig`` as ``<out_dir>/figures/<name>.png`` (150 dpi).

    Returns nothing, so that a notebook cell ending with this call shows only the figure.
    """
    path = Path(out_dir) / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")


def photo_tile(ax: plt.Axes, photo: str | os.PathLike[str] | None, size: int = 256) -> None:
    """Draw a photo's thumbnail in ``ax`` without ticks or frame (``None``: an empty tile)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if photo is not None:
        ax.imshow(thumbnail(photo, size))


def class_samples(manifest: pd.DataFrame, per_class: int = 6, seed: int = 0,
                  size: float = 1.6) -> plt.Figure:
    """A grid with one row of sample images per class (label on the left).

    Parameters
    ----------
    manifest : pandas.DataFrame
        Rows with ``label`` and ``file`` (absolute path) columns.
    per_class : int
        Images per row.
    seed : int
        Which samples are drawn.
    size : float
        Inches per tile.

    Returns
    -------
    matplotlib.figure.Figure
    """
    labels = sorted(manifest["label"].unique())
    fig, axes = plt.subplots(len(labels), per_class, squeeze=False,
                             figsize=(per_class * size, len(labels) * size))
    for r, label in enumerate(labels):
        rows = manifest[manifest["label"] == label]
        picks = rows.sample(min(per_class, len(rows)), random_state=seed)["file"].tolist()
        for c in range(per_class):
            ax = axes[r, c]
            photo_tile(ax, picks[c] if c < len(picks) else None)
            if c == 0:
                ax.set_ylabel(f"{label}\n({len(rows)})", rotation=0, ha="right", va="center",
                              fontsize=10)
    fig.suptitle("Samples per class (clean images; count in brackets)")
    fig.tight_layout()
    return fig


def rejects_gallery(rejects: pd.DataFrame, clean_dir: str | os.PathLike[str],
                    per_reason: int = 4) -> plt.Figure | None:
    """Thumbnails of quarantined files, a few per reason, titled with reason and file name.

    Files that cannot be decoded (empty, HTML, truncated) show as a grey tile.

    Returns
    -------
    matplotlib.figure.Figure or None
        ``None`` when nothing was rejected.
    """
    if rejects.empty:
        return None
    picks = rejects.groupby("reason", sort=True).head(per_reason)
    paths = [Path(clean_dir) / q for q in picks["quarantine"]]
    titles = [f"{reason}\n{Path(src).name[:22]}" for reason, src in
              zip(picks["reason"], picks["source"], strict=True)]
    return image_grid(paths, titles, ncols=min(6, len(paths)), size=2.0,
                      suptitle="Quarantined files (grey tile: not decodable)")


def confusion_matrix(
    confusion: pd.DataFrame,
    title: str = "Confusion matrix",
    ax: plt.Axes | None = None,
    normalize: str | None = "true",
) -> plt.Figure:
    """Confusion matrix with scikit-learn's ``ConfusionMatrixDisplay``: colour share, text count.

    Parameters
    ----------
    confusion : pandas.DataFrame
        Counts; rows the true label, columns the predicted label (any Unicode labels).
    title : str
        Axes title.
    ax : matplotlib Axes, optional
        Where to draw; a new figure sized to the number of classes when omitted.
    normalize : {"true", "pred", None}
        What the colour shows: the share of the true class (row), of the predicted class
        (column), or the count itself. The cell text is always the count.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from sklearn.metrics import ConfusionMatrixDisplay

    counts = confusion.to_numpy()
    if normalize == "true":
        color, bar = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1), \
            "share of the true class"
    elif normalize == "pred":
        color, bar = counts / np.maximum(counts.sum(axis=0, keepdims=True), 1), \
            "share of the predicted class"
    else:
        color, bar = counts, "images"
    n = len(confusion)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.5, 0.7 * n + 2.5), max(4.0, 0.6 * n + 2)))
    display = ConfusionMatrixDisplay(color, display_labels=[str(c) for c in confusion.columns])
    display.plot(ax=ax, cmap="Blues", colorbar=False, include_values=False,
                 xticks_rotation=40)
    display.im_.set_clim(0, 1 if normalize else max(int(counts.max(initial=0)), 1))
    ax.set_yticks(range(n), [str(c) for c in confusion.index])
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    high = 0.5 * (1 if normalize else max(counts.max(initial=0), 1))
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if color[i, j] > high else "black")
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(title)
    fig = ax.figure
    fig.colorbar(display.im_, ax=ax, fraction=0.046, pad=0.04, label=bar)
    fig.tight_layout()
    return fig
