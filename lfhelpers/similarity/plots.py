"""Figures of search results: matches and neighbours of queries, explained matches, heat-maps."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lfhelpers.images import thumbnail
from lfhelpers.plots import image_grid


def plot_matches(
    table: pd.DataFrame,
    max_queries: int = 4,
    truth: str = "label",
    suptitle: str | None = None,
    size: float = 1.9,
) -> plt.Figure:
    """Each query (left, blue frame) beside its top matches, right answers framed green.

    Parameters
    ----------
    table : pandas.DataFrame
        From :meth:`GalleryIndex.query_table` (``query, query_label, rank, path, label,
        score``); for the near-duplicate test add an ``original`` column.
    max_queries : int
        Rows drawn.
    truth : {"label", "original"}
        A match is right when it has the query's label, or when it is the query's original.
    suptitle : str, optional
    size : float
        Inches per tile.

    Returns
    -------
    matplotlib.figure.Figure
    """
    queries = list(dict.fromkeys(table["query"]))[:max_queries]
    k = int(table["rank"].max()) if len(table) else 1
    fig, axes = plt.subplots(max(len(queries), 1), k + 1, squeeze=False,
                             figsize=((k + 1) * size, max(len(queries), 1) * size * 1.3))
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    for r, query in enumerate(queries):
        group = table[table["query"] == query].sort_values("rank")
        first = group.iloc[0]
        panels = [(query, f"query\n{first['query_label']}", "tab:blue")]
        for row in group.itertuples():
            right = (row.path == row.original) if truth == "original" else (
                row.label == row.query_label)
            mark = "right" if right else "wrong"
            panels.append((row.path, f"{row.rank}. {row.label} ({mark})\n{row.score:.3f}",
                           "tab:green" if right else "tab:red"))
        for c, (path, title, color) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(thumbnail(path, 224))
            ax.set_title(title, fontsize=8, color="black" if c == 0 else color)
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color(color)
                spine.set_linewidth(3)
    fig.suptitle(suptitle or "Query photos and their most similar gallery photos "
                 "(green: right, red: wrong; score = cosine similarity)")
    fig.tight_layout()
    return fig


def plot_explained(query: str, table: pd.DataFrame, query_label: str = "",
                   size: float = 2.2) -> plt.Figure:
    """One lost photo and the matcher's proposals, each titled with its score and reasons."""
    k = len(table)
    fig, axes = plt.subplots(1, k + 1, squeeze=False, figsize=((k + 1) * size, size * 1.7))
    panels = [(query, f"lost photo\n{query_label}", "tab:blue")]
    for row in table.itertuples():
        right = bool(query_label) and row.label == query_label
        why = row.why.replace("; ", "\n")
        panels.append((row.path, f"{row.rank}. {row.label} ({row.score:.2f})\n{why}",
                       "tab:green" if right else "tab:red"))
    for ax, (path, title, color) in zip(axes[0], panels, strict=False):
        ax.imshow(thumbnail(path, 224))
        ax.set_title(title, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color(color)
            spine.set_linewidth(3)
    fig.suptitle("Lost-to-found matches with their reasons")
    fig.tight_layout()
    return fig


def class_order(labels: Sequence[str]) -> np.ndarray:
    """Positions that sort items by label (stable within a label)."""
    return np.argsort(np.asarray(labels, dtype=str), kind="stable")


def plot_distance_heatmap(
    dist: np.ndarray,
    labels: Sequence[str],
    title: str = "Pairwise distances, ordered by class",
    metric: str = "distance",
    ax: plt.Axes | None = None,
) -> plt.Axes:
    """Heat-map of a distance matrix with items grouped by class and class blocks outlined.

    A good feature shows darker (closer) squares on the diagonal blocks than off them.

    Parameters
    ----------
    dist : ndarray of shape (n, n)
        Distance matrix.
    labels : sequence of str
        Class of each item.
    title : str
        Axes title.
    metric : str
        Name of the distance for the color bar.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    matplotlib.axes.Axes
    """
    labels = np.asarray(labels, dtype=str)
    order = class_order(labels)
    ordered = np.asarray(dist)[np.ix_(order, order)]
    sorted_labels = labels[order]
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 6.5))
    image = ax.imshow(ordered, cmap="viridis", interpolation="nearest")
    ax.figure.colorbar(image, ax=ax, label=f"{metric} distance")
    names, starts, counts = np.unique(sorted_labels, return_index=True, return_counts=True)
    for start in starts[1:]:
        ax.axhline(start - 0.5, color="white", linewidth=0.8)
        ax.axvline(start - 0.5, color="white", linewidth=0.8)
    centres = starts + counts / 2 - 0.5
    ax.set_xticks(centres, names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(centres, names, fontsize=8)
    ax.set_xlabel("image (grouped by class)")
    ax.set_ylabel("image (grouped by class)")
    ax.set_title(title)
    ax.figure.tight_layout()
    return ax


def plot_neighbours(neighbours: pd.DataFrame, max_queries: int = 4,
                    suptitle: str | None = None) -> plt.Figure:
    """The tutorial's figure: each query beside its most similar images, one row per query.

    Titles are "original" and "similar 1..k", with each image's label (and distance).

    Parameters
    ----------
    neighbours : pandas.DataFrame
        A neighbour table, from :meth:`GalleryIndex.nearest` or
        :meth:`GalleryIndex.leave_one_out`.
    max_queries : int
        Rows to draw.
    suptitle : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    paths, titles = [], []
    query_order = list(dict.fromkeys(neighbours["query"]))[:max_queries]
    k = int(neighbours["rank"].max()) if len(neighbours) else 0
    for query in query_order:
        group = neighbours[neighbours["query"] == query].sort_values("rank")
        paths.append(query)
        titles.append(f"original\n{group['query_label'].iloc[0]}")
        for row in group.itertuples():
            paths.append(row.file)
            titles.append(f"similar {row.rank}\n{row.label} ({row.distance:.3f})")
    return image_grid(paths, titles, ncols=k + 1, size=2.2, suptitle=suptitle)
