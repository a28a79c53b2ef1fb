"""Color names: the crowd-sourced color-name model and the dominant colors of item photos.

Two halves:

**Color-name model.** The Coding Train's crowd-sourced data (people were shown a random RGB
color and picked one of nine names, ``red-ish`` ... ``grey-ish``; data set
``codingtrain_colors``) is read and validated by :func:`load_color_data`. The tutorial's model
is reproduced exactly by :class:`TutorialColorClassifier` (Keras: ``Dense(64, relu)`` ->
``Dense(9, softmax)`` on RGB / 255, 841 parameters, Adam lr 0.001, batch 32, 15 epochs).
:func:`make_model` also builds scikit-learn models that see the color in CIELAB, a
perceptual color space; the better one, ``ensemble_lab``, is a soft vote of an RBF SVC, k-NN
and a small MLP. :func:`evaluate_models` scores them by 5-fold cross-validation twice: with
random folds, and with folds grouped by contributor (``uid``), which is the honest figure for
a person the model has never seen. The crowd labels are noisy (a few contributors disagree with
everyone else most of the time), which caps every model tried near 0.80.

**Dominant color of a photo.** :func:`dominant_colors` separates the item from its background
(transparent pixels, else a background model estimated from the image border: pixels close in
CIELAB to the border's colors *and* connected to the border are background), clusters the
item's pixels in CIELAB with k-means, and names each cluster with :func:`name_colors`: first
**white**, **black** or **grey** from lightness and chroma, then the color-name model for the
rest. White pixels are never dropped: a white item on a white table falls back to the centre of
the photo rather than losing its color.

Command line: ``python -m lfhelpers color IMAGE...`` (see :func:`color_main`).
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import VotingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import SVC
from tqdm import tqdm

from lfhelpers.errors import ConfigError, DataError, LFError
from lfhelpers.fsutil import atomic_write

log = logging.getLogger(__name__)

#: The nine crowd-sourced labels, in the tutorial's order (its one-hot column order).
TUTORIAL_LABELS: tuple[str, ...] = (
    "red-ish", "green-ish", "blue-ish", "orange-ish", "yellow-ish",
    "pink-ish", "purple-ish", "brown-ish", "grey-ish",
)
#: Names decided from lightness and chroma before the hue model is asked.
NEUTRAL_NAMES: tuple[str, ...] = ("white", "black", "grey")
#: Every name :func:`name_colors` can return.
COLOR_NAMES: tuple[str, ...] = TUTORIAL_LABELS + NEUTRAL_NAMES
#: A representative display color per name (legends, decision-region plots).
NAME_SWATCHES: dict[str, str] = {
    "red-ish": "#d62728", "green-ish": "#2ca02c", "blue-ish": "#1f5fd6",
    "orange-ish": "#ff8c1a", "yellow-ish": "#f2d51b", "pink-ish": "#f27ec4",
    "purple-ish": "#8b3fc6", "brown-ish": "#8c5a2b", "grey-ish": "#b4b4b4",
    "white": "#ffffff", "black": "#111111", "grey": "#6e6e6e",
}
#: Accuracy the tutorial reported for its model (batch 32; 0.7697 with batch 64).
TUTORIAL_REPORTED_ACCURACY = 0.7735
#: File inside the ``codingtrain_colors`` folder.
COLOR_DATA_FILE = "colorData.json"
#: Where :func:`load_color_namer` keeps the fitted color-name model by default.
DEFAULT_MODEL_PATH = Path("models/color_names.joblib")
#: Models known to :func:`make_model`: name -> description.
MODEL_DESCRIPTIONS: dict[str, str] = {
    "tutorial": "tutorial: Keras Dense(64, relu) -> Dense(9, softmax) on RGB",
    "svc_lab": "SVC (RBF kernel) on standardised CIELAB",
    "knn_lab": "k-nearest neighbours (k=30) on standardised CIELAB",
    "ensemble_lab": "soft vote of SVC, k-NN (k=30) and MLP(64) on standardised CIELAB",
}
#: The better model used by default for naming colors.
BEST_MODEL = "ensemble_lab"

_FIELDS = ("r", "g", "b", "label", "uid")


# --------------------------------------------------------------------------- color spaces


def rgb_to_lab(rgb: Any) -> np.ndarray:
    """Convert sRGB colors (0-255) to CIELAB (D65): L* in 0-100, a* and b* about -128..127.

    Parameters
    ----------
    rgb : array-like, shape (..., 3)
        sRGB values in 0-255 (integers or floats).

    Returns
    -------
    numpy.ndarray
        Same shape, float32 ``(L*, a*, b*)``.
    """
    arr = np.asarray(rgb, dtype=np.float32)
    if arr.shape[-1] != 3:
        raise DataError(f"expected RGB colors with 3 channels, got shape {arr.shape}")
    flat = np.clip(arr.reshape(-1, 1, 3) / 255.0, 0.0, 1.0).astype(np.float32)
    return cv2.cvtColor(flat, cv2.COLOR_RGB2Lab).reshape(arr.shape)


def lab_to_rgb(lab: Any) -> np.ndarray:
    """Convert CIELAB colors back to sRGB 0-255 (float, clipped).

    Parameters
    ----------
    lab : array-like, shape (..., 3)

    Returns
    -------
    numpy.ndarray
        Same shape, float values in 0-255.
    """
    arr = np.asarray(lab, dtype=np.float32)
    rgb = cv2.cvtColor(arr.reshape(-1, 1, 3), cv2.COLOR_Lab2RGB).reshape(arr.shape)
    return np.clip(rgb * 255.0, 0, 255)


def hls_grid(hues: np.ndarray, lightness: np.ndarray, saturation: float) -> np.ndarray:
    """sRGB colors (0-255) of an HLS grid: rows are lightness values, columns hues.

    Parameters
    ----------
    hues : ndarray
        Hue angles in degrees (0-360).
    lightness : ndarray
        HLS lightness in 0-1.
    saturation : float
        HLS saturation in 0-1.

    Returns
    -------
    numpy.ndarray
        Shape ``(len(lightness), len(hues), 3)``, float 0-255.
    """
    hh, ll = np.meshgrid(np.asarray(hues, np.float32), np.asarray(lightness, np.float32))
    hls = np.stack([hh, ll, np.full_like(hh, saturation)], axis=-1).astype(np.float32)
    return cv2.cvtColor(hls, cv2.COLOR_HLS2RGB) * 255.0


# --------------------------------------------------------------------------- color data


@dataclass
class ColorData:
    """Validated color-name entries.

    Attributes
    ----------
    frame : pandas.DataFrame
        One row per valid entry: ``r``, ``g``, ``b`` (int 0-255), ``label`` (one of
        :data:`TUTORIAL_LABELS`), ``uid`` (contributor id).
    n_entries : int
        Entries in the source, valid or not.
    problems : dict
        Reason -> number of entries skipped for it.
    source : str
        Where the entries came from.
    """

    frame: pd.DataFrame
    n_entries: int
    problems: dict[str, int] = field(default_factory=dict)
    source: str = ""

    @property
    def X(self) -> np.ndarray:  # noqa: N802 - the usual name for a feature matrix
        """RGB values, shape (n, 3), float32 in 0-255."""
        return self.frame[["r", "g", "b"]].to_numpy(np.float32)

    @property
    def y(self) -> np.ndarray:
        """Labels, shape (n,), str."""
        return self.frame["label"].to_numpy(str)

    @property
    def groups(self) -> np.ndarray:
        """Contributor ids, shape (n,), str."""
        return self.frame["uid"].to_numpy(str)

    @property
    def n_bad(self) -> int:
        """Number of entries skipped."""
        return int(sum(self.problems.values()))

    def summary(self) -> pd.DataFrame:
        """One-column table: entries, valid, skipped (per reason), contributors, labels."""
        rows: dict[str, int] = {
            "entries in the source": self.n_entries,
            "valid entries": len(self.frame),
            "skipped entries": self.n_bad,
        }
        for reason, count in sorted(self.problems.items()):
            rows[f"  skipped: {reason}"] = count
        rows["contributors (uid)"] = int(self.frame["uid"].nunique())
        rows["labels"] = int(self.frame["label"].nunique())
        return pd.DataFrame({"value": rows})

    def label_counts(self) -> pd.Series:
        """Entries per label, in the tutorial's label order."""
        counts = self.frame["label"].value_counts()
        return counts.reindex([lab for lab in TUTORIAL_LABELS if lab in counts.index])


