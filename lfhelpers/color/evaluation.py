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
from sklearn.base import clone
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from tqdm import tqdm

from lfhelpers.color.data import TUTORIAL_LABELS, ColorData
from lfhelpers.color.models import (
    MODEL_DESCRIPTIONS,
    count_model_params,
    fit_quietly,
    make_model,
)
from lfhelpers.errors import ConfigError, DataError
from lfhelpers.store import kept_results

#: Accuracy the tutorial reported for its model (batch 32; 0.7697 with batch 64).
TUTORIAL_REPORTED_ACCURACY = 0.7735


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
        _evaluate_models, ignore=["progress"])
    return run(data, **settings, progress=progress)


def _evaluate_models(data: ColorData, models: list[str], n_splits: int, seed: int, epochs: int,
                     batch_size: int, schemes: list[str], progress: bool) -> ColorEvaluation:
    """:func:`evaluate_models` without the cache."""
    X, y = data.X, data.y
    splits = {s: cv_splits(data, s, n_splits, seed) for s in schemes}
    rows: list[dict[str, Any]] = []
    predictions: dict[tuple[str, str], np.ndarray] = {}
    params: dict[str, int | None] = {}
    bar = tqdm(total=len(models) * len(splits) * n_splits, desc="color models",
               disable=not progress)
    for name in models:
        template = make_model(name, seed=seed, epochs=epochs, batch_size=batch_size)
        for scheme, folds in splits.items():
            pred = np.empty(len(y), dtype=object)
            for k, (train, test) in enumerate(folds):
                model = fit_quietly(clone(template), X[train], y[train])
                pred[test] = model.predict(X[test])
                rows.append({"model": name, "scheme": scheme, "fold": k,
                             "accuracy": float(np.mean(pred[test] == y[test]))})
                params[name] = count_model_params(model)
                bar.update()
            predictions[(name, scheme)] = pred.astype(str)
    bar.close()
    return ColorEvaluation(scores=pd.DataFrame(rows), predictions=predictions, y=y,
                           params=params, n_splits=n_splits)
