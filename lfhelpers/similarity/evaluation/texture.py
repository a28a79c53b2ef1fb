"""The tutorial's classifier on image features, its evaluation, and feature-set comparisons.

* :func:`make_classifier`: ``StandardScaler`` + ``LogisticRegression``, as in the tutorial.
* :func:`evaluate`: leave-one-out and 5-fold accuracy, a per-class report and a confusion matrix
  (the leave-one-out fits of :func:`make_classifier`'s shape are solved together, exactly, by
  :func:`~lfhelpers.similarity.evaluation.loo.leave_one_out_predict`).
* :func:`compare_features`: several feature sets of the same photos (the tutorial's haralick
  features, the defaults, the color histogram, texture + color) in one table of accuracy and
  seconds; :func:`time_extraction`: their extraction speed, measured with the cache bypassed.
* :func:`labelled_files`: files and labels of a folder of class sub-folders, or of a flat
  folder named like the book's ``SimpleImageDataset`` (``building00.jpg``, ``scene07.jpg``).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import classification_report, confusion_matrix
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from lfhelpers.errors import DataError
from lfhelpers.images import IMAGE_SUFFIXES
from lfhelpers.plots import confusion_matrix as confusion_matrix_plot
from lfhelpers.similarity.evaluation.loo import leave_one_out_predict
from lfhelpers.similarity.features.base import Extraction
from lfhelpers.store import kept_results

log = logging.getLogger(__name__)


def make_classifier(seed: int = 42, C: float = 1.0) -> Pipeline:
    """The tutorial's classifier: ``StandardScaler`` then ``LogisticRegression``.

    ``max_iter`` is raised from scikit-learn's 100 so that it converges on these features.
    """
    return Pipeline([("scale", StandardScaler()),
                     ("classifier", LogisticRegression(C=C, max_iter=2000, random_state=seed))])


@dataclass
class Evaluation:
    """Result of :func:`evaluate`.

    Attributes
    ----------
    loocv_accuracy, cv_accuracy : float
        Leave-one-out accuracy; mean accuracy of the k folds.
    cv_scores : ndarray
        Accuracy of each fold.
    loocv_predictions : ndarray
        The leave-one-out prediction of each image.
    report : pandas.DataFrame
        Precision, recall, F1 and support per class (leave-one-out predictions).
    confusion : pandas.DataFrame
        Counts, rows = true class, columns = predicted class.
    """

    loocv_accuracy: float
    cv_accuracy: float
    cv_scores: np.ndarray
    loocv_predictions: np.ndarray
    report: pd.DataFrame
    confusion: pd.DataFrame

    def table(self) -> pd.DataFrame:
        """Accuracy table: leave-one-out and k-fold, with the fold spread."""
        k = len(self.cv_scores)
        return pd.DataFrame(
            {"accuracy": [self.loocv_accuracy, self.cv_accuracy],
             "std over folds": [np.nan, float(np.std(self.cv_scores))],
             "models fitted": [len(self.loocv_predictions), k]},
            index=pd.Index(["leave-one-out", f"{k}-fold (stratified)"], name="validation"))


def evaluate(features: np.ndarray, labels: Sequence[str], seed: int = 42, n_splits: int = 5,
             n_jobs: int | None = None, classifier: Pipeline | None = None) -> Evaluation:
    """Leave-one-out and stratified k-fold accuracy of the classifier on ``features``.

    Parameters
    ----------
    features : ndarray of shape (n, d)
        One row per image.
    labels : sequence of str
        Class of each image; every class needs at least 2 images.
    seed : int
        Seed of the fold shuffling and the classifier.
    n_splits : int
        Folds of the k-fold estimate (lowered to the smallest class size when needed).
    n_jobs : int, optional
        Parallel fits (k-fold; leave-one-out of a classifier of another shape than
        :func:`make_classifier`'s, whose leave-one-out runs on one thread).
    classifier : Pipeline, optional
        Default :func:`make_classifier`. Its leave-one-out predictions are the optimum of each
        fit (:func:`~lfhelpers.similarity.evaluation.loo.leave_one_out_predict`); another
        shape goes through ``cross_val_predict(..., LeaveOneOut())``.

    Returns
    -------
    Evaluation
    """
    X = np.asarray(features, dtype=float)
    y = np.asarray(labels, dtype=str)
    if len(X) != len(y):
        raise DataError(f"{len(X)} feature rows but {len(y)} labels.")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2 or counts.min() < 2:
        raise DataError(f"Need at least 2 classes with 2+ images each; got "
                        f"{dict(zip(classes, counts.tolist(), strict=True))}. Drop the small "
                        "classes (sample_per_class does) or add images.")
    clf = classifier if classifier is not None else make_classifier(seed)
    folds = min(n_splits, int(counts.min()))
    if folds < n_splits:
        log.warning("Using %d folds instead of %d: the smallest class has %d images.",
                    folds, n_splits, counts.min())
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    cv_scores = cross_val_score(clf, X, y, cv=cv, n_jobs=n_jobs)
    predictions = leave_one_out_predict(clf, X, y, n_jobs=n_jobs)
    report = pd.DataFrame(classification_report(y, predictions, labels=classes,
                                                output_dict=True, zero_division=0)).T
    report["support"] = report["support"].astype(int)
    confusion = pd.DataFrame(confusion_matrix(y, predictions, labels=classes),
                             index=pd.Index(classes, name="true"),
                             columns=pd.Index(classes, name="predicted"))
    return Evaluation(loocv_accuracy=float(np.mean(predictions == y)),
                      cv_accuracy=float(np.mean(cv_scores)), cv_scores=cv_scores,
                      loocv_predictions=predictions, report=report, confusion=confusion)


def plot_confusion(confusion: pd.DataFrame, title: str = "Confusion matrix (leave-one-out)",
                   ax: plt.Axes | None = None) -> plt.Axes:
    """Confusion matrix with counts (rows true, columns predicted), by the one shared plot.

    Parameters
    ----------
    confusion : pandas.DataFrame
        :attr:`Evaluation.confusion`.
    title : str
        Axes title.
    ax : matplotlib Axes, optional
        Where to draw.

    Returns
    -------
    matplotlib.axes.Axes
    """
    figure = confusion_matrix_plot(confusion, title, ax=ax, normalize=None)
    return ax if ax is not None else figure.axes[0]




def labelled_files(folder: str | os.PathLike[str]) -> pd.DataFrame:
    """Files and labels of a folder of class sub-folders, or of a flat folder of named photos.

    In a flat folder the label is the file name without its trailing number, as in the book's
    ``SimpleImageDataset`` (``building00.jpg`` -> ``building``).

    Parameters
    ----------
    folder : path-like
        Folder of class sub-folders (folder name = label), or of photos named ``<label><n>``.

    Returns
    -------
    pandas.DataFrame
        Columns ``file`` and ``label``, sorted by file.

    Raises
    ------
    DataError
        The folder does not exist or holds no photos.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder.")
    photos = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
                    and p.suffix.lower() in IMAGE_SUFFIXES)
    rows = []
    for path in photos:
        if path.parent != root:
            label = path.relative_to(root).parts[0]
        else:
            label = re.sub(r"[\s_-]*\d+$", "", path.stem) or path.stem
        rows.append({"file": str(path), "label": label})
    if not rows:
        raise DataError(f"No photos in {root}.")
    return pd.DataFrame(rows)