def _as_channel(value: Any) -> int | None:
    """Return ``value`` as an int when it is an integer number (not bool), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return int(value)
    return None


def validate_color_entries(entries: Any, source: str = "") -> ColorData:
    """Check every color entry; keep the valid ones and count the others by reason.

    An entry is valid when it is an object with integer ``r``, ``g``, ``b`` in 0-255, a
    ``label`` among :data:`TUTORIAL_LABELS` (case and surrounding spaces ignored) and a
    non-empty ``uid``. Invalid entries are skipped, never fatal; a warning logs the counts.

    Parameters
    ----------
    entries : list or dict
        The list of entries, or the file's object ``{"entries": [...]}``.
    source : str
        Where they came from (for messages).

    Returns
    -------
    ColorData

    Raises
    ------
    DataError
        When ``entries`` is not a list (or an object holding one), or no entry is valid.
    """
    if isinstance(entries, Mapping):
        if "entries" not in entries:
            raise DataError(f"{source or 'color data'}: expected an object with an 'entries' "
                            f"list, found keys {sorted(entries)[:5]}.")
        entries = entries["entries"]
    if not isinstance(entries, list):
        raise DataError(f"{source or 'color data'}: 'entries' must be a list of "
                        f"{{r, g, b, label, uid}} objects, got {type(entries).__name__}.")
    rows: list[tuple[int, int, int, str, str]] = []
    problems: Counter[str] = Counter()
    for entry in entries:
        if not isinstance(entry, Mapping):
            problems["not an object"] += 1
            continue
        missing = [f for f in _FIELDS if f not in entry or entry[f] is None]
        if missing:
            problems[f"missing {missing[0]}"] += 1
            continue
        channels = [_as_channel(entry[c]) for c in "rgb"]
        if any(v is None for v in channels):
            problems["r/g/b not an integer"] += 1
            continue
        if any(not 0 <= v <= 255 for v in channels):
            problems["r/g/b out of range 0-255"] += 1
            continue
        label = str(entry["label"]).strip().lower()
        if label not in TUTORIAL_LABELS:
            problems["unknown label"] += 1
            continue
        uid = str(entry["uid"]).strip()
        if not uid:
            problems["empty uid"] += 1
            continue
        rows.append((*channels, label, uid))
    if problems:
        log.warning("%s: skipped %d of %d color entries (%s)", source or "color data",
                    sum(problems.values()), len(entries),
                    ", ".join(f"{k}: {v}" for k, v in sorted(problems.items())))
    if not rows:
        raise DataError(f"{source or 'color data'} holds no valid color entry "
                        f"({len(entries)} entries; problems: {dict(problems) or 'none'}).")
    frame = pd.DataFrame(rows, columns=list(_FIELDS))
    frame[["r", "g", "b"]] = frame[["r", "g", "b"]].astype(np.int16)
    return ColorData(frame=frame, n_entries=len(entries), problems=dict(problems),
                     source=source)


def read_color_file(path: str | os.PathLike[str]) -> ColorData:
    """Read and validate a color-data JSON file (``{"entries": [...]}`` or a list).

    Parameters
    ----------
    path : path-like
        The JSON file (``colorData.json``).

    Returns
    -------
    ColorData

    Raises
    ------
    DataError
        When the file is missing or not JSON.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"No color data at {path}.") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not a JSON color-data file ({exc}); fetch it again with "
                        "`python -m lfhelpers fetch codingtrain_colors`.") from exc
    return validate_color_entries(raw, source=str(path))


