"""The extractor registry: which extractors exist, which one searches, and their vectors.

:func:`feature_sets` is the one place that turns an extractor name (a Keras backbone,
``finetuned``, ``haralick``) into vectors of photos; adding a backbone is one entry there or in
:data:`lfhelpers.models.backbones.BACKBONES`.

A fine-tuned classifier (notebook 03) is a good extractor only for the categories it was
trained on: used on another data set (a classifier of USB sticks and umbrellas on photos of
pets) its vectors and its "top-3 categories" are wrong in ways nothing downstream notices.
:func:`classifier_fits` compares the classifier's labels (``<stem>.labels.json`` beside the
``.keras`` file) with the data set's, and :func:`choose_extractor` drops the classifier when
they differ and says in one sentence which extractor is used and why.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lfhelpers.errors import ConfigError
from lfhelpers.models.backbones import CLASSIFIER
from lfhelpers.similarity.features.base import standardize_l2
from lfhelpers.similarity.features.cnn import Embedder

FINETUNED_NAMES = ("finetuned", "classifier")
NOT_CNN = ("haralick",)


def classifier_labels(model_path: str | os.PathLike[str]) -> list[str] | None:
    """The labels in ``<stem>.labels.json`` next to a ``.keras`` model (``None``: no file)."""
    path = Path(model_path)
    labels_file = path.with_name(path.stem + ".labels.json")
    if not labels_file.is_file():
        return None
    try:
        return [str(x) for x in json.loads(labels_file.read_text(encoding="utf-8"))["labels"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def classifier_fits(model_path: str | os.PathLike[str] | None,
                    labels: Sequence[str]) -> tuple[bool, str]:
    """Whether the classifier at ``model_path`` was trained on exactly these labels.

    Returns
    -------
    ok : bool
    reason : str
        A sentence for the reader (what is missing or different).
    """
    if not model_path or not Path(model_path).is_file():
        return False, f"no fine-tuned classifier at {str(model_path)!r}"
    name = Path(model_path).name
    trained = classifier_labels(model_path)
    if trained is None:
        return False, (f"{name} has no readable {Path(model_path).stem}.labels.json, so its "
                       "categories cannot be checked against the data")
    data = sorted(set(map(str, labels)))
    if sorted(set(trained)) == data:
        return True, f"{name} was trained on this data set's {len(data)} labels"
    extra, missing = sorted(set(trained) - set(data)), sorted(set(data) - set(trained))
    return False, (f"{name} was trained on other labels (its {len(trained)}: "
                   f"{', '.join(trained[:6])}{', ...' if len(trained) > 6 else ''}; "
                   f"not in the data: {len(extra)}, data labels it does not know: "
                   f"{len(missing)}, e.g. {', '.join(missing[:3]) or '-'})")


@dataclass
class ExtractorChoice:
    """Result of :func:`choose_extractor`.

    Attributes
    ----------
    backbones : list of str
        Extractors to compute (the classifier left out when it does not fit).
    main : str
        The extractor used for search and clustering.
    classifier_ok : bool
        The classifier fits the data: its categories may feed the matcher.
    reason : str
        Which extractor and why, for the top of the notebook.
    notes : list of str
    """

    backbones: list[str]
    main: str
    classifier_ok: bool
    reason: str
    notes: list[str] = field(default_factory=list)


def choose_extractor(backbones: Sequence[str], classifier_model: str | os.PathLike[str] | None,
                     labels: Sequence[str], main_features: str = "") -> ExtractorChoice:
    """Pick the search extractor: the first fitting CNN of ``backbones`` (or ``main_features``).

    Parameters
    ----------
    backbones : sequence of str
        Extractors asked for, in order of preference (``finetuned``, ``xception``, ...).
    classifier_model : path-like, optional
        Notebook 03's ``.keras`` model.
    labels : sequence of str
        The data set's labels.
    main_features : str
        An explicit choice; it must be among the usable extractors.

    Raises
    ------
    ConfigError
        When no CNN extractor is left, or ``main_features`` is not usable.
    """
    ok, why = classifier_fits(classifier_model, labels)
    wanted = [b for b in backbones if b]
    notes = []
    usable = list(wanted)
    if any(b.lower() in FINETUNED_NAMES for b in wanted) and not ok:
        usable = [b for b in wanted if b.lower() not in FINETUNED_NAMES]
        notes.append(f"fine-tuned classifier not used: {why}")
    cnn = [b for b in usable if b.lower() not in NOT_CNN]
    if main_features:
        if main_features not in usable:
            raise ConfigError(f"main_features={main_features!r} is not usable here "
                              f"({'; '.join(notes) or 'not among backbones'}); choose one of "
                              f"{usable}.")
        main = main_features
        reason = f"{main}: chosen by the main_features parameter"
    elif cnn:
        main = cnn[0]
        reason = (f"{main}: {why}" if main.lower() in FINETUNED_NAMES else
                  f"{main}: the first CNN extractor of {wanted} that fits the data")
    else:
        raise ConfigError(f"No CNN extractor to search with among {wanted} "
                          f"({'; '.join(notes) or 'add xception or mobilenet'}).")
    if notes and main.lower() not in FINETUNED_NAMES:
        reason += f" ({notes[0]})"
    return ExtractorChoice(usable, main, ok, reason, notes)


# --------------------------------------------------------------------------- several extractors

#: Names of :func:`feature_sets` that are not Keras backbones.
FINETUNED = "finetuned"
HARALICK = "haralick"


@dataclass
class FeatureSet:
    """One feature extractor's vectors for a list of photos (see :func:`feature_sets`).

    Attributes
    ----------
    name : str
    features : ndarray of shape (n, dim) or None
        One L2-normalised row per input photo (NaN rows for unreadable ones); ``None`` when
        the extractor was skipped.
    seconds : float
        Wall-clock time of the extraction.
    n_cached : int
        Rows read from the disk cache.
    note : str
        What was used (weights, image size), or why it was skipped.
    embedder : Embedder or None
        The fitted embedder (CNN sets), e.g. to embed new query photos.
    """

    name: str
    features: np.ndarray | None
    seconds: float = 0.0
    n_cached: int = 0
    note: str = ""
    embedder: Embedder | None = None


def feature_sets(
    names: Sequence[str] | str,
    files: Sequence[str | os.PathLike[str]],
    fit_rows: np.ndarray | None = None,
    *,
    image_size: int | None = None,
    weights: str = "auto",
    classifier_model: str | os.PathLike[str] = "",
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    progress: bool = True,
    pooling: str = "avg",
    flip: bool = False,
    engine: str = "keras",
    precision: str = "float32",
) -> dict[str, FeatureSet]:
    """Vectors of the same photos from several extractors, for comparing them.

    Parameters
    ----------
    names : sequence of str, or a comma-separated str
        Keras backbones (``xception``, ``mobilenet``, ...), ``finetuned`` (the classifier at
        ``classifier_model``; skipped with a note when that file is missing) and ``haralick``
        (the texture features of notebook 05, standardised on ``fit_rows``).
    files : sequence of path-like
        The photos.
    fit_rows : ndarray of bool, optional
        Rows whose statistics standardise hand-made features (the gallery); default all.
    image_size : int, optional
        Input side of the Keras backbones (default: each one's ImageNet size); the fine-tuned
        model uses its own.
    weights : str
        Weights of the Keras backbones (see :func:`resolve_weights`), e.g. ``"none"`` in tests.
    classifier_model : path-like
        The ``.keras`` file of notebook 03.
    cache_dir : path-like, optional
        Cache root: CNN vectors go to ``<cache_dir>/embeddings``, Xception trunk activations
        to ``<cache_dir>/trunk``, haralick rows to ``<cache_dir>/haralick``.
    batch_size : int
    progress : bool
    pooling : {"avg", "gem", "max"}
        Pooling of the ImageNet backbones (see :class:`Embedder`).
    flip : bool
        Average each photo with its mirror image (ImageNet backbones and the classifier).
    engine, precision : str
        What runs the Xception trunk for photos not in the trunk store (see
        :class:`~lfhelpers.similarity.features.cnn.Embedder`).

    Returns
    -------
    dict of name -> FeatureSet
        In the order of ``names``.
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    files = [os.fspath(f) for f in files]
    cache = Path(cache_dir) if cache_dir else None
    out: dict[str, FeatureSet] = {}
    for name in names:
        key = name.lower()
        if key == HARALICK:
            from lfhelpers.similarity.features.texture import HaralickFeatures

            extractor = HaralickFeatures(n_jobs=-1, progress=progress,
                                         cache_dir=cache / "haralick" if cache else None)
            result = extractor.extract(files)
            aligned = result.aligned(np.float64)
            fit = result.ok if fit_rows is None else result.ok & np.asarray(fit_rows, bool)
            values = np.full(aligned.shape, np.nan, np.float32)
            values[result.ok] = standardize_l2(aligned, fit)[result.ok]
            out[name] = FeatureSet(name, values, result.seconds, result.n_cached,
                                   f"{values.shape[1]} haralick features (notebook 05's "
                                   f"defaults: channels {extractor.channels}, distance "
                                   f"{extractor.distance}), standardised")
            continue
        if key in (FINETUNED, CLASSIFIER):
            if not classifier_model or not Path(classifier_model).is_file():
                out[name] = FeatureSet(name, None, note=f"skipped: no fine-tuned model at "
                                       f"{classifier_model!r} (train it with notebook 03)")
                continue
            embedder = Embedder(CLASSIFIER, model_path=classifier_model, batch_size=batch_size,
                                cache_dir=cache, progress=progress, flip=flip, engine=engine,
                                precision=precision).fit()
            note = f"fine-tuned Xception {Path(classifier_model).name}, {embedder.image_size_} px"
        else:
            embedder = Embedder(name, weights=weights, image_size=image_size,
                                batch_size=batch_size, progress=progress, pooling=pooling,
                                flip=flip, cache_dir=cache, engine=engine,
                                precision=precision).fit()
            w = embedder.weights_
            how = f"{embedder.image_size_} px, {pooling} pooling{', flip' if flip else ''}"
            note = (f"{name} ImageNet, {how}" if w is not None
                    else f"{name} random weights (weights='none'), {how}")
        result = embedder.extract(files)
        out[name] = FeatureSet(name, result.aligned(), result.seconds, result.n_cached, note,
                               embedder)
    return out


def feature_table(sets: Mapping[str, FeatureSet]) -> pd.DataFrame:
    """Summary of :func:`feature_sets`: dimension, time, photos per second, cache hits, note."""
    rows = []
    for name, fs in sets.items():
        n = 0 if fs.features is None else len(fs.features)
        rows.append({"features": name,
                     "dim": 0 if fs.features is None else fs.features.shape[1],
                     "seconds": round(fs.seconds, 1),
                     "photos_per_s": round(n / fs.seconds, 1) if fs.seconds > 0 else None,
                     "cached": fs.n_cached, "note": fs.note})
    return pd.DataFrame(rows).set_index("features")
