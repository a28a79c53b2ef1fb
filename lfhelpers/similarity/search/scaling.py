"""The scaling step of a gallery: fitted on the gallery's rows, then applied to every query.

A :class:`~lfhelpers.similarity.search.gallery.GalleryIndex` puts one scaling step between the
vectors an extractor makes and its nearest-neighbour index (:data:`SCALINGS`):

* ``"unit"`` (CNN embeddings; the default): rows L2-normalised (float32), then the
  post-processing steps of :class:`~lfhelpers.similarity.search.postprocess.Postprocessor`
  (``center``, ``pcaw``, ``dba``, ``aqe``);
* ``"standardize"`` (hand-made features: haralick texture, colour histograms): every feature
  z-scored by a :class:`sklearn.preprocessing.StandardScaler` fitted on the gallery, so that no
  feature outweighs the others by its units alone; a cosine index then L2-normalises the rows.

:func:`make_scaler` makes the step, :func:`fit_scaler` fits it and returns the gallery as
searched; :func:`save_scaler` and :func:`load_scaler` keep it in the gallery's folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.preprocessing import StandardScaler

from lfhelpers.errors import ConfigError
from lfhelpers.fsutil import atomic_write
from lfhelpers.similarity.search.postprocess import Postprocessor, parse_steps

#: The scaling steps a gallery can have.
SCALINGS = ("unit", "standardize")

CENTER_FILE = "center.npy"
POSTPROCESS_FILE = "postprocess.json"
WHITENING_FILE = "whitening.joblib"
SCALER_FILE = "scaler.joblib"

Scaler = Postprocessor | StandardScaler


def make_scaler(scaling: str = "unit", steps: Sequence[str] | str = ()) -> Scaler:
    """The unfitted scaling step ``scaling`` (one of :data:`SCALINGS`).

    Parameters
    ----------
    scaling : str
    steps : sequence of str or str
        Post-processing steps (``"center+dba+aqe"``) of the ``"unit"`` scaling; the
        ``"standardize"`` scaling takes none.

    Raises
    ------
    ConfigError
        For an unknown scaling, or post-processing steps asked of ``"standardize"``.
    """
    if scaling not in SCALINGS:
        raise ConfigError(f"Unknown scaling {scaling!r}; use one of {SCALINGS}.")
    steps = parse_steps(steps)
    if scaling == "standardize":
        if steps:
            raise ConfigError(f"scaling='standardize' takes no post-processing steps, got "
                              f"{steps}; they are for scaling='unit' (CNN embeddings).")
        return StandardScaler()
    return Postprocessor(steps)


def fit_scaler(scaler: Scaler, vectors: np.ndarray) -> np.ndarray:
    """Fit ``scaler`` on the gallery's rows; returns the gallery as it is searched."""
    if isinstance(scaler, Postprocessor):
        return scaler.fit(vectors).gallery_  # DBA changes the gallery, not the queries
    return scaler.fit(vectors).transform(vectors)


def scaling_of(scaler: Scaler) -> str:
    """The name (in :data:`SCALINGS`) of a scaling step."""
    return "unit" if isinstance(scaler, Postprocessor) else "standardize"


def _write_or_remove(path: Path, value: Any, write: Any) -> None:
    """Write ``value`` to ``path`` with ``write(value, fh)``, or remove an older file there."""
    if value is not None:
        with atomic_write(path, "wb") as fh:
            write(value, fh)
    elif path.exists():  # left by another gallery saved in the same folder
        path.unlink()


def save_scaler(scaler: Scaler, folder: Path) -> None:
    """Write a fitted scaling step into a gallery's folder (``postprocess.json`` and arrays)."""
    unit = isinstance(scaler, Postprocessor)
    _write_or_remove(folder / CENTER_FILE, scaler.mean_ if unit else None,
                     lambda value, fh: np.save(fh, value))
    _write_or_remove(folder / WHITENING_FILE, scaler.whitening_ if unit else None, joblib.dump)
    _write_or_remove(folder / SCALER_FILE, None if unit else scaler, joblib.dump)
    settings = ({"steps": scaler.steps_, "dba_n": scaler.dba_n, "qe_n": scaler.qe_n,
                 "alpha": scaler.alpha} if unit else {"steps": []})
    with atomic_write(folder / POSTPROCESS_FILE) as fh:
        json.dump({"scaling": scaling_of(scaler), **settings}, fh, indent=2)


def load_scaler(folder: str | os.PathLike[str], gallery: Any) -> Scaler:
    """The scaling step :func:`save_scaler` wrote.

    Parameters
    ----------
    folder : path-like
    gallery : NeighbourIndex
        The gallery's index: ``aqe`` expands queries against its vectors.

    Returns
    -------
    Postprocessor or StandardScaler
        Fitted. A folder from before the scaling steps had names holds a ``"unit"`` one
        (``center`` when it has ``center.npy``).
    """
    folder = Path(folder)
    settings = folder / POSTPROCESS_FILE
    mean = np.load(folder / CENTER_FILE).astype(np.float32) if (
        folder / CENTER_FILE).is_file() else None
    kept = (json.loads(settings.read_text(encoding="utf-8")) if settings.is_file()
            else {"steps": ["center"] if mean is not None else []})
    if kept.get("scaling", "unit") == "standardize":
        return joblib.load(folder / SCALER_FILE)
    post = Postprocessor(kept["steps"], dba_n=kept.get("dba_n", 3), qe_n=kept.get("qe_n", 2),
                         alpha=kept.get("alpha", 3.0))
    post.steps_, post.mean_ = parse_steps(kept["steps"]), mean
    post.whitening_ = (joblib.load(folder / WHITENING_FILE)
                       if (folder / WHITENING_FILE).is_file() else None)
    post.gallery_ = gallery.reconstruct() if "aqe" in post.steps_ else np.zeros((0, 0))
    return post