def make_synthetic_color_entries(
    n_entries: int = 1500, n_users: int = 40, noise: float = 0.08, n_bad: int = 6, seed: int = 0
) -> list[dict[str, Any]]:
    """Fixture color-name entries, generated by a fixed hue rule (not real crowd data).

    For tests and for the ``smoke`` profile on a machine with neither the mirror nor the
    network. Random RGB colors are named from their HSV hue, saturation and value (brown for
    dark orange/yellow, grey-ish for unsaturated), a fraction ``noise`` of labels is replaced by
    a random one, and ``n_bad`` malformed entries are appended so that validation has
    something to report.

    Parameters
    ----------
    n_entries : int
        Valid entries.
    n_users : int
        Fake contributor ids, assigned at random.
    noise : float
        Share of labels replaced at random.
    n_bad : int
        Malformed entries appended (out of range, unknown label, missing field, ...).
    seed : int
        Seed.

    Returns
    -------
    list of dict
        ``{r, g, b, label, uid}`` entries.
    """
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(n_entries, 3))
    hsv = cv2.cvtColor((rgb.reshape(-1, 1, 3) / 255.0).astype(np.float32),
                       cv2.COLOR_RGB2HSV).reshape(-1, 3)
    hue, sat, val = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    edges = [(15, "red-ish"), (40, "orange-ish"), (70, "yellow-ish"), (165, "green-ish"),
             (255, "blue-ish"), (290, "purple-ish"), (340, "pink-ish"), (361, "red-ish")]
    labels = np.empty(n_entries, dtype=object)
    for i, h in enumerate(hue):
        labels[i] = next(name for edge, name in edges if h < edge)
    brown = (hue >= 10) & (hue < 60) & (val < 0.62)
    labels[brown] = "brown-ish"
    labels[(sat < 0.18) | (val < 0.12)] = "grey-ish"
    flip = rng.random(n_entries) < noise
    labels[flip] = rng.choice(TUTORIAL_LABELS, size=int(flip.sum()))
    users = [f"synthetic-user-{k:02d}" for k in range(n_users)]
    uid = rng.choice(users, size=n_entries)
    entries: list[dict[str, Any]] = [
        {"r": int(r), "g": int(g), "b": int(b), "label": str(lab), "uid": str(u)}
        for (r, g, b), lab, u in zip(rgb, labels, uid, strict=True)
    ]
    bad: list[Any] = [
        {"r": 300, "g": 10, "b": 10, "label": "red-ish", "uid": "synthetic-bad"},
        {"r": 10, "g": 10, "b": 10, "label": "sky-ish", "uid": "synthetic-bad"},
        {"r": 10, "g": 10, "label": "grey-ish", "uid": "synthetic-bad"},
        {"r": "12", "g": 10, "b": 10, "label": "grey-ish", "uid": "synthetic-bad"},
        {"r": 10, "g": 10, "b": 10, "label": "grey-ish", "uid": ""},
        "not an entry",
    ]
    return entries + [bad[i % len(bad)] for i in range(n_bad)]


