"""Scores and figures of a classifier: top-k accuracy, loss, per-class table, mistakes.

Metrics come from scikit-learn (``top_k_accuracy_score``, ``log_loss``,
``precision_recall_fscore_support``, ``confusion_matrix``); the confusion figure is
:func:`lfhelpers.plots.confusion_matrix`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import (
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from lfhelpers.errors import DataError


def label_indices(labels: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """Column index in ``classes`` of each label; a clear error for an unknown label."""
    index = {str(c): i for i, c in enumerate(classes)}
    unknown = sorted({str(x) for x in labels} - set(index))
    if unknown:
        raise DataError(f"Labels {unknown} are not among the trained classes {list(classes)}.")
    return np.array([index[str(x)] for x in labels], dtype=int)


def evaluate_predictions(
    labels: Sequence[str], proba: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Scores of predicted probabilities against true labels.

    Parameters
    ----------
    labels : sequence of str
        True labels.
    proba : numpy.ndarray
        ``(n, len(classes))`` probabilities.
    classes : sequence of str
        Column order of ``proba``.

    Returns
    -------
    dict
        ``loss`` (categorical cross-entropy), ``top1``, ``top3``, ``macro_f1``, ``n``;
        ``per_class`` (DataFrame: precision, recall, f1, support per label) and ``confusion``
        (DataFrame, rows true label, columns predicted label).
    """
    classes = [str(c) for c in classes]
    y = label_indices(labels, classes)
    proba = np.asarray(proba, dtype=np.float64)
    idx = list(range(len(classes)))
    pred = proba.argmax(axis=1) if len(proba) else np.zeros(0, int)
    n = len(y)
    if n:
        clipped = np.clip(proba, 1e-7, 1.0)
        loss = float(log_loss(y, clipped / clipped.sum(axis=1, keepdims=True), labels=idx))
        top1 = float(top_k_accuracy_score(y, proba, k=1, labels=idx))
        top3 = float(top_k_accuracy_score(y, proba, k=min(3, len(classes)), labels=idx))
    else:
        loss = top1 = top3 = float("nan")
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=idx, zero_division=0)
    per_class = pd.DataFrame({"precision": precision, "recall": recall, "f1": f1,
                              "support": support}, index=pd.Index(classes, name="label"))
    cm = pd.DataFrame(confusion_matrix(y, pred, labels=idx),
                      index=pd.Index(classes, name="true"),
                      columns=pd.Index(classes, name="predicted"))
    return {"n": n, "loss": loss, "top1": top1, "top3": top3,
            "macro_f1": float(f1_score(y, pred, labels=idx, average="macro", zero_division=0)),
            "per_class": per_class, "confusion": cm}


def top_k_table(
    proba: np.ndarray, classes: Sequence[str], k: int = 3, files: Sequence[str] | None = None
) -> pd.DataFrame:
    """The clerk's view: the ``k`` best labels with their probabilities, one row per image.

    Parameters
    ----------
    proba : numpy.ndarray
        ``(n, len(classes))`` probabilities.
    classes : sequence of str
        Column order of ``proba``.
    k : int
        How many labels per image.
    files : sequence of str, optional
        Image paths; shown as the file name in a first column.

    Returns
    -------
    pandas.DataFrame
        Columns ``top1``, ``p1``, ``top2``, ``p2``, ... (and ``file``).
    """
    k = min(k, len(classes))
    order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    data: dict[str, list] = {}
    if files is not None:
        data["file"] = [Path(f).name for f in files]
    for j in range(k):
        data[f"top{j + 1}"] = [classes[i] for i in order[:, j]]
        data[f"p{j + 1}"] = np.round(proba[np.arange(len(proba)), order[:, j]], 3)
    return pd.DataFrame(data)


