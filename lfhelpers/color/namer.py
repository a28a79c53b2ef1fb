"""The saved color-name model: save it, load it, train it when missing, and keep fixtures out.

The ``color`` command and notebook 06 look for the real color-name model at
:data:`DEFAULT_MODEL_PATH`. A model trained on the synthetic fixture (hue rules, not people)
must never be taken for it: :func:`save_color_namer` refuses to write one there, and
:func:`load_color_namer` refuses to use a fixture model when real color data is asked for,
with a message that says how to retrain.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sklearn.base import BaseEstimator

from lfhelpers.color.data import is_synthetic_source, load_color_data
from lfhelpers.color.models import BEST_MODEL, TutorialColorClassifier, fit_color_namer
from lfhelpers.errors import ConfigError, LFError
from lfhelpers.fsutil import atomic_write
from lfhelpers.paths import project_root

log = logging.getLogger(__name__)

#: Where :func:`load_color_namer` keeps the fitted color-name model by default.
DEFAULT_MODEL_PATH = Path("models/color_names.joblib")

_FORMAT = 2
_NAMER_CACHE: dict[str, BaseEstimator] = {}


def is_default_model_path(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is where the real model is looked for by default.

    That is :data:`DEFAULT_MODEL_PATH` under the working folder or under the project folder.
    """
    here = Path(path).expanduser().resolve()
    return here in {(Path.cwd() / DEFAULT_MODEL_PATH).resolve(),
                    (project_root() / DEFAULT_MODEL_PATH).resolve()}


def save_color_namer(model: BaseEstimator, path: str | os.PathLike[str],
                     source: str = "") -> Path:
    """Save a fitted scikit-learn color-name model with joblib (atomic write).

    The color data it was trained on is stored with it, so that :func:`load_color_namer` can
    tell a fixture model from a real one.

    Parameters
    ----------
    model : sklearn estimator
        Fitted; Keras-backed models are not supported (save their ``model_`` with Keras).
    path : path-like
        Destination, e.g. ``models/color_names.joblib``.
    source : str
        The color data it was trained on (``"codingtrain_colors"``, a file, ``"synthetic"``).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ConfigError
        For a Keras-backed model, or a model trained on the synthetic fixture that would be
        saved to :data:`DEFAULT_MODEL_PATH`, where the real model is looked for.
    """
    import joblib

    if isinstance(model, TutorialColorClassifier):
        raise ConfigError("save_color_namer stores scikit-learn models; save the tutorial "
                          "model's network with model.model_.save('file.keras').")
    path = Path(path)
    if is_synthetic_source(source) and is_default_model_path(path):
        raise ConfigError(
            f"Not saving a color-name model trained on the synthetic fixture to {path}: the "
            "`color` command and notebook 06 look for the real model there. Save it to another "
            "file (notebook parameter model_path, or '' not to save), or train it on "
            "color_source='codingtrain_colors'.")
    with atomic_write(path, "wb") as fh:
        joblib.dump({"model": model, "source": str(source), "format": _FORMAT}, fh)
    return path


def read_color_namer(path: str | os.PathLike[str]) -> tuple[BaseEstimator, str]:
    """Load a saved color-name model and the name of the data it was trained on.

    Parameters
    ----------
    path : path-like
        A file written by :func:`save_color_namer`.

    Returns
    -------
    model : sklearn estimator
    source : str
        The color data it was trained on; ``""`` when the file does not say.
    """
    import joblib

    payload: Any = joblib.load(path)
    if isinstance(payload, dict):
        return payload["model"], str(payload.get("source", ""))
    return payload, ""


def load_color_namer(
    path: str | os.PathLike[str] | None = DEFAULT_MODEL_PATH,
    color_source: str | os.PathLike[str] = "codingtrain_colors",
    seed: int = 0,
    save: bool = True,
) -> BaseEstimator:
    """Return the color-name model saved at ``path``, training and saving it when missing.

    A saved model trained on the synthetic fixture is used only when ``color_source`` is the
    fixture too; a model trained on the fixture is never saved to :data:`DEFAULT_MODEL_PATH`.

    Parameters
    ----------
    path : path-like or None
        Saved model (:func:`save_color_namer`). ``None``: always train, never save.
    color_source : str or path-like
        The color data wanted: what to train on when there is no usable saved model (see
        :func:`~lfhelpers.color.data.load_color_data`; ``"synthetic"`` works offline).
    seed : int
    save : bool
        Save a newly trained model to ``path``.

    Returns
    -------
    sklearn estimator

    Raises
    ------
    ConfigError
        When the saved model was trained on the synthetic fixture but real color data is
        wanted; the message says how to retrain.
    LFError
        When no model is saved and the color data cannot be loaded; the message says how to
        provide it.
    """
    if path is not None and Path(path).is_file():
        try:
            model, source = read_color_namer(path)
        except Exception as exc:  # noqa: BLE001 - a stale or foreign file: train again
            log.warning("cannot use the saved color model %s (%s); training a new one",
                        path, exc)
        else:
            if is_synthetic_source(source) and not is_synthetic_source(color_source):
                raise ConfigError(
                    f"{path} holds a color-name model trained on the synthetic fixture, not on "
                    f"real color data ({color_source}). Retrain it: run notebook 04 "
                    "(`python -m lfhelpers run --profile cpu --only 04`), or delete the file "
                    "and the `color` command trains a new one (LF_DATA_MIRROR or the network "
                    "needed). To use the fixture model on purpose, pass --color-source "
                    "synthetic.")
            return model
    try:
        data = load_color_data(color_source, seed=seed, progress=False)
    except LFError as exc:
        raise type(exc)(f"No color-name model at {path} and the color data could not be "
                        f"loaded: {exc} Set LF_DATA_MIRROR, run notebook 04, or pass "
                        "--color-source synthetic for a fixture model.") from exc
    model = fit_color_namer(data, BEST_MODEL, seed=seed)
    log.info("trained the color-name model on %d entries of %s", len(data.frame), data.source)
    if path is not None and save:
        if is_synthetic_source(data.source) and is_default_model_path(path):
            log.warning("the color-name model trained on the synthetic fixture is not saved to "
                        "%s, where the real model is looked for; pass another --model file "
                        "to keep it", path)
        else:
            save_color_namer(model, path, source=data.source)
            log.info("saved the color-name model to %s", path)
    return model


def default_color_namer() -> BaseEstimator:
    """The saved default color-name model, loaded (or trained) once per process."""
    if "default" not in _NAMER_CACHE:
        _NAMER_CACHE["default"] = load_color_namer()
    return _NAMER_CACHE["default"]