def load_color_data(
    source: str | os.PathLike[str] = "codingtrain_colors",
    dest: str | os.PathLike[str] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> ColorData:
    """Load and validate color-name data.

    Parameters
    ----------
    source : str or path-like
        ``"codingtrain_colors"`` (fetched with :func:`lfhelpers.sources.fetch`, which honours
        ``LF_DATA_MIRROR``), ``"synthetic"`` (the fixture of
        :func:`make_synthetic_color_entries`), a JSON file, or a folder holding
        ``colorData.json``.
    dest : path-like, optional
        Where :func:`~lfhelpers.sources.fetch` puts the data set (its default:
        ``data/raw/<name>``).
    seed : int
        Seed of the synthetic fixture.
    progress : bool
        Progress bars while fetching.

    Returns
    -------
    ColorData

    Raises
    ------
    DataError, DownloadError
        When the data cannot be found or fetched; the message says what to do.
    """
    if str(source) == "synthetic":
        return validate_color_entries(make_synthetic_color_entries(seed=seed),
                                      source="synthetic fixture")
    path = Path(source)
    if path.is_file():
        return read_color_file(path)
    from lfhelpers.data.sources import fetch

    folder = fetch(source, dest=dest, progress=progress)
    file = folder / COLOR_DATA_FILE
    if not file.is_file():
        raise DataError(f"{folder} has no {COLOR_DATA_FILE}; color data must be the "
                        "codingtrain_colors data set or a folder/file of the same format.")
    data = read_color_file(file)
    data.source = str(source)
    return data


# --------------------------------------------------------------------------- models


def build_tutorial_model(n_classes: int = 9, hidden_units: int = 64,
                         learning_rate: float = 0.001) -> Any:
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

    Returns
    -------
    keras.Model
        Compiled with categorical cross-entropy and accuracy.
    """
    import keras

    model = keras.Sequential([
        keras.Input(shape=(3,), name="rgb"),
        keras.layers.Dense(hidden_units, activation="relu", name="hidden"),
        keras.layers.Dense(n_classes, activation="softmax", name="color_name"),
    ], name="tutorial_color_model")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
                  loss="categorical_crossentropy", metrics=["accuracy"])
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
        import keras

        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y).astype(str)
        known = set(TUTORIAL_LABELS)
        self.classes_ = (np.array(TUTORIAL_LABELS) if set(y) <= known else np.unique(y))
        index = {label: i for i, label in enumerate(self.classes_)}
        targets = keras.utils.to_categorical([index[v] for v in y], len(self.classes_))
        keras.utils.set_random_seed(self.seed)
        self.model_ = build_tutorial_model(len(self.classes_), self.hidden_units,
                                           self.learning_rate)
        history = self.model_.fit(X / 255.0, targets, batch_size=self.batch_size,
                                  epochs=self.epochs, shuffle=True, verbose=self.verbose)
        self.history_ = {k: [float(v) for v in vals] for k, vals in history.history.items()}
        return self

    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        """Class probabilities, columns in :attr:`classes_` order."""
        import keras

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
) -> ColorEvaluation:
    """Cross-validate color-name models with random folds and with folds grouped by contributor.

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

    Returns
    -------
    ColorEvaluation
    """
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
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
                model = _fit_quietly(clone(template), X[train], y[train])
                pred[test] = model.predict(X[test])
                rows.append({"model": name, "scheme": scheme, "fold": k,
                             "accuracy": float(np.mean(pred[test] == y[test]))})
                params[name] = count_model_params(model)
                bar.update()
            predictions[(name, scheme)] = pred.astype(str)
    bar.close()
    return ColorEvaluation(scores=pd.DataFrame(rows), predictions=predictions, y=y,
                           params=params, n_splits=n_splits)


def _fit_quietly(model: BaseEstimator, X: np.ndarray, y: np.ndarray) -> BaseEstimator:  # noqa: N803
    """Fit ``model``; the ensemble's MLP has a fixed iteration budget, so its
    ConvergenceWarning (seen on small or synthetic data) is not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        return model.fit(X, y)


def fit_color_namer(data: ColorData, model: str = BEST_MODEL, seed: int = 0,
                    **kwargs: Any) -> BaseEstimator:
    """Fit a color-name model on every valid entry.

    Parameters
    ----------
    data : ColorData
    model : str
        Name for :func:`make_model` (default the better model, :data:`BEST_MODEL`).
    seed : int
    **kwargs
        Passed to :func:`make_model` (``epochs``, ``batch_size``).

    Returns
    -------
    sklearn estimator
        Fitted; ``predict`` takes RGB rows (0-255) and returns label strings.
    """
    return _fit_quietly(make_model(model, seed=seed, **kwargs), data.X, data.y)


def save_color_namer(model: BaseEstimator, path: str | os.PathLike[str],
                     source: str = "") -> Path:
    """Save a fitted scikit-learn color-name model with joblib (atomic write).

    Parameters
    ----------
    model : sklearn estimator
        Fitted; Keras-backed models are not supported (save their ``model_`` with Keras).
    path : path-like
        Destination, e.g. ``models/color_names.joblib``.
    source : str
        The color data it was trained on, stored alongside.

    Returns
    -------
    pathlib.Path
    """
    import joblib

    if isinstance(model, TutorialColorClassifier):
        raise ConfigError("save_color_namer stores scikit-learn models; save the tutorial "
                          "model's network with model.model_.save('file.keras').")
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        joblib.dump({"model": model, "source": str(source), "format": 1}, fh)
    return path


def load_color_namer(
    path: str | os.PathLike[str] | None = DEFAULT_MODEL_PATH,
    color_source: str | os.PathLike[str] = "codingtrain_colors",
    seed: int = 0,
    save: bool = True,
) -> BaseEstimator:
    """Return the color-name model saved at ``path``, training and saving it when missing.

    Parameters
    ----------
    path : path-like or None
        Saved model (:func:`save_color_namer`). ``None``: always train, never save.
    color_source : str or path-like
        Color data to train on when there is no usable saved model
        (see :func:`load_color_data`; ``"synthetic"`` works offline).
    seed : int
    save : bool
        Save a newly trained model to ``path``.

    Returns
    -------
    sklearn estimator

    Raises
    ------
    LFError
        When no model is saved and the color data cannot be loaded; the message says how to
        provide it.
    """
    import joblib

    if path is not None and Path(path).is_file():
        try:
            payload = joblib.load(path)
            return payload["model"] if isinstance(payload, dict) else payload
        except Exception as exc:  # noqa: BLE001 - a stale or foreign file: train again
            log.warning("cannot use the saved color model %s (%s); training a new one",
                        path, exc)
    try:
        data = load_color_data(color_source, seed=seed, progress=False)
    except LFError as exc:
        raise type(exc)(f"No color-name model at {path} and the color data could not be "
                        f"loaded: {exc} Set LF_DATA_MIRROR, run notebook 04, or pass "
                        "--color-source synthetic for a fixture model.") from exc
    model = fit_color_namer(data, BEST_MODEL, seed=seed)
    log.info("trained the color-name model on %d entries of %s", len(data.frame), data.source)
    if path is not None and save:
        save_color_namer(model, path, source=data.source)
        log.info("saved the color-name model to %s", path)
    return model


# --------------------------------------------------------------------------- naming


def neutral_names(lab: np.ndarray, white_l: float = 85.0, black_l: float = 30.0,
                  neutral_chroma: float = 12.0, dark_l: float = 12.0) -> np.ndarray:
    """White, black or grey from lightness and chroma; ``""`` where the color is chromatic.

    A color is neutral when its chroma ``C* = hypot(a*, b*)`` is below ``neutral_chroma``,
    or when it is almost black (``L* < dark_l``). Neutral colors are named by lightness:
    ``L* >= white_l`` white, ``L* < black_l`` black, grey between.

    Parameters
    ----------
    lab : ndarray, shape (n, 3)
        CIELAB colors.
    white_l, black_l, neutral_chroma, dark_l : float
        Thresholds (L* in 0-100, chroma in CIELAB units).

    Returns
    -------
    numpy.ndarray of str
        ``"white"``, ``"black"``, ``"grey"`` or ``""``.
    """
    lab = np.asarray(lab, dtype=np.float32).reshape(-1, 3)
    light = lab[:, 0]
    chroma = np.hypot(lab[:, 1], lab[:, 2])
    neutral = (chroma < neutral_chroma) | (light < dark_l)
    names = np.where(light >= white_l, "white", np.where(light < black_l, "black", "grey"))
    return np.where(neutral, names, "").astype("<U5")


def name_colors(rgb: Any, hue_model: BaseEstimator | None, **thresholds: float) -> list[str]:
    """Name colors: white/black/grey by lightness and chroma first, else the color model.

    Parameters
    ----------
    rgb : array-like, shape (n, 3) or (3,)
        sRGB colors in 0-255.
    hue_model : sklearn estimator or None
        Fitted color-name model (RGB rows -> one of :data:`TUTORIAL_LABELS`). ``None`` only
        when every color is neutral (else :class:`ConfigError`).
    **thresholds : float
        Passed to :func:`neutral_names`.

    Returns
    -------
    list of str
        One name per color, from :data:`COLOR_NAMES`.
    """
    rgb = np.asarray(rgb, dtype=np.float32).reshape(-1, 3)
    names = neutral_names(rgb_to_lab(rgb), **thresholds).astype(object)
    chromatic = names == ""
    if chromatic.any():
        if hue_model is None:
            raise ConfigError("A chromatic color needs a color-name model: pass hue_model "
                              "(see load_color_namer).")
        names[chromatic] = np.asarray(hue_model.predict(rgb[chromatic])).astype(str)
    return [str(n) for n in names]


# --------------------------------------------------------------------------- photos


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
    item_share : float
        Fraction of the (opaque) photo taken as the item.
    method : str
        How the item was separated: ``"alpha"`` (transparency), ``"border"`` (background
        model from the border), ``"centre"`` (fallback: item as big as the background or of
        the same color), ``"all"`` (tiny image or ``method="none"``).
    image : ndarray
        The analysed (downscaled) RGB image.
    mask : ndarray of bool
        Item pixels of ``image``.
    """

    colors: list[ColorShare]
    item_share: float
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


def load_rgba(image: Any, max_side: int | None = 128) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a photo as RGB, with its alpha channel when it has transparency.

    Handles EXIF orientation, greyscale (``L``, ``LA``, ``1``), 16-bit and 32-bit greyscale,
    palette images with transparency, ``RGBA``, ``CMYK``; shrinks to ``max_side`` pixels.

    Parameters
    ----------
    image : path-like, PIL.Image.Image or ndarray
        A file, an image, or an array (H, W), (H, W, 3) or (H, W, 4) of uint8.
    max_side : int or None
        Longest side after shrinking (``None``: keep the size).

    Returns
    -------
    rgb : ndarray, (H, W, 3) uint8
    alpha : ndarray (H, W) uint8, or None
        ``None`` when the image has no transparency.

    Raises
    ------
    DataError
        When the image cannot be read.
    """
    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype != np.uint8:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=-1)
        if arr.ndim != 3 or arr.shape[-1] not in (3, 4) or min(arr.shape[:2]) < 1:
            raise DataError(f"expected an image array (H, W[, 3|4]), got shape {image.shape}")
        pil = Image.fromarray(arr, "RGBA" if arr.shape[-1] == 4 else "RGB")
    elif isinstance(image, Image.Image):
        pil = image
    else:
        try:
            with Image.open(image) as opened:
                opened.load()
                pil = ImageOps.exif_transpose(opened) or opened.copy()
        except FileNotFoundError as exc:
            raise DataError(f"cannot read {image}: no such file") from exc
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise DataError(f"cannot read {image}: not a readable image ({exc})") from exc
    pil = _to_rgb_or_rgba(pil)
    if max_side and max(pil.size) > max_side:
        pil = pil.copy()
        pil.thumbnail((max_side, max_side), Image.Resampling.BOX)
    arr = np.asarray(pil)
    if arr.shape[-1] == 4:
        alpha = arr[..., 3]
        return np.ascontiguousarray(arr[..., :3]), (alpha if (alpha < 255).any() else None)
    return np.ascontiguousarray(arr), None