def comparison_table(results: Mapping[str, Any]) -> pd.DataFrame:
    """Side-by-side test scores of several runs (the tutorial's before/after augmentation table).

    Parameters
    ----------
    results : mapping
        Run name -> ``(classifier, evaluation)`` (a fitted classifier and its ``evaluate``
        result), or a dict with ``loss``, ``top1``, ``top3``, ``macro_f1`` and optionally
        ``n_train`` and ``train_seconds``.

    Returns
    -------
    pandas.DataFrame
        One row per run: training examples, test loss, top-1, top-3, macro-F1 and training
        seconds, rounded to 4 decimals.
    """
    cols = ["n_train", "loss", "top1", "top3", "macro_f1", "train_seconds"]
    rows = {}
    for name, value in results.items():
        if isinstance(value, tuple):
            clf, evaluation = value
            value = {**evaluation, "n_train": getattr(clf, "n_train_", np.nan),
                     "train_seconds": getattr(clf, "train_seconds_", np.nan)}
        rows[name] = {c: value.get(c, np.nan) for c in cols}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "run"
    table = table.rename(columns={"loss": "test_loss", "top1": "test_top1",
                                  "top3": "test_top3"})
    return table.round(4)


def plot_learning_curves(history: pd.DataFrame, title: str = "Learning curves") -> plt.Figure:
    """Loss and top-1 accuracy per epoch, train and validation, phases marked.

    Parameters
    ----------
    history : pandas.DataFrame
        ``XceptionClassifier.history_``.
    title : str
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, metric, name in ((axes[0], "loss", "cross-entropy loss"),
                             (axes[1], "accuracy", "top-1 accuracy")):
        for col, style, label in ((metric, "-o", "train"), (f"val_{metric}", "--s", "validation")):
            if col in history:
                ax.plot(history["epoch"], history[col], style, ms=3, label=label)
        for phase, part in history.groupby("phase", sort=False):
            if phase != history["phase"].iloc[0]:
                ax.axvline(part["epoch"].min() - 0.5, color="grey", lw=1, ls=":")
                ax.text(part["epoch"].min() - 0.4, ax.get_ylim()[1], f" phase {phase}",
                        va="top", fontsize=8, color="grey")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def epoch_table(history: pd.DataFrame, decimals: int = 4) -> pd.DataFrame:
    """The per-epoch figures of a training run as a compact table (phase, epoch, metrics)."""
    if history is None or len(history) == 0:
        return pd.DataFrame()
    return history.set_index(["phase", "epoch"]).round(decimals)


def mistake_gallery(
    df: pd.DataFrame,
    proba: np.ndarray,
    classes: Sequence[str],
    n: int = 12,
    ncols: int = 4,
    title: str = "Mistakes on the test split",
) -> plt.Figure:
    """Misclassified images with their true label and the top 3 with probabilities.

    Parameters
    ----------
    df : pandas.DataFrame
        The evaluated rows (``file``, ``label``), in the order of ``proba``.
    proba : numpy.ndarray
        Predicted probabilities.
    classes : sequence of str
        Column order of ``proba``.
    n : int
        At most this many mistakes, the most confident ones first.
    ncols : int
        Columns of the grid.
    title : str
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        With a note instead of images when there is no mistake.
    """
    from lfhelpers.plots import image_grid

    classes = list(classes)
    pred = proba.argmax(axis=1)
    truth = label_indices(list(df["label"]), classes)
    wrong = np.flatnonzero(pred != truth)
    wrong = wrong[np.argsort(-proba[wrong, pred[wrong]], kind="stable")][:n]
    if len(wrong) == 0:
        fig, ax = plt.subplots(figsize=(5, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "No mistakes on these images.", ha="center", va="center")
        ax.set_title(title)
        return fig
    top = top_k_table(proba[wrong], classes, k=3)
    titles = []
    for row, i in zip(top.itertuples(index=False), wrong, strict=True):
        lines = [f"true: {df['label'].iloc[i]}"]
        for j in range(1, min(3, len(classes)) + 1):
            lines.append(f"{j}. {getattr(row, f'top{j}')} {getattr(row, f'p{j}'):.2f}")
        titles.append("\n".join(lines))
    fig = image_grid(list(df["file"].iloc[wrong]), titles, ncols=ncols, size=2.4,
                     suptitle=title)
    nrows = int(np.ceil(len(wrong) / min(ncols, len(wrong))))
    fig.set_size_inches(fig.get_size_inches()[0], nrows * 3.3 + 0.6)  # room for 4-line titles
    fig.tight_layout()
    return fig
