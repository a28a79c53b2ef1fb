"""Cross-validation of the color-name models: random folds and folds grouped by contributor.

:func:`evaluate_models` scores models by k-fold cross-validation twice: with random folds, and
with folds grouped by contributor (``uid``), which is the honest figure for a person the model
has never seen. The crowd labels are noisy (a few contributors disagree with everyone else most
of the time), which caps every model tried near 0.80.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed, effective_n_jobs
from sklearn.base import BaseEstimator, clone
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from tqdm import tqdm

from lfhelpers.color.data import TUTORIAL_LABELS, ColorData
from lfhelpers.color.models import (
    MODEL_DESCRIPTIONS,
    TutorialColorClassifier,
    count_model_params,
    fit_quietly,
    import_keras,
    make_model,
)
from lfhelpers.errors import ConfigError, DataError
from lfhelpers.store import kept_results

#: Accuracy the tutorial reported for its model (batch 32; 0.7697 with batch 64).
TUTORIAL_REPORTED_ACCURACY = 0.7735
#: Rough relative time of one fit, to hand out the slowest fits first (unknown models: 1).
#: Measured on the 5,643 codingtrain entries, 2 cores: ensemble 4.2 s (its MLP 3.5 s), tutorial
#: 1.8 s (one epoch per compiled call), SVC 0.2 s.
_FIT_COST = {"ensemble_lab": 4.0, "tutorial": 2.0, "svc_lab": 0.2, "knn_lab": 0.05}


@dataclass
class ColorEvaluation:
    """Cross-validated accuracy of color-name models.

    Attributes
    ----------
    scores : pandas.DataFrame
        One row per (model, scheme, fold): ``accuracy``. ``scheme`` is ``"random"``
        (stratified folds) or ``"by_user"`` (folds grouped by contributor).
    predictions : dict
        ``(model, scheme)`` -> out-of-fold predicted labels, aligned with ``y``.
    y : ndarray
        True labels.
    params : dict
        Model -> trainable parameters (Keras models only).
    n_splits : int
        Folds per scheme.
    """

    scores: pd.DataFrame
    predictions: dict[tuple[str, str], np.ndarray]
    y: np.ndarray
    params: dict[str, int | None]
    n_splits: int

    def accuracy(self, model: str, scheme: str = "random") -> float:
        """Mean accuracy over the folds of ``scheme`` for ``model``."""
        sel = self.scores[(self.scores["model"] == model) & (self.scores["scheme"] == scheme)]
        return float(sel["accuracy"].mean()) if len(sel) else float("nan")

    def best_model(self, exclude: Iterable[str] = ("tutorial",)) -> str:
        """The model with the highest random-fold accuracy, among those not excluded."""
        names = [m for m in self.scores["model"].unique() if m not in set(exclude)]
        if not names:
            raise DataError("No model besides the excluded ones was evaluated.")
        return max(names, key=lambda m: self.accuracy(m, "random"))

    def table(self, reference: bool = True) -> pd.DataFrame:
        """Accuracy table: mean and standard deviation over folds, per model and scheme.

        Parameters
        ----------
        reference : bool
            Add the tutorial's published figure as a last row.

        Returns
        -------
        pandas.DataFrame
            Index model; columns description, parameters, random split accuracy (and std),
            by-contributor accuracy (and std).
        """
        rows = []
        for model in self.scores["model"].unique():
            sel = self.scores[self.scores["model"] == model]
            by = {scheme: sel.loc[sel["scheme"] == scheme, "accuracy"]
                  for scheme in ("random", "by_user")}
            rows.append({
                "model": model,
                "description": MODEL_DESCRIPTIONS.get(model, model),
                "parameters": self.params.get(model),
                "accuracy, random split": by["random"].mean(),
                "std (random)": by["random"].std(),
                "accuracy, by contributor": by["by_user"].mean(),
                "std (by contributor)": by["by_user"].std(),
            })
        if reference:
            rows.append({"model": "tutorial (published)",
                         "description": "the tutorial's reported figure, its own data export",
                         "parameters": 841, "accuracy, random split": TUTORIAL_REPORTED_ACCURACY,
                         "std (random)": np.nan, "accuracy, by contributor": np.nan,
                         "std (by contributor)": np.nan})
        table = pd.DataFrame(rows).set_index("model")
        table["parameters"] = table["parameters"].astype("Int64")
        return table

    def confusion(self, model: str, scheme: str = "by_user") -> pd.DataFrame:
        """Confusion matrix of the out-of-fold predictions (rows true, columns predicted)."""
        pred = self.predictions[(model, scheme)]
        labels = [lab for lab in TUTORIAL_LABELS if lab in set(self.y) | set(pred)]
        labels += sorted((set(self.y) | set(pred)) - set(labels))
        values = confusion_matrix(self.y, pred, labels=labels)
        return pd.DataFrame(values, index=pd.Index(labels, name="true"),
                            columns=pd.Index(labels, name="predicted"))


def cv_splits(data: ColorData, scheme: str = "random", n_splits: int = 5,
              seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train/test index pairs for ``n_splits``-fold cross-validation.

    Parameters
    ----------
    data : ColorData
    scheme : {"random", "by_user"}
        ``"random"``: stratified random folds (each fold a random 80/20 split with 5 folds).
        ``"by_user"``: stratified folds grouped by ``uid``; no contributor is in both the
        training and the test part.
    n_splits : int
        Folds.
    seed : int
        Shuffling seed.

    Returns
    -------
    list of (train indices, test indices)
    """
    if scheme == "random":
        cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        return list(cv.split(data.X, data.y))
    if scheme == "by_user":
        if data.frame["uid"].nunique() < n_splits:
            raise DataError(f"Grouping by contributor needs at least {n_splits} contributors; "
                            f"the data has {data.frame['uid'].nunique()}.")
        cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        return list(cv.split(data.X, data.y, data.groups))
    raise ConfigError(f"Unknown split scheme {scheme!r}; use 'random' or 'by_user'.")