def _to_rgb_or_rgba(pil: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB, or RGBA when it carries transparency."""
    if pil.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(pil, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        pil = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), "L")
    has_alpha = pil.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        pil.mode in ("P", "L", "RGB") and "transparency" in pil.info)
    return pil.convert("RGBA" if has_alpha else "RGB")


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
        ``"alpha"``, ``"border"``, ``"centre"`` or ``"all"``.
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
    return centre, "centre"


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
    image : path-like, PIL.Image.Image or ndarray
        The photo.
    hue_model : sklearn estimator, optional
        Color-name model for chromatic colors (default :func:`load_color_namer`).
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
    rgb, alpha = load_rgba(image, max_side=max_side)
    mask, how = item_mask(rgb, alpha, method=method)
    pixels = rgb[mask].astype(np.float32)
    lab = rgb_to_lab(pixels)
    distinct = len(np.unique(rgb[mask], axis=0))
    k = max(1, min(n_colors, distinct))
    if k == 1:
        labels = np.zeros(len(lab), int)
    else:
        labels, _ = kmeans(lab, k, seed=seed)
    centres = np.array([pixels[labels == c].mean(0) for c in range(k)])
    shares = np.bincount(labels, minlength=k) / len(labels)
    if hue_model is None and not all(neutral_names(rgb_to_lab(centres)) != ""):
        hue_model = _default_namer()
    names = name_colors(centres, hue_model)
    merged: dict[str, list[float]] = {}
    for name, share, centre in zip(names, shares, centres, strict=True):
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
    return Palette(colors=kept, item_share=float(mask.mean()), method=how, image=rgb,
                   mask=mask)


_NAMER_CACHE: dict[str, BaseEstimator] = {}


def _default_namer() -> BaseEstimator:
    """The saved default color-name model, loaded (or trained) once per process."""
    if "default" not in _NAMER_CACHE:
        _NAMER_CACHE["default"] = load_color_namer()
    return _NAMER_CACHE["default"]


def extract_palettes(
    files: Sequence[str | os.PathLike[str]],
    hue_model: BaseEstimator | None,
    n_colors: int = 3,
    seed: int = 0,
    progress: bool = True,
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
    **kwargs
        Passed to :func:`dominant_colors`.

    Returns
    -------
    list of Palette or None
    """
    out: list[Palette | None] = []
    for file in tqdm(files, desc="palettes", disable=not progress):
        try:
            out.append(dominant_colors(file, hue_model, n_colors=n_colors, seed=seed, **kwargs))
        except DataError as exc:
            log.warning("skipped %s: %s", file, exc)
            out.append(None)
    return out


def palette_table(labels: Sequence[str], files: Sequence[str | os.PathLike[str]],
                  palettes: Sequence[Palette | None]) -> pd.DataFrame:
    """One row per photo: class, file name, main color, its share, all colors, method.

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
             "item share": round(p.item_share, 2), "separation": p.method}
            for lab, f, p in zip(labels, files, palettes, strict=True) if p is not None]
    return pd.DataFrame(rows)


def make_known_color_photos(size: int = 96, seed: int = 0) -> list[tuple[str, Image.Image, str]]:
    """Fixture photos whose main color is known by construction (drawn, not real photos).

    A shaded background with noise (a table), an item drawn on it with its own noise and a soft
    shadow, plus transparent PNGs and a greyscale photo. Used by the tests and notebook 04 as
    a sanity check of :func:`dominant_colors`.

    Parameters
    ----------
    size : int
        Side of each square image.
    seed : int
        Noise seed.

    Returns
    -------
    list of (description, PIL image, expected main color name)
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size

    def table(color: Sequence[float], grain: float = 0.0) -> np.ndarray:
        base = np.asarray(color, float) * (0.92 + 0.12 * yy)[..., None]  # light falls off
        if grain:
            base *= (1 + grain * np.sin(xx * 40 + 3 * np.sin(yy * 9)))[..., None]
        return base + rng.normal(0, 4, (size, size, 3))

    def place(bg: np.ndarray, color: Sequence[float], box: tuple[float, float, float, float],
              round_shape: bool = False) -> np.ndarray:
        y0, x0, y1, x1 = (int(v * size) for v in box)
        inside = np.zeros((size, size), bool)
        inside[y0:y1, x0:x1] = True
        if round_shape:
            cy, cx, r = (y0 + y1) / 2 / size, (x0 + x1) / 2 / size, (y1 - y0) / 2 / size
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        shadow = np.roll(np.roll(inside, 3, 0), 3, 1) & ~inside
        img = bg.copy()
        img[shadow] *= 0.8
        item = np.asarray(color, float) * (1.0 - 0.08 * xx)[..., None]
        img[inside] = item[inside] + rng.normal(0, 3, (int(inside.sum()), 3))
        return img

    def rgb(arr: np.ndarray) -> Image.Image:
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")

    photos: list[tuple[str, Image.Image, str]] = []
    phone = place(table((128, 128, 128)), (246, 246, 244), (0.15, 0.3, 0.85, 0.7))
    phone[int(0.2 * size):int(0.26 * size), int(0.45 * size):int(0.55 * size)] = 20  # camera
    photos.append(("white phone on a grey table", rgb(phone), "white"))
    photos.append(("black card on a white table",
                   rgb(place(table((238, 236, 232)), (22, 22, 26), (0.3, 0.15, 0.7, 0.85))),
                   "black"))
    photos.append(("black card on a wooden table",
                   rgb(place(table((155, 105, 60), grain=0.12), (24, 24, 28),
                             (0.3, 0.15, 0.7, 0.85))), "black"))
    photos.append(("red mug on a grey table",
                   rgb(place(table((150, 150, 150)), (205, 30, 35), (0.2, 0.25, 0.8, 0.75),
                             round_shape=True)), "red-ish"))
    photos.append(("blue umbrella on a white table",
                   rgb(place(table((240, 240, 240)), (30, 70, 190), (0.15, 0.15, 0.85, 0.85),
                             round_shape=True)), "blue-ish"))
    photos.append(("green bottle on a beige table",
                   rgb(place(table((225, 215, 195)), (40, 150, 60), (0.1, 0.35, 0.9, 0.65))),
                   "green-ish"))
    photos.append(("white earphones on a white table",
                   rgb(place(table((250, 250, 250)), (240, 240, 238), (0.3, 0.3, 0.7, 0.7),
                             round_shape=True)), "white"))
    for name, color, expected in (("blue", (35, 80, 200), "blue-ish"),
                                   ("white", (250, 250, 250), "white")):
        rgba = np.zeros((size, size, 4), np.uint8)
        rgba[..., 1] = 200  # color under the transparent pixels must not count
        lo, hi = size // 4, size - size // 4
        rgba[lo:hi, lo:hi, :3] = color
        rgba[lo:hi, lo:hi, 3] = 255
        photos.append((f"{name} item, transparent PNG", Image.fromarray(rgba, "RGBA"), expected))
    grey = place(table((200, 200, 200)), (25, 25, 25), (0.25, 0.25, 0.75, 0.75))
    photos.append(("black item, greyscale photo", rgb(grey).convert("L"), "black"))
    photos.append(("tiny 4x4 red image", Image.new("RGB", (4, 4), (210, 30, 30)), "red-ish"))
    return photos


def known_color_check(hue_model: BaseEstimator | None, seed: int = 0,
                      **kwargs: Any) -> pd.DataFrame:
    """Run :func:`dominant_colors` on :func:`make_known_color_photos`.

    Parameters
    ----------
    hue_model : sklearn estimator or None
    seed : int
    **kwargs
        Passed to :func:`dominant_colors`.

    Returns
    -------
    pandas.DataFrame
        Columns photo, expected, main color, colors, correct.
    """
    rows = []
    for description, image, expected in make_known_color_photos(seed=seed):
        pal = dominant_colors(image, hue_model, seed=seed, **kwargs)
        rows.append({"photo": description, "expected": expected, "main color": pal.main.name,
                     "colors": pal.describe(), "correct": pal.main.name == expected})
    return pd.DataFrame(rows)


def target_check(evaluation: ColorEvaluation, best_model: str) -> pd.DataFrame:
    """The issue's accuracy targets next to the measured figures.

    Parameters
    ----------
    evaluation : ColorEvaluation
    best_model : str
        Name of the better model.

    Returns
    -------
    pandas.DataFrame
        Columns metric, value, target, met.
    """
    tut, best = evaluation.accuracy("tutorial"), evaluation.accuracy(best_model)
    rows = [
        ("acc_tutorial_model", tut, "0.75-0.79", 0.75 <= tut <= 0.79),
        ("acc_best_model", best, ">= 0.80", best >= 0.80),
        ("acc_by_user_tutorial_model", evaluation.accuracy("tutorial", "by_user"), "reported",
         None),
        ("acc_by_user_best_model", evaluation.accuracy(best_model, "by_user"), "reported", None),
    ]
    return pd.DataFrame(rows, columns=["metric", "value", "target", "met"])


# --------------------------------------------------------------------------- plots


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
    """Confusion matrix as a heat-map of row shares, annotated with counts.

    Parameters
    ----------
    confusion : pandas.DataFrame
        From :meth:`ColorEvaluation.confusion` (rows true, columns predicted).
    title : str
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    values = confusion.to_numpy()
    rates = values / np.maximum(values.sum(axis=1, keepdims=True), 1)
    n = len(confusion)
    if ax is None:
        _, ax = plt.subplots(figsize=(0.75 * n + 3, 0.65 * n + 2))
    img = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.figure.colorbar(img, ax=ax, label="share of the true label", fraction=0.046)
    for (i, j), count in np.ndenumerate(values):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), confusion.columns, rotation=45, ha="right")
    ax.set_yticks(range(n), confusion.index)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(title)
    return ax


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
    rows: list[tuple[str, Callable[[np.ndarray], list[str]] | None]] = [("color", None)]
    for title, model in models.items():
        rows.append((title, lambda X, m=model: list(np.asarray(m.predict(X)).astype(str))))
    if neutral_model is not None:
        rows.append((f"{neutral_model} + white/black/grey rule",
                     lambda X, m=models[neutral_model]: name_colors(X, m)))
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
        for i, (title, predict) in enumerate(rows):
            ax = axes[i, j]
            if predict is None:
                ax.imshow(grid.astype(np.uint8), origin="lower", aspect="auto", extent=extent)
            else:
                pred = predict(flat)
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
        ax_item.set_title(f"item ({pal.method}, {pal.item_share:.0%})", fontsize=7)
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


# --------------------------------------------------------------------------- command line


def color_command(args: argparse.Namespace) -> int:
    """``python -m lfhelpers color IMAGE...``: print each photo's main colors.

    One line per image: the path, a tab, then its colors, main color first, as
    ``name share%`` separated by commas (``--json``: one JSON object per line). An image that
    cannot be read gives ``PATH<tab>error: reason`` and the others go on; the exit status is 1
    when any image failed.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line (:mod:`lfhelpers.cli`).

    Returns
    -------
    int
        Exit status.
    """
    if args.n_colors < 1:
        raise ConfigError("--n-colors must be at least 1")
    try:
        namer = load_color_namer(args.model or None, color_source=args.color_source,
                                 seed=args.seed)
    except LFError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for image in args.images:
        try:
            pal = dominant_colors(image, namer, n_colors=args.n_colors, method=args.method,
                                  seed=args.seed)
        except LFError as exc:
            failed += 1
            line = (json.dumps({"image": image, "error": str(exc)}, ensure_ascii=False)
                    if args.json else f"{image}\terror: {exc}")
            print(line, flush=True)
            continue
        if args.json:
            print(json.dumps({"image": image, "colors": [
                {"name": c.name, "share": round(c.share, 4), "rgb": list(c.rgb), "hex": c.hex}
                for c in pal.colors]}, ensure_ascii=False), flush=True)
        else:
            print(f"{image}\t{pal.describe()}", flush=True)
    return 1 if failed else 0