def time_extraction(extractors: Mapping[str, object], files: Sequence[str | os.PathLike[str]],
                    ) -> pd.DataFrame:
    """Extraction time of each feature set on the same photos, with the disk cache bypassed.

    Each extractor first runs once, untimed, on the first photo, so that starting worker
    processes and imports are not charged to whichever extractor happens to come first (a
    rerun whose features all came from the cache has started none yet).

    Parameters
    ----------
    extractors : mapping of name -> extractor
        :class:`~lfhelpers.similarity.features.texture.HaralickFeatures`, ``ColorHistogram`` or
        ``CombinedFeatures``; each is cloned without its cache (``cache_dir=None``).
    files : sequence of path-like
        The photos, the same for all.

    Returns
    -------
    pandas.DataFrame
        Index: the names; columns ``photos``, ``seconds``, ``photos_per_second`` and
        ``speedup`` (the first extractor's seconds divided by each one's).
    """
    rows = {}
    for name, extractor in extractors.items():
        uncached = clone(extractor)
        params = uncached.get_params()
        uncached.set_params(**{key: None for key in params if key.endswith("cache_dir")},
                            **{key: False for key in params if key.endswith("progress")})
        uncached.extract(list(files)[:1])  # warm-up, untimed
        start = time.perf_counter()
        result = uncached.extract(files)
        seconds = time.perf_counter() - start
        rows[name] = {"photos": int(result.ok.sum()), "seconds": seconds,
                      "photos_per_second": len(files) / seconds if seconds > 0 else np.nan}
    table = pd.DataFrame(rows).T
    table["photos"] = table["photos"].astype(int)
    first = table["seconds"].iloc[0]
    table["speedup"] = first / table["seconds"]
    table.index.name = "features"
    return table