def evaluate_models(
    data: ColorData,
    models: Sequence[str] | str = ("tutorial", "svc_lab", "ensemble_lab"),
    n_splits: int = 5,
    seed: int = 0,
    epochs: int = 15,
    batch_size: int = 32,
    schemes: Sequence[str] = ("random", "by_user"),
    progress: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    n_jobs: int | None = -1,
) -> ColorEvaluation:
    """Cross-validate color-name models with random folds and with folds grouped by contributor.

    The evaluation depends on the color data, the settings and the code of
    :mod:`lfhelpers.color`, not on the item photos: with ``cache_dir`` its result is kept
    (:func:`lfhelpers.store.kept_results`, keyed by all of these), so notebook 04 rerun for
    new photos does not fit the models again.

    Parameters
    ----------
    data : ColorData
        Validated entries.
    models : sequence of str, or str
        Names for :func:`make_model` (a string: comma-separated names).
    n_splits : int
        Folds per scheme (5: each fold holds out 20%).
    seed : int
        Seeds the folds and the Keras training.
    epochs, batch_size : int
        Tutorial model settings.
    schemes : sequence of str
        Split schemes to run (see :func:`cv_splits`).
    progress : bool
        Show a tqdm bar over the fits.
    cache_dir : path-like, optional
        Cache root; the result is kept in its ``color_evaluation/`` folder.
    n_jobs : int or None
        Processes for the fits (joblib's convention: -1 every core; 1 or None: in this
        process), at most one per fit. Every fit is single-threaded and seeded on its own, so
        the result is the same whatever the value (not part of the cache key).

    Returns
    -------
    ColorEvaluation
    """
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
    settings = dict(models=list(models), n_splits=int(n_splits), seed=int(seed),
                    epochs=int(epochs), batch_size=int(batch_size), schemes=list(schemes))
    import lfhelpers.color

    run = kept_results(cache_dir, "color_evaluation", lfhelpers.color).cache(
        _evaluate_models, ignore=["progress", "n_jobs"])
    return run(data, **settings, progress=progress, n_jobs=n_jobs)


def _start_keras_worker() -> None:
    """Initializer of the worker processes when a Keras model is evaluated.

    Imports Keras before the first task, one thread per TensorFlow op (the workers share the
    cores). Otherwise the first Keras fit of a worker that began with a scikit-learn fit grows
    it by TensorFlow's few hundred MB, which loky takes for a memory leak: it replaces the
    worker, and the new one imports TensorFlow again (measured: 68 s instead of 58 s serial).
    """
    import_keras()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def _fit_fold(index: int, template: BaseEstimator, X_train: np.ndarray,  # noqa: N803
              y_train: np.ndarray, X_test: np.ndarray) -> tuple[int, np.ndarray, int | None]:
    """Fit a clone of ``template`` on one fold: (task index, test predictions, parameters)."""
    model = fit_quietly(clone(template), X_train, y_train)
    return index, np.asarray(model.predict(X_test)), count_model_params(model)


def _evaluate_models(data: ColorData, models: list[str], n_splits: int, seed: int, epochs: int,
                     batch_size: int, schemes: list[str], progress: bool,
                     n_jobs: int | None = None) -> ColorEvaluation:
    """:func:`evaluate_models` without the cache."""
    X, y = data.X, data.y
    splits = {s: cv_splits(data, s, n_splits, seed) for s in schemes}
    templates = {name: make_model(name, seed=seed, epochs=epochs, batch_size=batch_size)
                 for name in models}
    tasks = [(name, scheme, k, train, test) for name in models
             for scheme, folds in splits.items() for k, (train, test) in enumerate(folds)]
    # the slowest fits first, so that the processes finish together; the result is put back in
    # the order of `tasks` (model, scheme, fold) below
    order = sorted(range(len(tasks)), key=lambda i: -_FIT_COST.get(tasks[i][0], 1.0))
    jobs = (delayed(_fit_fold)(i, templates[tasks[i][0]], X[tasks[i][3]], y[tasks[i][3]],
                               X[tasks[i][4]]) for i in order)
    workers = max(1, min(effective_n_jobs(n_jobs), len(tasks)))
    keras_worker = any(isinstance(t, TutorialColorClassifier) for t in templates.values())
    start = {"initializer": _start_keras_worker} if workers > 1 and keras_worker else {}
    fitted: dict[int, tuple[np.ndarray, int | None]] = {}
    with tqdm(total=len(tasks), desc="color models", disable=not progress) as bar:
        for i, pred, n_params in Parallel(n_jobs=workers, return_as="generator_unordered",
                                          **start)(jobs):
            fitted[i] = pred, n_params
            bar.update()
    rows: list[dict[str, Any]] = []
    predictions: dict[tuple[str, str], np.ndarray] = {}
    params: dict[str, int | None] = {}
    for i, (name, scheme, k, _, test) in enumerate(tasks):
        pred, params[name] = fitted[i]
        predictions.setdefault((name, scheme), np.empty(len(y), dtype=object))[test] = pred
        rows.append({"model": name, "scheme": scheme, "fold": k,
                     "accuracy": float(np.mean(pred == y[test]))})
    predictions = {key: pred.astype(str) for key, pred in predictions.items()}
    return ColorEvaluation(scores=pd.DataFrame(rows), predictions=predictions, y=y,
                           params=params, n_splits=n_splits)
