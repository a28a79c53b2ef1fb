"""The color-name models: the tutorial's Keras network and scikit-learn models on CIELAB.

The tutorial's model is reproduced exactly by :class:`TutorialColorClassifier` (Keras:
``Dense(64, relu)`` -> ``Dense(9, softmax)`` on RGB / 255, 841 parameters, Adam lr 0.001,
batch 32, 15 epochs). :func:`make_model` also builds scikit-learn models that see the color in
CIELAB; the better one, ``ensemble_lab``, is a soft vote of an RBF SVC, k-NN and a small MLP.
Every model takes RGB rows in 0-255 and predicts label strings.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import VotingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import SVC

from lfhelpers.color.data import TUTORIAL_LABELS, ColorData
from lfhelpers.color.spaces import rgb_to_lab
from lfhelpers.errors import ConfigError

#: Models known to :func:`make_model`: name -> description.
MODEL_DESCRIPTIONS: dict[str, str] = {
    "tutorial": "tutorial: Keras Dense(64, relu) -> Dense(9, softmax) on RGB",
    "svc_lab": "SVC (RBF kernel) on standardised CIELAB",
    "knn_lab": "k-nearest neighbours (k=30) on standardised CIELAB",
    "ensemble_lab": "soft vote of SVC, k-NN (k=30) and MLP(64) on standardised CIELAB",
}
#: The better model used by default for naming colors.
BEST_MODEL = "ensemble_lab"


@contextlib.contextmanager
def _stderr_muted() -> Iterator[None]:
    """Send what C++ code writes to file descriptor 2 to /dev/null for a while."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (an embedded interpreter): nothing to mute
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_keras() -> ModuleType:
    """Import Keras, keeping TensorFlow's C++ start-up messages out of the output.

    TensorFlow 2.19+ writes its oneDNN notice, CUDA probing and absl's pre-init warning to
    standard error while it is imported, whatever ``TF_CPP_MIN_LOG_LEVEL`` says; in a notebook
    they land in the report. Python errors of the import are still raised.

    Returns
    -------
    module
        :mod:`keras`.
    """
    if "keras" not in sys.modules:
        with _stderr_muted():
            import keras  # noqa: F401 - imported for its side effect: loaded once, quietly
    return sys.modules["keras"]


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and Keras (:func:`keras.utils.set_random_seed`) with one number."""
    import_keras().utils.set_random_seed(int(seed))


def build_tutorial_model(n_classes: int = 9, hidden_units: int = 64,
                         learning_rate: float = 0.001, steps_per_execution: int = 1) -> Any:
    """The tutorial's Keras model, compiled: ``Dense(64, relu)`` -> ``Dense(9, softmax)``.

    With the defaults it has 3*64+64 + 64*9+9 = 841 parameters.

    Parameters
    ----------
    n_classes : int
        Output classes.
    hidden_units : int
        Units of the hidden layer.
    learning_rate : float
        Adam learning rate.
    steps_per_execution : int
        Training batches run by one call of the compiled step (Keras ``compile``). The batches,
        their order and the weights are the same whatever the value; for a model this small
        the per-call overhead is most of a step, so :class:`TutorialColorClassifier` runs one
        epoch per call (about twice as fast on 2 cores).

    Returns
    -------
    keras.Model
        Compiled with categorical cross-entropy and accuracy.
    """
    keras = import_keras()

    model = keras.Sequential([
        keras.Input(shape=(3,), name="rgb"),
        keras.layers.Dense(hidden_units, activation="relu", name="hidden"),
        keras.layers.Dense(n_classes, activation="softmax", name="color_name"),
    ], name="tutorial_color_model")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
                  loss="categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=int(steps_per_execution))
    return model


class TutorialColorClassifier(ClassifierMixin, BaseEstimator):
    """The tutorial's color-name model as a scikit-learn classifier.

    Inputs are RGB in 0-255, divided by 255 as the tutorial did; labels are one-hot encoded in
    :data:`TUTORIAL_LABELS` order, so the model always has 9 outputs (841 parameters).

    Parameters
    ----------
    epochs : int
        Training epochs (tutorial: 15).
    batch_size : int
        Batch size (tutorial: 32; it also reported 64).
    learning_rate : float
        Adam learning rate (tutorial: 0.001).
    hidden_units : int
        Hidden layer width (tutorial: 64).
    seed : int
        Seeds Python, NumPy and Keras (:func:`keras.utils.set_random_seed`) at each ``fit``.
    verbose : int
        Keras ``fit`` verbosity (0 silent, 1 progress bar, 2 one line per epoch).

    Attributes
    ----------
    classes_ : ndarray of str
        Output labels.
    model_ : keras.Model
        The trained network.
    history_ : dict
        Per-epoch loss and accuracy.
    fit_seconds_ : float
        Wall-clock time of the last ``fit``.
    """

    def __init__(self, epochs: int = 15, batch_size: int = 32, learning_rate: float = 0.001,
                 hidden_units: int = 64, seed: int = 0, verbose: int = 0) -> None:
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.hidden_units = hidden_units
        self.seed = seed
        self.verbose = verbose

    def fit(self, X: Any, y: Any) -> TutorialColorClassifier:  # noqa: N803
        """Train on RGB rows ``X`` (0-255) and labels ``y``; returns self."""
        keras = import_keras()

        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y).astype(str)
        known = set(TUTORIAL_LABELS)
        self.classes_ = (np.array(TUTORIAL_LABELS) if set(y) <= known else np.unique(y))
        index = {label: i for i, label in enumerate(self.classes_)}
        targets = keras.utils.to_categorical([index[v] for v in y], len(self.classes_))
        keras.utils.set_random_seed(self.seed)
        # one epoch per call of the compiled step: same batches and weights, half the time
        self.model_ = build_tutorial_model(len(self.classes_), self.hidden_units,
                                           self.learning_rate,
                                           max(1, math.ceil(len(X) / self.batch_size)))
        start = time.perf_counter()
        history = self.model_.fit(X / 255.0, targets, batch_size=self.batch_size,
                                  epochs=self.epochs, shuffle=True, verbose=self.verbose)
        self.fit_seconds_ = time.perf_counter() - start
        self.history_ = {k: [float(v) for v in vals] for k, vals in history.history.items()}
        return self

    def training_summary(self) -> str:
        """One line on the last ``fit``: epochs, time, first and last loss and accuracy.

        Returns
        -------
        str
            e.g. ``"15 epochs in 4.1 s: loss 1.62 -> 0.71, accuracy 0.45 -> 0.77"``.
        """
        loss, acc = self.history_.get("loss", []), self.history_.get("accuracy", [])
        if not loss:
            return "not trained"
        text = (f"{len(loss)} epochs in {self.fit_seconds_:.1f} s: "
                f"loss {loss[0]:.3f} -> {loss[-1]:.3f}")
        if acc:
            text += f", training accuracy {acc[0]:.3f} -> {acc[-1]:.3f}"
        return text

    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        """Class probabilities, columns in :attr:`classes_` order."""
        keras = import_keras()

        X = np.asarray(X, dtype=np.float32).reshape(-1, 3)
        # A direct call: model.predict would trace a new function for every fitted model.
        return keras.ops.convert_to_numpy(self.model_(X / 255.0, training=False))

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        """Most probable label per RGB row."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def count_params(self) -> int:
        """Trainable parameters of the fitted network (841 with the tutorial's settings)."""
        return int(self.model_.count_params())