@dataclass
class Comparison:
    """Result of :func:`compare_features`.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per feature set: ``n_features``, ``seconds`` (extraction, cache reads
        included), ``from_cache``, ``loocv_accuracy``, ``cv5_accuracy``.
    features : dict of name -> ndarray
        Each set's rows for the photos every set could read (``ok``).
    evaluations : dict of name -> Evaluation
    extractions : dict of name -> Extraction
    ok : ndarray of bool
        Photos readable by every set.
    """

    table: pd.DataFrame
    features: dict[str, np.ndarray]
    evaluations: dict[str, Evaluation]
    extractions: dict[str, Extraction]
    ok: np.ndarray

    def best(self, among: Sequence[str] | None = None) -> str:
        """Name of the set with the highest leave-one-out accuracy (ties: the first)."""
        names = list(among) if among is not None else list(self.table.index)
        return str(self.table.loc[names, "loocv_accuracy"].idxmax())


def compare_features(extractors: Mapping[str, object], files: Sequence[str | os.PathLike[str]],
                     labels: Sequence[str], seed: int = 42, n_jobs: int | None = None,
                     combine: Mapping[str, Sequence[str]] | None = None,
                     cache_dir: str | os.PathLike[str] | None = None) -> Comparison:
    """Several feature sets of the same photos, scored by the same classifier, in one table.

    Parameters
    ----------
    extractors : mapping of name -> extractor
        E.g. ``{"tutorial": HaralickFeatures(preset="tutorial"), "texture":
        HaralickFeatures(), "color": ColorHistogram()}``.
    files, labels : sequences
        The photos and their classes.
    seed, n_jobs
        As in :func:`evaluate`.
    combine : mapping of name -> names, optional
        Extra sets made by putting sets side by side (columns concatenated, as a
        ``FeatureUnion`` would), e.g. ``{"texture + color": ["texture", "color"]}``.
    cache_dir : path-like, optional
        Each set's evaluation is kept in ``<cache_dir>/texture_evaluation``
        (:func:`lfhelpers.store.kept_results`, by the features, the labels and the code of
        this module and of :mod:`~lfhelpers.similarity.evaluation.loo`): a rerun on the same
        photos does not fit the leave-one-out classifiers again.

    Returns
    -------
    Comparison
    """
    scored = kept_results(cache_dir, "texture_evaluation", sys.modules[__name__],
                          sys.modules[leave_one_out_predict.__module__]).cache(
        evaluate, ignore=["n_jobs"])
    files = [os.fspath(f) for f in files]
    labels = np.asarray(labels, dtype=str)
    extractions = {name: ex.extract(files) for name, ex in extractors.items()}
    ok = np.logical_and.reduce([e.ok for e in extractions.values()])
    features = {name: e.aligned(np.float64)[ok] for name, e in extractions.items()}
    seconds = {name: e.seconds for name, e in extractions.items()}
    cached = {name: e.n_cached for name, e in extractions.items()}
    for name, parts in (combine or {}).items():
        features[name] = np.hstack([features[p] for p in parts])
        seconds[name] = sum(seconds[p] for p in parts)
        cached[name] = min(cached[p] for p in parts)
    evaluations = {name: scored(x, labels[ok], seed=seed, n_jobs=n_jobs)
                   for name, x in features.items()}
    table = pd.DataFrame({
        "n_features": {n: x.shape[1] for n, x in features.items()},
        "seconds": seconds, "from_cache": cached,
        "loocv_accuracy": {n: e.loocv_accuracy for n, e in evaluations.items()},
        "cv5_accuracy": {n: e.cv_accuracy for n, e in evaluations.items()},
    })
    table.index.name = "features"
    return Comparison(table=table, features=features, evaluations=evaluations,
                      extractions=extractions, ok=ok)
