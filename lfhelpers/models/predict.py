"""Use a saved classifier: load it, and the top-k categories of photos (``predict`` command).

``python -m lfhelpers predict --model PATH IMAGE_OR_FOLDER...`` prints one JSON line per photo:
``{"path": ..., "top3": [{"label": ..., "prob": ...}, ...]}``, or ``{"path": ..., "error": ...}``
for a photo that cannot be read. Folders are expanded to the images inside them (recursively,
sorted). Photos are read by :func:`lfhelpers.images.load_rgb`, like in training.

Keras and TensorFlow are imported only when a model is loaded, so ``predict --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lfhelpers.errors import ConfigError, DataError, LFError
from lfhelpers.images import IMAGE_SUFFIXES, load_rgb

LABELS_SUFFIX = ".labels.json"
#: File name endings taken as images when a folder is expanded.


def labels_path(model_path: str | os.PathLike[str]) -> Path:
    """``<folder>/<stem>.labels.json`` next to a ``.keras`` model file."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + LABELS_SUFFIX)


def load_model(path: str | os.PathLike[str]) -> tuple[Any, list[str], dict]:
    """Load a ``.keras`` classifier and its label list.

    Parameters
    ----------
    path : path-like
        Model file written by :meth:`lfhelpers.models.xception.XceptionClassifier.save`.

    Returns
    -------
    model : keras.Model
    labels : list of str
    meta : dict
        The whole labels file.

    Raises
    ------
    ConfigError
        When the model or its labels file is missing or does not match.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Model file {path} not found. Train one with notebook 03 (it saves "
                          "models/<name>.keras) or pass the right --model path.")
    lpath = labels_path(path)
    if not lpath.is_file():
        raise ConfigError(f"Labels file {lpath} not found next to the model; it is written by "
                          "XceptionClassifier.save together with the model.")
    meta = json.loads(lpath.read_text(encoding="utf-8"))
    from lfhelpers.models.backbones import quiet_tensorflow

    quiet_tensorflow()
    import keras

    try:
        model = keras.models.load_model(path, compile=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not a readable Keras model ({str(exc)[:200]}).") from None
    labels = [str(x) for x in meta["labels"]]
    if model.output_shape[-1] != len(labels):
        raise ConfigError(f"{lpath} lists {len(labels)} labels but the model has "
                          f"{model.output_shape[-1]} outputs; save them again together.")
    return model, labels, meta


def expand_inputs(inputs: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Image paths from files and folders: a folder gives its images, recursively, sorted.

    Files named directly are kept whatever their suffix (an unreadable one gets an error entry
    later); inside folders only files with an image suffix (:data:`IMAGE_SUFFIXES`) are taken,
    hidden files and folders skipped.
    """
    out: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = [p for p in path.rglob("*") if p.is_file()
                     and p.suffix.lower() in IMAGE_SUFFIXES
                     and not any(part.startswith(".") for part in p.relative_to(path).parts)]
            out.extend(str(p) for p in sorted(found))
        else:
            out.append(os.fspath(item))
    return out


def predict_pixels(model: Any, files: Sequence[str], batch_size: int = 16) -> np.ndarray:
    """Probabilities of readable image files through a whole saved model, in batches."""
    size = int(model.input_shape[1])
    parts = []
    for start in range(0, len(files), batch_size):
        batch = np.stack([load_rgb(f, size) for f in files[start:start + batch_size]])
        parts.append(np.asarray(model.predict(batch.astype(np.float32), verbose=0)))
    return np.concatenate(parts) if parts else np.zeros((0, int(model.output_shape[-1])))


def predict_files(
    model: Any, labels: Sequence[str], files: Sequence[str | os.PathLike[str]],
    k: int = 3, batch_size: int = 16,
) -> list[dict[str, Any]]:
    """Top-``k`` labels for each image file; a bad file gets an ``error`` entry instead.

    Parameters
    ----------
    model : keras.Model
        A model from :func:`load_model`.
    labels : sequence of str
        Its labels.
    files : sequence of path-like
        Images (folders: see :func:`expand_inputs`).
    k : int
        Labels per image.
    batch_size : int
        Images per prediction batch.

    Returns
    -------
    list of dict
        ``{"path": ..., "top3": [{"label": ..., "prob": ...}, ...]}`` or
        ``{"path": ..., "error": ...}``, in the order of ``files``.
    """
    size = int(model.input_shape[1])
    key = f"top{k}"
    results: list[dict[str, Any]] = []
    for start in range(0, len(files), batch_size):
        chunk = [os.fspath(f) for f in files[start:start + batch_size]]
        images, entries = [], []
        for path in chunk:
            entry: dict[str, Any] = {"path": path}
            try:
                images.append(load_rgb(path, size))
            except DataError as exc:
                entry["error"] = str(exc)
            entries.append(entry)
        if images:
            proba = model.predict(np.stack(images).astype(np.float32), verbose=0)
            it = iter(proba)
            for entry in entries:
                if "error" in entry:
                    continue
                p = next(it)
                order = np.argsort(-p, kind="stable")[:k]
                entry[key] = [{"label": labels[i], "prob": round(float(p[i]), 4)}
                              for i in order]
        results.extend(entries)
    return results


def predictions_frame(entries: Iterable[Mapping[str, Any]]) -> Any:
    """The entries of :func:`predict_files` as a table: file name, then label and probability
    columns (``top1``, ``p1``, ...), or ``error``.

    Returns
    -------
    pandas.DataFrame
        One row per image.
    """
    import pandas as pd

    rows = []
    for entry in entries:
        row: dict[str, Any] = {"file": Path(entry["path"]).name}
        key = next((k for k in entry if k.startswith("top")), None)
        for j, item in enumerate(entry.get(key) or [], start=1):
            row[f"top{j}"], row[f"p{j}"] = item["label"], item["prob"]
        if "error" in entry:
            row["error"] = entry["error"]
        rows.append(row)
    return pd.DataFrame(rows)


def predict_command(args: argparse.Namespace) -> int:
    """``python -m lfhelpers predict --model PATH IMAGE...``: one JSON line per image.

    Returns
    -------
    int
        0 when every image was classified, 1 when some could not be read (or none was
        given), 2 when the model could not be loaded.
    """
    files = expand_inputs(args.images)
    if not files:
        print("error: no images found in " + ", ".join(map(str, args.images)) +
              f" (image files end in {', '.join(IMAGE_SUFFIXES)}).", file=sys.stderr)
        return 1
    try:
        model, labels, _ = load_model(args.model)
    except LFError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for entry in predict_files(model, labels, files, k=max(1, args.top),
                               batch_size=max(1, args.batch_size)):
        failed += "error" in entry
        sys.stdout.write(json.dumps(entry, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    return 1 if failed else 0