class _PlattSVC(SVC):
    """``SVC(probability=True)`` (libsvm's Platt scaling and pairwise coupling), fitted
    without the scikit-learn 1.9 deprecation warning about ``probability``."""

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> _PlattSVC:  # noqa: N803
        """Fit the SVC; see :meth:`sklearn.svm.SVC.fit`."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*`probability` parameter",
                                    category=FutureWarning)
            return super().fit(X, y, sample_weight=sample_weight)


def _svc_with_probabilities(seed: int) -> BaseEstimator:
    """An RBF SVC with class probabilities, for soft voting.

    ``SVC(probability=True)`` scored best in the ensemble; where scikit-learn no longer has the
    parameter (1.11+), its suggested replacement is used.
    """
    if "probability" in inspect.signature(SVC).parameters:
        return _PlattSVC(C=1.0, gamma="scale", probability=True, random_state=seed)
    return CalibratedClassifierCV(SVC(C=1.0, gamma="scale"), ensemble=False)


def make_model(name: str, seed: int = 0, epochs: int = 15, batch_size: int = 32,
               verbose: int = 0) -> BaseEstimator:
    """Build one of the color-name models of :data:`MODEL_DESCRIPTIONS`, unfitted.

    Every model takes RGB rows in 0-255 and predicts label strings.

    Parameters
    ----------
    name : str
        ``"tutorial"``, ``"svc_lab"``, ``"knn_lab"`` or ``"ensemble_lab"``.
    seed : int
        Seed (Keras training; the ensemble's SVC probability estimates and MLP).
    epochs, batch_size, verbose : int
        Used by the tutorial model only.

    Returns
    -------
    sklearn estimator
        Unfitted; ``fit`` takes RGB rows (0-255) and label strings.

    Raises
    ------
    ConfigError
        For an unknown name.
    """
    if name == "tutorial":
        return TutorialColorClassifier(epochs=epochs, batch_size=batch_size, seed=seed,
                                       verbose=verbose)
    lab = FunctionTransformer(rgb_to_lab, feature_names_out="one-to-one")
    if name == "svc_lab":
        return Pipeline([("lab", lab), ("scale", StandardScaler()),
                         ("svc", SVC(C=1.0, gamma="scale"))])
    if name == "knn_lab":
        return Pipeline([("lab", lab), ("scale", StandardScaler()),
                         ("knn", KNeighborsClassifier(n_neighbors=30))])
    if name == "ensemble_lab":
        vote = VotingClassifier([
            ("svc", _svc_with_probabilities(seed)),
            ("knn", KNeighborsClassifier(n_neighbors=30)),
            ("mlp", MLPClassifier(hidden_layer_sizes=(64,), max_iter=1000, random_state=seed)),
        ], voting="soft")
        return Pipeline([("lab", lab), ("scale", StandardScaler()), ("vote", vote)])
    raise ConfigError(f"Unknown color model {name!r}; choose from {sorted(MODEL_DESCRIPTIONS)}.")


def count_model_params(model: BaseEstimator) -> int | None:
    """Trainable parameters of a fitted Keras-backed model; ``None`` for other models."""
    return model.count_params() if isinstance(model, TutorialColorClassifier) else None


def fit_quietly(model: BaseEstimator, X: np.ndarray, y: np.ndarray) -> BaseEstimator:  # noqa: N803
    """Fit ``model``; the ensemble's MLP has a fixed iteration budget, so its
    ConvergenceWarning (seen on small or synthetic data) is not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        return model.fit(X, y)


def fit_color_namer(data: ColorData, model: str = BEST_MODEL, seed: int = 0,
                    cache_dir: str | os.PathLike[str] | None = None,
                    **kwargs: Any) -> BaseEstimator:
    """Fit a color-name model on every valid entry.

    Parameters
    ----------
    data : ColorData
    model : str
        Name for :func:`make_model` (default the better model, :data:`BEST_MODEL`).
    seed : int
    cache_dir : path-like, optional
        The fitted model is kept in ``<cache_dir>/color_models``
        (:func:`lfhelpers.store.kept_results`, by the data, the settings and the color code):
        notebook 04 rerun for new item photos does not fit it again.
    **kwargs
        Passed to :func:`make_model` (``epochs``, ``batch_size``).

    Returns
    -------
    sklearn estimator
        Fitted; ``predict`` takes RGB rows (0-255) and returns label strings.
    """
    import lfhelpers.color
    from lfhelpers.store import kept_results

    fit = kept_results(cache_dir, "color_models", lfhelpers.color).cache(_fit_color_namer)
    return fit(data, model, seed, **kwargs)


def _fit_color_namer(data: ColorData, model: str, seed: int, **kwargs: Any) -> BaseEstimator:
    return fit_quietly(make_model(model, seed=seed, **kwargs), data.X, data.y)
